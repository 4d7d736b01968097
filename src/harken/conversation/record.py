"""What the engine remembers of each reply, and the hooks through which it reports calls.

A :class:`ReplyRecord` holds one agent reply's text (spoken to TTS and heard by the caller),
its tools, and its **timeline** in ``time.perf_counter`` seconds: the caller's speech end (the
VAD's stop), the endpoint decision and the rule that fired, the final transcript, the brain's
first words (an LLM's first token), the first clause handed to TTS, the first agent audio on
the wire, playback confirmed (and by which strategy), and for a barge-in the caller's onset and
the moment agent audio stopped. :meth:`ReplyRecord.timeline_ms` turns it into milliseconds from
the call's start for call records and metrics.

:class:`EngineHooks` is how the outside world (call records, Prometheus) learns what happened
without the engine importing either: ``call_started``, ``reply_done`` (once per reply, when its
fate is known), ``event`` (barge-in, backchannel, hang-up, transfer, error) and ``call_ended``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from harken.conversation.tools import ToolOutcome

__all__ = ["NO_HOOKS", "EngineHooks", "ReplyRecord"]


@dataclass(slots=True)
class ReplyRecord:
    """One agent reply: why it started, its timeline (``time.perf_counter`` s) and its text."""

    kind: str  # greeting | turn | dtmf | idle | limit
    user_text: str = ""
    t_trigger: float = 0.0  # final transcript / digits / timer
    t_first_text: float | None = None  # first clause handed to TTS
    t_first_audio: float | None = None  # first audio on the wire
    spoken: str = ""
    heard: str | None = None
    interrupted: bool = False
    utterance_id: int | None = None
    tools: list[ToolOutcome] = field(default_factory=list)
    ending: str | None = None  # hangup / transfer requested after it
    t_speech_end: float | None = None  # the caller's speech stopped (VAD)
    t_endpoint: float | None = None  # the turn detector ended the turn
    endpoint_rule: str = ""  # model | text | silence
    t_first_piece: float | None = None  # the brain's first words (an LLM's first token)
    tts_first_audio_ms: float | None = None  # first clause -> first synthesised audio
    t_played: float | None = None  # playback resolved (heard to the end, or cut)
    playback_strategy: str = ""  # mark | drained | silence | deadman | interrupted
    t_bargein_onset: float | None = None  # the caller started speaking over this reply
    t_bargein_stopped: float | None = None  # agent audio stopped (held or cleared)
    reported: bool = False

    @property
    def engine_ms(self) -> float | None:
        """Final transcript (or trigger) to the first clause handed to TTS."""
        if self.t_first_text is None:
            return None
        return (self.t_first_text - self.t_trigger) * 1000

    @property
    def voice_to_voice_ms(self) -> float | None:
        """The caller's speech end to the reply's first audio on the wire."""
        if self.t_speech_end is None or self.t_first_audio is None:
            return None
        return (self.t_first_audio - self.t_speech_end) * 1000

    def timeline_ms(self, t0: float) -> dict[str, Any]:
        """Every known instant in ms since ``t0`` (the call's start), plus durations."""

        def at(t: float | None) -> float | None:
            return None if t is None else round((t - t0) * 1000, 1)

        bargein = None
        if self.t_bargein_onset is not None and self.t_bargein_stopped is not None:
            bargein = round((self.t_bargein_stopped - self.t_bargein_onset) * 1000, 1)
        return {
            "speech_end": at(self.t_speech_end),
            "endpoint": at(self.t_endpoint),
            "endpoint_rule": self.endpoint_rule or None,
            "stt_final": at(self.t_trigger) if self.kind == "turn" else None,
            "trigger": at(self.t_trigger),
            "llm_first_token": at(self.t_first_piece),
            "tts_request": at(self.t_first_text),
            "tts_first_audio_ms": self.tts_first_audio_ms,
            "first_audio_out": at(self.t_first_audio),
            "playback_done": at(self.t_played),
            "playback_strategy": self.playback_strategy or None,
            "bargein_onset": at(self.t_bargein_onset),
            "bargein_stop_ms": bargein,
            "engine_ms": None if self.engine_ms is None else round(self.engine_ms, 2),
            "voice_to_voice_ms": (
                None if self.voice_to_voice_ms is None else round(self.voice_to_voice_ms, 1)
            ),
        }


class EngineHooks(Protocol):
    """Observers of one call's conversation (records, metrics). Called on the event loop;
    they must not block."""

    def call_started(self, t0: float, metadata: dict[str, Any]) -> None: ...

    def reply_done(self, record: ReplyRecord) -> None: ...

    def event(self, kind: str, data: dict[str, Any]) -> None: ...

    def call_ended(self, reason: str) -> None: ...


class _NoHooks:
    def call_started(self, t0: float, metadata: dict[str, Any]) -> None:
        pass

    def reply_done(self, record: ReplyRecord) -> None:
        pass

    def event(self, kind: str, data: dict[str, Any]) -> None:
        pass

    def call_ended(self, reason: str) -> None:
        pass


NO_HOOKS: Final[EngineHooks] = _NoHooks()
