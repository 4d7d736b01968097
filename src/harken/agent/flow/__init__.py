"""The built-in offline flow agent: a scripted voice agent that runs with no LLM.

A flow (YAML; see ``docs/flow-agent.md``) is compiled once per process into a
:class:`FlowAgent`; each call gets a :class:`FlowSession`, which turns caller transcripts, keypad
digits, silences and tool results into :class:`FlowTurn` answers: sentences to speak and actions
(:class:`ToolRequest`, :class:`HangupRequest`, :class:`TransferRequest`) for the engine. Sessions
are synchronous and free of I/O. ``FlowAgent.builtin("restaurant")`` is the shipped demo, a
booking line whose tools live in :mod:`harken.agent.flow.demo_tools`.
"""

from harken.agent.flow.agent import FlowAgent, builtin_flows
from harken.agent.flow.session import FlowSession
from harken.agent.flow.turn import (
    FlowAction,
    FlowTurn,
    HangupRequest,
    ToolRequest,
    TransferRequest,
)

__all__ = [
    "FlowAction",
    "FlowAgent",
    "FlowSession",
    "FlowTurn",
    "HangupRequest",
    "ToolRequest",
    "TransferRequest",
    "builtin_flows",
]
