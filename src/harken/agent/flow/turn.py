"""What a flow session answers: sentences to speak and actions for the engine to execute."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["FlowAction", "FlowTurn", "HangupRequest", "ToolRequest", "TransferRequest"]


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """Call tool ``name`` with ``args``; answer with ``FlowSession.on_tool_result(call_id, ...)``.

    Until the result arrives the session is pending: caller text and keys are answered with the
    flow's ``pending`` line ("One moment, please.") and otherwise ignored.
    """

    call_id: str
    name: str
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HangupRequest:
    """End the call once the turn's ``say`` has been spoken."""

    reason: str


@dataclass(frozen=True, slots=True)
class TransferRequest:
    """Transfer the call to ``target`` once the turn's ``say`` has been spoken."""

    target: str
    reason: str


FlowAction = ToolRequest | HangupRequest | TransferRequest


@dataclass(frozen=True, slots=True)
class FlowTurn:
    """One answer of the flow.

    ``say`` holds the sentences to speak, in order. ``actions`` are executed after them (a tool
    request may run while they are spoken). ``node`` is the node the session is in afterwards;
    ``intent`` the intent recognised in the input (None when none was); ``matched_by`` how the
    input was understood: ``"keywords"``, ``"pattern"``, ``"fuzzy"``, ``"slot"`` (it filled or
    tried to fill a slot, or answered a yes/no question) or None.
    """

    say: tuple[str, ...] = ()
    actions: tuple[FlowAction, ...] = ()
    node: str = ""
    intent: str | None = None
    matched_by: str | None = None

    @property
    def text(self) -> str:
        """The sentences joined by spaces (for logs and tests)."""
        return " ".join(self.say)
