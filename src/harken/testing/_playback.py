"""The carrier's playback buffer, as a model (test and bench tools only).

Carrier-neutral: Twilio's ``media``/``mark``/``clear`` (and Telnyx's, Plivo's ``playAudio``/
``checkpoint``/``clearAudio``) all drive the same thing. Audio is queued and played in real
time from its arrival when the buffer is idle; a mark is released once the audio queued before
it has played (at once if none); a clear drops the queued audio and releases every pending mark
at once. Playback is computed, not clocked: a span is scheduled when its audio arrives.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class ReceivedMedia:
    """One audio message from the server: arrival time, size, offset in the received stream."""

    time: float
    nbytes: int
    first_sample: int


@dataclass(slots=True)
class PlayedSpan:
    """Samples ``[first_sample, first_sample + n_samples)`` of the received stream play from
    ``start`` at ``rate``. ``cut``: shortened (possibly to nothing) by a clear. Spans are
    scheduled on arrival, so one whose ``start`` lies ahead has not played yet."""

    start: float
    first_sample: int
    n_samples: int
    rate: int = 8000
    cut: bool = False

    @property
    def end(self) -> float:
        return self.start + self.n_samples / self.rate


@dataclass(slots=True)
class MarkEcho:
    """A mark: when it arrived, when its audio finished (or the clear came), when the echo went
    out (set by the sender), and whether a clear released it."""

    name: str
    received: float
    due: float
    cleared: bool = False
    sent: float = 0.0


class PlaybackBuffer:
    """Queue of received audio (one byte per sample) and the marks waiting on it.

    ``release`` is called, in order, with each mark once it is due; ``now`` values and the mark
    timer use the running loop's clock."""

    def __init__(
        self, release: Callable[[MarkEcho], None], rate: int = 8000, max_buffer_s: float = 600.0
    ) -> None:
        self.rate = rate
        self.max_buffer_s = max_buffer_s
        self.received: list[ReceivedMedia] = []
        self.played: list[PlayedSpan] = []
        self.clears: list[float] = []
        self.audio = bytearray()
        self.play_end = 0.0  # when the queued audio will have finished playing
        self._release = release
        self._pending: deque[MarkEcho] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    def media(self, audio: bytes, now: float) -> bool:
        """Queue audio; False when it was discarded because the buffer is over its limit."""
        first = len(self.audio)
        self.audio += audio
        self.received.append(ReceivedMedia(now, len(audio), first))
        start = max(now, self.play_end)
        if start - now > self.max_buffer_s:
            return False
        self.played.append(PlayedSpan(start, first, len(audio), self.rate))
        self.play_end = start + len(audio) / self.rate
        return True

    def mark(self, name: str, now: float) -> None:
        self.flush_due(now)
        if self.play_end <= now and not self._pending:
            self._release(MarkEcho(name, now, now))
            return
        self._pending.append(MarkEcho(name, now, self.play_end))
        self._arm()

    def clear(self, now: float) -> None:
        self.flush_due(now)  # marks whose audio had already played are not "cleared"
        self.clears.append(now)
        for span in reversed(self.played):
            if span.end <= now:
                break
            span.n_samples = max(0, int((now - span.start) * self.rate + 1e-6))
            span.cut = True
        self.play_end = min(self.play_end, now)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending:
            echo = self._pending.popleft()
            echo.due, echo.cleared = now, True
            self._release(echo)

    def flush_due(self, now: float) -> None:
        """Release the marks whose audio has played by ``now`` (1 ms tolerance)."""
        while self._pending and self._pending[0].due <= now + 0.001:
            self._release(self._pending.popleft())
        self._arm()

    def close(self) -> None:
        """Stop the mark timer; pending marks stay unreleased (the call is gone)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._pending and self._timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(self._pending[0].due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush_due(asyncio.get_running_loop().time())
