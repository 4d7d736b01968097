"""The outbound end of a carrier call: encode, pace, mark, and know what the caller heard.

:class:`CarrierOutput` is the last stage of a carrier call's pipeline. It

* encodes agent audio (PCM16 at the carrier's output rate) into the wire encoding and hands it
  to a :class:`~harken.transports.pacer.Pacer`, which releases it in real time with a bounded lead;
* groups audio into utterances (``TTSStartedFrame`` … ``TTSStoppedFrame``; audio outside them
  opens an implicit utterance), places intermediate marks every ``mark_interval`` and a final
  mark, and resolves each utterance through a
  :class:`~harken.transports.playback.PlaybackTracker` (mark echo, drained, silence tail, or the
  deadman), broadcasting ``AgentStartedSpeakingFrame`` / ``AgentStoppedSpeakingFrame``;
* on an interruption stops the pacer, sends ``clear`` and reports how much was heard; on
  ``PausePlaybackFrame`` (caller speech that may be a barge-in) holds the audio without
  discarding it (the far end plays out at most the pacer's lead) and continues on
  ``ResumePlaybackFrame`` (it was a backchannel), with the deadman moved by the pause;
* holds ``EndFrame``, ``HangupFrame`` and ``TransferFrame`` until the audio before them has
  played (or the deadman fired), then ends the call, hangs up or transfers.

One process-wide :class:`PacerClock` drives every call's pacer from a single timer, so an idle
call costs no timer and a busy one no task.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from harken.errors import AudioError
from harken.frames import (
    AgentStartedSpeakingFrame,
    AudioFrame,
    CancelFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InterruptionFrame,
    MarkFrame,
    PausePlaybackFrame,
    ResumePlaybackFrame,
    SystemFrame,
    TransferFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.protocols.base import CarrierCodec
from harken.transports.output_base import PlaybackOutput
from harken.transports.pacer import AUDIO, Pacer, Release
from harken.transports.playback import PlaybackTracker
from harken.transports.wire_audio import BYTES_PER_SAMPLE, SILENCE_BYTE, encoder

_IMPLICIT_UTTERANCE_BASE = 1 << 40


class ClockClient(Protocol):
    def service(self, now: float) -> bool: ...


class Link(Protocol):
    """The socket side of a carrier call, as the transport code sees it."""

    def send_text(self, text: str) -> None: ...

    def send_bytes(self, data: bytes) -> None: ...

    def close(self, code: int = 1000, reason: str = "") -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


@runtime_checkable
class BatchLink(Link, Protocol):
    """A link that can also send several text messages in one write (one system call for an
    audio chunk and the mark right after it); :class:`CarrierOutput` uses it where offered."""

    def send_texts(self, texts: list[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class PlaybackSettings:
    lead_s: float = 0.08
    mark_interval_s: float = 0.1
    deadman_margin_s: float = 1.0
    silence_tail_s: float = 0.2
    strategy: str = ""  # "" = the carrier's natural strategy
    live_max_s: float = 0.06  # live audio kept after a stall (see CarrierOutput._trim_live)


class PacerClock:
    """One timer for every pacer of this event loop (ticks only while some call has work)."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.ticks = 0
        self._active: set[ClockClient] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._in_tick = False

    def want(self, out: ClockClient) -> None:
        self._active.add(out)
        if self._handle is None and not self._in_tick:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def forget(self, out: ClockClient) -> None:
        self._active.discard(out)

    def _tick(self) -> None:
        self.ticks += 1
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._in_tick = True  # services re-register through want(): one re-arm, below
        try:
            for out in list(self._active):
                if not out.service(now):
                    self._active.discard(out)
        finally:
            self._in_tick = False
        self._handle = loop.call_later(self.interval, self._tick) if self._active else None


_CLOCKS: dict[asyncio.AbstractEventLoop, PacerClock] = {}


def pacer_clock() -> PacerClock:
    loop = asyncio.get_running_loop()
    clock = _CLOCKS.get(loop)
    if clock is None:
        if len(_CLOCKS) > 8:  # loops of finished tests: forget the closed ones
            for old in [lp for lp in _CLOCKS if lp.is_closed()]:
                del _CLOCKS[old]
        clock = _CLOCKS[loop] = PacerClock()
    return clock


