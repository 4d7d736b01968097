"""What the playground page sees of a call: transcripts, the agent's state, per-turn latency.

:class:`CallEvents` is two small inline stages wrapped around the agent's
:class:`~harken.conversation.ConversationEngine` (:func:`decorate` inserts them; the engine is
not modified):

* the **inlet**, just before the engine, sees the caller's audio go by (it keeps the media time
  and arrival time of the newest frame, to place the caller's true speech end on the clock),
  the caller's transcripts (interim and final) and the VAD's speech start/stop;
* the **outlet**, just after the engine, sees the clauses the engine hands to TTS and every
  system frame *after* the engine has handled it, so the engine's :class:`ReplyRecord` is up to
  date (first audio, what was heard).

On those frames, and on a 250 ms poll (the engine also changes state from its own timers and
reply task), it compares the engine's state and its latest replies with what the page was last
told and sends what changed, as JSON objects through ``send``:

``{"type": "call", ...}``
    the call started: id, rates.
``{"type": "state", "state": "listening"}``
    the engine's state (``starting``, ``listening``, ``user_speaking``, ``thinking``,
    ``agent_speaking``, ``ending``, ``ended``).
``{"type": "vad", "speaking": true}``
    the caller's voice activity.
``{"type": "caller", "turn": 3, "text": "...", "final": false}``
    a transcript of the caller (an interim one is replaced by the next of the same turn).
``{"type": "agent", "reply": 2, "kind": "turn", "text": "...", "heard": null, ...}``
    an agent reply: ``text`` is what was handed to TTS so far; once its fate is known,
    ``heard`` is what the caller heard (the rest was cut off) and ``done`` is true.
``{"type": "latency", "reply": 2, "voice_to_voice_ms": 612.3, ...}``
    the reply's timeline (``ReplyRecord.timeline_ms``), the engine's voice-to-voice figure (VAD
    stop to first audio sent), ``caller_end_to_audio_ms`` (the caller's last speech sample
    reaching the server to the first agent audio sent) and a breakdown by stage.
``{"type": "end", "reason": "..."}``
    the call ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from harken.conversation import ConversationEngine
from harken.conversation.record import ReplyRecord
from harken.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    StartFrame,
    SystemFrame,
    TextFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from harken.pipeline import Stage

if TYPE_CHECKING:
    from harken.transports.webrtc import WebRtcSession

__all__ = ["CallEvents", "decorate"]

Send = Callable[[dict[str, Any]], None]

_POLL_S = 0.25
_KEEP_REPLIES = 16


def _ms(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return round(max(0.0, b - a) * 1000, 1)


def breakdown(record: ReplyRecord, caller_end: float | None = None) -> dict[str, float | None]:
    """Where a turn's time went (ms), from the caller's last speech sample reaching the server
    (``caller_end``, same clock as the record) to the first agent audio sent: the VAD's
    silence before it calls the speech over, the turn detector's wait after that, the final
    transcript after the endpoint, the brain, TTS to first audio, and what is left until the
    first chunk was sent (the outbound track's next 20 ms slot)."""
    tts = record.tts_first_audio_ms
    out = _ms(record.t_first_text, record.t_first_audio)
    if out is not None and tts is not None:
        out = round(max(0.0, out - tts), 1)
    return {
        "silence": _ms(caller_end, record.t_speech_end),
        "endpoint": _ms(record.t_speech_end, record.t_endpoint),
        "stt_final": _ms(record.t_endpoint, record.t_trigger),
        "brain": _ms(record.t_trigger, record.t_first_text),
        "tts": tts,
        "send": out,
    }


class _Tap(Stage):
    """A pass-through stage that reports what it sees to its :class:`CallEvents`."""

    __slots__ = ("events",)

    def __init__(self, events: CallEvents, name: str) -> None:
        super().__init__(name)
        self.events = events


class _Inlet(_Tap):
    def on_down(self, frame: Frame) -> None:
        if frame.is_audio:
            ev = self.events
            ev.arrival_media = frame.timestamp + frame.duration  # type: ignore[attr-defined]
            ev.arrival_wall = ev.clock()
        elif isinstance(frame, TranscriptFrame):
            self.events.transcript(frame)
        self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame | UserStoppedSpeakingFrame):
            self.events.vad(frame)


class _Outlet(_Tap):
    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            self.events.sync()
        elif isinstance(frame, EndFrame):
            self.events.ended(frame.reason)
        self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        ev = self.events
        if isinstance(frame, StartFrame):
            ev.started(frame)
        elif isinstance(frame, CancelFrame):
            ev.ended(frame.reason)
        else:
            ev.sync()

    async def teardown(self) -> None:
        self.events.ended("")


