"""Agents: the stages between a call's transport input and output."""
