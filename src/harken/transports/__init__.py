"""Asyncio-facing adapters between the wire and a call's pipeline (pacing, playback truth)."""