class CallEvents:
    """The playground's view of one call (see the module docstring)."""

    def __init__(
        self,
        send: Send,
        engine: ConversationEngine | None,
        *,
        clock: Callable[[], float] = time.perf_counter,
        poll_s: float = _POLL_S,
    ) -> None:
        self.send = send
        self.engine = engine
        self.clock = clock
        self.poll_s = poll_s
        self.inlet = _Inlet(self, "playground-in")
        self.outlet = _Outlet(self, "playground-out")
        self.arrival_media = 0.0
        self.arrival_wall = 0.0
        self.closed = False
        self._turn = 1
        self._state = ""
        self._speech_ends: list[tuple[float, float]] = []  # (VAD stop seen, true end), clock
        self._replies: dict[int, tuple[int, ReplyRecord, tuple[Any, ...]]] = {}
        self._next_reply = 1
        self._timer: asyncio.TimerHandle | None = None

    # --- from the taps -----------------------------------------------------------------------

    def started(self, frame: StartFrame) -> None:
        self.send(
            {
                "type": "call",
                "call_id": frame.call_id,
                "rate_in": frame.sample_rate_in,
                "rate_out": frame.sample_rate_out,
                "engine": self.engine is not None,
            }
        )
        self._poll()

    def transcript(self, frame: TranscriptFrame) -> None:
        text = frame.text.strip()
        if text or frame.final:
            self.send({"type": "caller", "turn": self._turn, "text": text, "final": frame.final})
        if frame.final and text:
            self._turn += 1

    def vad(self, frame: UserStartedSpeakingFrame | UserStoppedSpeakingFrame) -> None:
        speaking = isinstance(frame, UserStartedSpeakingFrame)
        if not speaking:
            # the caller's last speech sample reached us this long before the newest frame
            end = self.arrival_wall - max(0.0, self.arrival_media - frame.timestamp)
            self._speech_ends.append((self.clock(), end))
            del self._speech_ends[:-8]
        self.send({"type": "vad", "speaking": speaking, "media_s": round(frame.timestamp, 3)})
        self.sync()

    def ended(self, reason: str) -> None:
        if self.closed:
            return
        self.sync()
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.send({"type": "state", "state": "ended"})
        self.send({"type": "end", "reason": reason})

    # --- comparing with the engine -----------------------------------------------------------

    def _poll(self) -> None:
        self._timer = None
        if self.closed:
            return
        self.sync()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.poll_s, self._poll)

    def sync(self) -> None:
        """Send whatever changed in the engine since the last look."""
        engine = self.engine
        if engine is None or self.closed:
            return
        state = engine.state.value
        if state != self._state:
            self._state = state
            self.send({"type": "state", "state": state})
        for record in engine.replies[-4:]:
            key = id(record)
            if key in self._replies or (record.reported and not record.spoken):
                continue  # known, or over with nothing said
            self._replies[key] = (self._next_reply, record, ())
            self._next_reply += 1
        for key, (rid, record, seen) in list(self._replies.items()):
            snap = (
                record.spoken,
                record.heard,
                record.interrupted,
                record.t_first_audio is not None,
                record.t_played is not None,
            )
            if snap != seen:
                self._replies[key] = (rid, record, snap)
                self._reply_changed(rid, record, seen)
        while len(self._replies) > _KEEP_REPLIES:
            del self._replies[next(iter(self._replies))]

    def _reply_changed(self, rid: int, record: ReplyRecord, seen: tuple[Any, ...]) -> None:
        done = record.heard is not None
        if record.spoken:
            self.send(
                {
                    "type": "agent",
                    "reply": rid,
                    "kind": record.kind,
                    "text": record.spoken,
                    "heard": record.heard,
                    "interrupted": record.interrupted,
                    "audible": record.t_first_audio is not None,
                    "done": done,
                }
            )
        had_audio = bool(seen) and seen[3]
        played = bool(seen) and seen[4]
        if record.t_first_audio is not None and (not had_audio or (done and not played)):
            self.send(self._latency(rid, record))

    def _latency(self, rid: int, record: ReplyRecord) -> dict[str, Any]:
        engine = self.engine
        t0 = engine.t0 if engine is not None else 0.0
        caller_end: float | None = None
        if record.t_speech_end is not None:
            for seen_at, end in reversed(self._speech_ends):
                if abs(seen_at - record.t_speech_end) < 0.05:
                    caller_end = end
                    break
        v2v = record.voice_to_voice_ms
        return {
            "type": "latency",
            "reply": rid,
            "kind": record.kind,
            "user_text": record.user_text,
            "voice_to_voice_ms": None if v2v is None else round(v2v, 1),
            "caller_end_to_audio_ms": _ms(caller_end, record.t_first_audio),
            "breakdown": breakdown(record, caller_end),
            "timeline": record.timeline_ms(t0),
        }


def decorate(stages: list[Stage], session: WebRtcSession) -> list[Stage]:
    """The agent's stages with the playground's taps around its conversation engine (or, for
    an agent without one, at its ends: the call and its end are still reported)."""
    engine = next((s for s in stages if isinstance(s, ConversationEngine)), None)
    events = CallEvents(session.send_event, engine)
    if engine is None:
        return [events.inlet, *stages, events.outlet]
    i = stages.index(engine)
    return [*stages[:i], events.inlet, engine, events.outlet, *stages[i + 1 :]]
