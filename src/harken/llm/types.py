"""What :meth:`harken.llm.LLMClient.stream` yields, and the client's counters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = ["Finish", "LLMEvent", "LLMStats", "TextDelta", "ToolCall"]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the assistant's text, as the server streamed it (never empty)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete tool call: its fragments assembled and ``arguments`` parsed from JSON (an
    empty argument string is ``{}``). Yielded when the response's ``finish_reason`` arrives, or
    at the end of the stream, in the order of the server's tool-call indices."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finish:
    """The last event of a response.

    ``reason`` is the server's ``finish_reason`` (``"stop"``, ``"tool_calls"``, ``"length"``,
    ...; ``"stop"`` if a server ended the stream properly without one). ``usage`` is the usage
    object when the server sent one. ``ttft_s`` is the time from the call to ``stream()`` to the
    first non-empty content or tool-call delta (``None`` if there was none); it includes any
    retries, because that is the delay the caller waited. ``total_s`` runs to the end of the
    stream."""

    reason: str
    usage: dict[str, Any] | None
    ttft_s: float | None
    total_s: float


LLMEvent: TypeAlias = TextDelta | ToolCall | Finish


@dataclass(slots=True)
class LLMStats:
    """Counters of one client. ``requests`` counts HTTP attempts (a retried call counts each),
    ``retries`` the attempts after the first, ``errors`` the ``stream()`` calls that raised an
    :class:`~harken.errors.LLMError`, ``cancelled`` those whose consumer cancelled or closed them
    before the end; ``last_ttft_s`` is the time to first token of the latest call that had one."""

    requests: int = 0
    retries: int = 0
    errors: int = 0
    cancelled: int = 0
    completed: int = 0
    last_ttft_s: float | None = None