class CarrierOutput(PlaybackOutput):
    """Last stage of a carrier call (see the module docstring)."""

    def __init__(self, codec: CarrierCodec, link: Link, settings: PlaybackSettings) -> None:
        super().__init__("carrier-out")
        self.codec = codec
        self.link = link
        self.settings = settings
        self.encode = encoder(codec.output_encoding)
        self.bytes_per_s = codec.output_sample_rate * BYTES_PER_SAMPLE[codec.output_encoding]
        chunk = self.bytes_per_s // 50
        self.silence_chunk = SILENCE_BYTE[codec.output_encoding] * chunk
        self.pacer = Pacer(chunk, self.bytes_per_s, self.silence_chunk, settings.lead_s)
        strategy = settings.strategy or ("mark" if codec.supports_marks else "silence")
        self.tracker = PlaybackTracker(strategy, settings.deadman_margin_s)
        self.use_marks = codec.supports_marks and strategy == "mark"
        # a whole number of chunks, so intermediate marks never force silence padding
        self.mark_every = max(1, round(settings.mark_interval_s * 50)) * chunk
        #: live audio allowed between the caller and the newest sample (queued here + at the
        #: far end) before the oldest is dropped: in step a relay holds one or two frames; the
        #: third is slack for arrival jitter
        self.live_max_s = settings.live_max_s
        self.on_transfer: Callable[[str], None] | None = None
        #: called with each audio chunk (wire encoding) as it leaves, and the loop time: what
        #: the caller hears, give or take the far end's lead (call recordings)
        self.on_sent: Callable[[bytes, float], None] | None = None
        self._uid: int | None = None  # utterance receiving audio now
        self._live = False  # that utterance is produced in real time (see TTSStartedFrame.live)
        self._auto_uid = _IMPLICIT_UTTERANCE_BASE
        self._since_mark = 0
        self._mark_seq = 0
        self._announce: list[tuple[float, int]] = []  # (offset, uid) not yet audible
        self._clock: PacerClock | None = None
        self._paused_at: float | None = None
        self._send_texts: Callable[[list[str]], None] | None = (
            link.send_texts if isinstance(link, BatchLink) else None
        )
        #: the loop's clock, bound on first use (see _bind_now)
        self._now: Callable[[], float] = self._bind_now

    def _bind_now(self) -> float:
        """Bind :attr:`_now` to the running loop's clock and read it. This runs for every frame:
        ``asyncio.get_running_loop()`` costs more than the clock itself, and a standard loop's
        ``time()`` is ``time.monotonic()`` behind a Python call, so that is called directly."""
        loop = asyncio.get_running_loop()
        plain = type(loop).time is asyncio.BaseEventLoop.time and "time" not in vars(loop)
        self._now = time.monotonic if plain else loop.time
        return self._now()

    # --- downstream --------------------------------------------------------------------------

    def on_down(self, frame: Frame) -> None:
        if frame.is_audio:
            self._audio(frame)  # type: ignore[arg-type]
        elif isinstance(frame, TTSStartedFrame):
            self._close_utterance()
            self._open_utterance(frame.utterance_id)
            self._live = frame.live
        elif isinstance(frame, TTSStoppedFrame):
            if self._uid == frame.utterance_id:
                self._close_utterance()
        elif isinstance(frame, MarkFrame):
            if not self.remote_gone and self.codec.supports_marks:
                self.pacer.mark(frame.name)
                self._pump()
        elif isinstance(frame, EndFrame):
            self._close_utterance()
            self.after_playback(lambda: self.push_down(frame))
        elif isinstance(frame, HangupFrame):
            self._close_utterance()
            self.after_playback(self._hang_up)
        elif isinstance(frame, TransferFrame):
            self._close_utterance()
            target = frame.target
            self.after_playback(lambda: self._transfer(target))
        else:
            self.push_down(frame)

    def _audio(self, frame: AudioFrame) -> None:
        if self.remote_gone:
            return
        if frame.sample_rate != self.codec.output_sample_rate:
            raise AudioError(
                f"agent audio at {frame.sample_rate} Hz; the carrier plays "
                f"{self.codec.output_sample_rate} Hz (resample before the transport)"
            )
        if self._uid is None:
            self._auto_uid += 1
            self._open_utterance(self._auto_uid)
        data = self.encode(frame.pcm)
        pacer = self.pacer
        now = self._now()
        since = self._since_mark + len(data)
        if (
            (since <= self.mark_every or not self.use_marks)
            and not self._announce
            and self.on_sent is None
            and pacer.pass_through(data, now, self.live_max_s if self._live else None)
        ):
            # in step: straight onto the wire, no queue (Pacer.pass_through)
            message = self.codec.media(data)
            if since == self.mark_every and self.use_marks:  # and the mark after it (1 in 5)
                self._since_mark = 0
                uid, name = self._mark_name()
                self.tracker.note_mark(uid, name, pacer.pushed_bytes / self.bytes_per_s)
                self._send_many(message, self.codec.mark(name))
            else:
                if self.use_marks:
                    self._since_mark = since
                if isinstance(message, str):
                    self.link.send_text(message)
                else:
                    self.link.send_bytes(message)
            if self._waiters or self.tracker.finished:
                self._want_clock()
            return
        if not self.use_marks:
            pacer.push(data)
        elif since < self.mark_every:  # no mark falls inside (4 frames in 5)
            pacer.push(data)
            self._since_mark = since
        elif since == self.mark_every:  # a mark right after this frame (the 5th)
            pacer.push(data)
            self._since_mark = self.mark_every
            self._mark_interval()
        else:
            self._push_marked(data)
        if self._live:
            # Live audio: keep at most live_max_s between the caller and the newest sample.
            # In step, a frame arrives, leaves and plays within a frame or two. After a stall a
            # burst arrives at once; playing all of it would put the stall's delay into every
            # later sample, so the oldest audio beyond the budget is dropped (and counted).
            pacer.trim_live(now, self.live_max_s)
        self._pump(now)

    def _push_marked(self, data: bytes) -> None:
        """Queue ``data`` with an intermediate mark every ``mark_interval`` of audio (also
        inside one long frame)."""
        view = memoryview(data)
        while view:
            room = self.mark_every - self._since_mark
            piece, view = view[:room], view[room:]
            self.pacer.push(piece)
            self._since_mark += len(piece)
            if self._since_mark >= self.mark_every:
                self._mark_interval()

    def _mark_interval(self) -> None:
        """An intermediate mark after the audio pushed so far (one mark interval of it)."""
        self._since_mark = 0
        uid, name = self._mark_name()
        self.tracker.note_mark(uid, name, self.pacer.mark(name))

    def _mark_name(self) -> tuple[int, str]:
        """The utterance receiving audio and the name of its next intermediate mark."""
        uid = self._uid
        assert uid is not None
        self._mark_seq += 1
        return uid, f"h{uid}.{self._mark_seq}"

    def _trim_live(self) -> None:
        """Live audio: keep at most ``live_max_s`` between the caller and the newest sample."""
        self.pacer.trim_live(self._now(), self.live_max_s)

    def _open_utterance(self, uid: int) -> None:
        self._uid = uid
        self._since_mark = 0
        self.pacer.flush()
        offset = self.pacer.pushed_bytes / self.bytes_per_s
        self.tracker.begin(uid, offset)
        self._announce.append((offset, uid))

    def _close_utterance(self) -> None:
        uid, self._uid = self._uid, None
        self._live = False
        if uid is None or self.remote_gone:
            return
        now = self._now()
        final: str | None = None
        if self.use_marks:
            final = f"h{uid}.end"
            end = self.pacer.mark(final)
        else:
            self.pacer.flush()
            if self.tracker.strategy == "silence":
                tail = int(self.settings.silence_tail_s * 50)
                for _ in range(tail):
                    self.pacer.push(self.silence_chunk)
            end = self.pacer.pushed_bytes / self.bytes_per_s
        self.tracker.finish(uid, end, self.pacer.remaining_s(now), now, final)
        self._pump()

    # --- sending -----------------------------------------------------------------------------

    def _pump(self, now: float | None = None) -> None:
        if now is None:
            now = self._now()
        pacer = self.pacer
        released = pacer.release(now)
        if released:
            if len(released) == 1 and not self._announce and self.on_sent is None:
                kind, data, name, _ = released[0]  # in step: one chunk (or one mark) a frame
                codec = self.codec
                message = codec.media(data) if kind == AUDIO else codec.mark(name)
                if isinstance(message, str):
                    self.link.send_text(message)
                else:
                    self.link.send_bytes(message)
            else:
                self._send(released, now)
        # the clock is needed to release held audio, or to resolve a finished utterance
        # (_needs_clock, inline: this runs for every frame)
        if pacer.holding or self._waiters or self.tracker.finished:
            self._want_clock()

    def _send(self, released: list[Release], now: float) -> None:
        """Put released audio and marks on the wire, in order; consecutive text messages go
        in one write where the link can (an audio chunk and its mark: one system call)."""
        codec, link = self.codec, self.link
        texts: list[str] = []
        for kind, data, name, offset_s in released:
            if kind == AUDIO:
                if self.on_sent is not None:
                    self.on_sent(data, now)
                message = codec.media(data)
                if isinstance(message, str):
                    texts.append(message)
                else:
                    if texts:
                        self._send_all(texts)
                        texts = []
                    link.send_bytes(message)
                announce = self._announce
                if announce and announce[0][0] <= offset_s + 1e-9:
                    if texts:  # on the wire before any stage hears of it
                        self._send_all(texts)
                        texts = []
                    while announce and announce[0][0] <= offset_s + 1e-9:
                        _, uid = announce.pop(0)
                        self._broadcast(AgentStartedSpeakingFrame(utterance_id=uid))
            else:
                texts.append(codec.mark(name))
        if texts:
            self._send_all(texts)

    def _send_many(self, message: str | bytes, mark: str) -> None:
        """An audio message and the mark right after it."""
        if isinstance(message, str):
            self._send_all([message, mark])
        else:
            self.link.send_bytes(message)
            self.link.send_text(mark)

    def _send_all(self, texts: list[str]) -> None:
        if len(texts) == 1:
            self.link.send_text(texts[0])
        elif self._send_texts is not None:
            self._send_texts(texts)
        else:
            for text in texts:
                self.link.send_text(text)

    def _want_clock(self) -> None:
        if self._clock is None:
            self._clock = pacer_clock()
        self._clock.want(self)

    def service(self, now: float) -> bool:
        """Pacer-clock tick: send what is due, resolve by the clock; False when idle."""
        if self.remote_gone:
            self._run_waiters()
            return False
        self._pump(now)
        if self._paused_at is not None:
            return self._needs_clock()  # held: no clock resolution, no deadman
        for completion in self.tracker.on_clock(self.pacer.played_offset(now), now):
            self._report(completion)
        self._run_waiters()
        return self._needs_clock()

    def _needs_clock(self) -> bool:
        """Ticks are needed to release held audio, or to resolve a finished utterance by the
        clock (drained/silence, or its deadman); an open utterance in step needs none."""
        return self.pacer.holding or bool(self._waiters) or self.tracker.finished > 0

    # --- far-end signals and barge-in --------------------------------------------------------

    def on_mark(self, name: str, cleared: bool) -> None:
        completion = self.tracker.on_mark(name, cleared)
        if completion is not None:
            self._report(completion)
        self._run_waiters()

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, InterruptionFrame):
            self._paused_at = None
            self._interrupt()
        elif isinstance(frame, PausePlaybackFrame):
            if self._paused_at is None and not self.remote_gone:
                self._paused_at = self._now()
                self.pacer.paused = True
        elif isinstance(frame, ResumePlaybackFrame):
            self._resume()
        elif isinstance(frame, CancelFrame):
            self.remote_gone = True
            self._waiters.clear()
            if self._clock is not None:
                self._clock.forget(self)

    def _resume(self) -> None:
        paused_at, self._paused_at = self._paused_at, None
        if paused_at is None:
            return
        now = self._now()
        self.pacer.paused = False
        self.tracker.postpone(now - paused_at)
        self._pump(now)

    def _interrupt(self) -> None:
        now = self._now()
        played = self.pacer.played_offset(now)
        had_audio = self.pacer.remaining_s(now) > 0 or self.tracker.active
        self.pacer.clear(now)
        self._uid = None
        self._announce.clear()
        completions = self.tracker.interrupt(played)
        if had_audio and not self.remote_gone:
            self.link.send_text(self.codec.clear())
        loop = asyncio.get_running_loop()
        for completion in completions:  # after the interruption has reached every stage
            loop.call_soon(self._report, completion)
        self._run_waiters()

    def remote_closed(self) -> None:
        """The carrier's stream is gone: nothing more can play; release whoever waits."""
        if self.remote_gone:
            return
        self.remote_gone = True
        now = self._now()
        played = self.pacer.played_offset(now)
        self.pacer.clear(now)
        self._uid = None
        for completion in self.tracker.interrupt(played, reason="remote_closed"):
            self._report(completion)
        self._run_waiters()

    # --- completion ---------------------------------------------------------------------------

    def after_playback(self, callback: Callable[[], None]) -> None:
        super().after_playback(callback)
        if self._waiters:
            self._want_clock()

    def _settled(self) -> bool:
        return self.pacer.idle and not self.tracker.active

    def _hang_up(self) -> None:
        if self.on_hangup is not None:
            self.on_hangup()

    def _transfer(self, target: str) -> None:
        if self.on_transfer is not None:
            self.on_transfer(target)
        else:
            self._hang_up()
