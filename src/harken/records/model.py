"""What a call record holds: plain frozen dataclasses, no I/O.

A call is written as a stream of records, in order:

* one :class:`CallInfo` when the call starts (who, which carrier, which agent);
* a :class:`TurnRecord` per agent reply (the greeting, each answered caller turn, keypad input,
  idle prompts, the time-limit line) with what the caller said, what the agent said and what the
  caller actually heard, and the reply's timings;
* :class:`CallEvent` s for things that are not replies (barge-ins, backchannels, the playback
  deadman, hang-up, transfer, errors);
* one :class:`CallEnd` when it ends.

Times are epoch seconds (``time.time()``) except ``TurnRecord.timings``, which are milliseconds:
offsets from the call's start (``speech_end``, ``endpoint``, ``stt_final``, ``llm_first_token``,
``tts_first_audio``, ``first_audio_out``, ``playback_done``, ``bargein_onset``,
``bargein_stopped``) or durations (``endpoint_rule``, ``playback_strategy``), ``None`` where a
stage did not run. Records are values: the stores copy what they need, so a caller may build one
and forget it.

Reading back gives :class:`CallSummary` (one row of ``harken calls list``) and
:class:`CallDetail` (everything about one call, turns and events in order).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "TIMING_KEYS",
    "TURN_KINDS",
    "CallDetail",
    "CallEnd",
    "CallEvent",
    "CallInfo",
    "CallSummary",
    "Record",
    "TurnKind",
    "TurnRecord",
    "to_jsonable",
]

TurnKind = Literal["greeting", "turn", "dtmf", "idle", "limit"]
TURN_KINDS: tuple[str, ...] = ("greeting", "turn", "dtmf", "idle", "limit")

#: the timing keys in pipeline order (``harken calls show`` prints them in this order, then any
#: others alphabetically)
TIMING_KEYS: tuple[str, ...] = (
    "speech_end",
    "endpoint",
    "endpoint_rule",
    "stt_final",
    "llm_first_token",
    "tts_first_audio",
    "first_audio_out",
    "playback_done",
    "playback_strategy",
    "bargein_onset",
    "bargein_stopped",
)


@dataclass(frozen=True, slots=True)
class CallInfo:
    """A call as it starts. ``started_at`` is epoch seconds; ``metadata`` is free-form JSON."""

    call_id: str
    carrier: str
    started_at: float
    from_number: str = ""
    to_number: str = ""
    agent: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """One agent reply. ``index`` orders a call's turns; writing the same index again replaces it.

    ``assistant_spoken`` is what the agent generated for playback, ``assistant_heard`` what the
    caller actually heard (``None`` when unknown, e.g. the reply is still playing); they differ
    when the caller barged in (``interrupted``). ``tools`` holds the tool calls made for the reply
    (name, arguments, result) as JSON objects. ``at`` is when the reply was triggered (the
    final transcript, the digits, the timer), epoch seconds.
    """

    call_id: str
    index: int
    kind: TurnKind
    user_text: str = ""
    assistant_spoken: str = ""
    assistant_heard: str | None = None
    interrupted: bool = False
    timings: dict[str, float | None] = field(default_factory=dict)
    tools: list[dict[str, Any]] = field(default_factory=list)
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Something that happened in a call at ``at`` (epoch s) that is not a reply.

    ``kind`` is e.g. ``barge_in``, ``backchannel``, ``deadman``, ``hangup``, ``transfer``,
    ``error``; ``data`` is free-form JSON.
    """

    call_id: str
    at: float
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CallEnd:
    """How a call ended; ``outcome`` is e.g. ``hangup``, ``caller_hangup``, ``transfer``."""

    call_id: str
    ended_at: float
    outcome: str
    duration_s: float


Record = CallInfo | TurnRecord | CallEvent | CallEnd


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One line of the call list. ``ended_at``/``outcome``/``duration_s`` are ``None`` while the
    call has no end record (still running, or its process died)."""

    call_id: str
    carrier: str
    started_at: float
    from_number: str
    to_number: str
    agent: str
    turns: int
    ended_at: float | None = None
    outcome: str | None = None
    duration_s: float | None = None


@dataclass(frozen=True, slots=True)
class CallDetail:
    """Everything recorded about one call: turns by index, events by time (then write order)."""

    info: CallInfo
    turns: list[TurnRecord]
    events: list[CallEvent]
    end: CallEnd | None


def to_jsonable(
    obj: CallInfo | TurnRecord | CallEvent | CallEnd | CallSummary | CallDetail,
) -> dict[str, Any]:
    """The record as a plain dict (nested records included), ready for ``orjson.dumps``."""
    return dataclasses.asdict(obj)
