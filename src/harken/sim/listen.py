"""Hearing the agent: an energy detector on the audio the emulated carrier received and played.

The agent's audio is clean TTS over a clean line, so a level detector is enough to tell speech
from silence: a 20 ms frame (160 samples at 8 kHz) is **voiced** when its RMS level is above
:data:`VOICED_DBFS` (-45 dBFS, the same floor the server's VAD uses for the caller). On the
Piper and espeak-ng voices, speech frames sit between -8 and -40 dBFS and the pauses between
words and sentences below -55 dBFS (digital silence decodes to exactly 0), so the threshold has
10 dB of margin either way; quiet word endings that dip under it shorten a voiced span by at most
a frame or two.

Every received sample has two times: when it **arrived** (the media message that carried it) and
when it **played** (the emulator's playback buffer schedules each message on arrival: at once
when the buffer is idle, else after what is queued; a ``clear`` cuts what had not played). The
measurements use played time, since that is what a caller hears; :class:`AgentAudio` keeps both.

:class:`AgentTrack` follows a live call incrementally (for ``wait_agent`` and for timing
backchannels and barge-ins); :func:`agent_audio` rebuilds the final, authoritative picture from
the emulator's records once the call is over (clears then have cut their spans).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.testing._playback import PlayedSpan, ReceivedMedia
from harken.testing.twilio import TwilioEmulator, ulaw_decode

__all__ = [
    "FRAME",
    "RATE",
    "VOICED_DBFS",
    "AgentAudio",
    "AgentTrack",
    "Span",
    "agent_audio",
    "frame_dbfs",
    "merge",
]

RATE: Final = 8000
FRAME: Final = 160  # 20 ms
VOICED_DBFS: Final = -45.0
"""A 20 ms frame above this RMS level (dBFS) is speech."""


@dataclass(frozen=True, slots=True)
class Span:
    """``[start, end)`` in seconds of the event loop's clock."""

    start: float
    end: float

    @property
    def length(self) -> float:
        return self.end - self.start


def frame_dbfs(pcm: npt.NDArray[np.int16], frame: int = FRAME) -> npt.NDArray[np.float64]:
    """RMS level of each whole ``frame``-sample block, in dBFS (silence: -120)."""
    n = len(pcm) // frame
    if n == 0:
        return np.zeros(0)
    blocks = pcm[: n * frame].astype(np.float64).reshape(n, frame)
    rms = np.sqrt(np.mean(blocks * blocks, axis=1)) / 32768.0
    out: npt.NDArray[np.float64] = 20.0 * np.log10(np.maximum(rms, 1e-6))
    return out


def merge(spans: Sequence[Span], gap: float = 0.001) -> list[Span]:
    """Sorted spans with gaps shorter than ``gap`` joined."""
    out: list[Span] = []
    for s in sorted(spans, key=lambda s: s.start):
        if out and s.start - out[-1].end < gap:
            if s.end > out[-1].end:
                out[-1] = Span(out[-1].start, s.end)
        else:
            out.append(s)
    return out


@dataclass(slots=True)
class AgentAudio:
    """What the caller got from the agent, on the loop clock.

    ``voiced``: played spans of speech (contiguous voiced frames joined). ``playing``: spans
    during which any received audio was playing (speech or the silences inside a reply).
    ``arrivals``: arrival time of each media message. ``clears``: ``clear`` arrivals.
    ``closed_at``: when the server closed the call (None: the caller hung up or it is live).
    """

    voiced: list[Span] = field(default_factory=list)
    playing: list[Span] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    closed_at: float | None = None


def _span_levels(
    pcm: npt.NDArray[np.int16], span: PlayedSpan, threshold: float
) -> list[tuple[float, float, bool]]:
    """(play start, play end, voiced) for each 20 ms block of a played span."""
    audio = pcm[span.first_sample : span.first_sample + span.n_samples]
    out = []
    for i in range(0, len(audio), FRAME):
        block = audio[i : i + FRAME]
        level = float(frame_dbfs(block, len(block))[0]) if len(block) else -120.0
        t0 = span.start + i / span.rate
        out.append((t0, t0 + len(block) / span.rate, level > threshold))
    return out


def agent_audio(
    received: Sequence[ReceivedMedia],
    played: Sequence[PlayedSpan],
    pcm: npt.NDArray[np.int16],
    clears: Sequence[float] = (),
    closed_at: float | None = None,
    threshold: float = VOICED_DBFS,
) -> AgentAudio:
    """The final picture of the agent's audio from an emulator's records (see the module doc)."""
    voiced: list[Span] = []
    playing: list[Span] = []
    for span in played:
        if span.n_samples <= 0:
            continue
        playing.append(Span(span.start, span.end))
        voiced.extend(Span(a, b) for a, b, v in _span_levels(pcm, span, threshold) if v)
    return AgentAudio(
        voiced=merge(voiced),
        playing=merge(playing),
        arrivals=[r.time for r in received],
        clears=list(clears),
        closed_at=closed_at,
    )


def from_emulator(em: TwilioEmulator, threshold: float = VOICED_DBFS) -> AgentAudio:
    """:func:`agent_audio` of a finished (or live) emulated call."""
    return agent_audio(
        em.received, em.played, em.received_pcm(), em.clears, em.closed_at, threshold
    )


class AgentTrack:
    """Live view of the agent's speech on one emulated call, updated by polling :meth:`update`.

    New media messages are levelled once each (a few µs per 20 ms frame). A ``clear`` drops the
    voiced blocks it cut (those that arrived before it and were due to play after it)."""

    def __init__(self, em: TwilioEmulator, threshold: float = VOICED_DBFS) -> None:
        self.em = em
        self.threshold = threshold
        self.voiced: list[tuple[float, float, float]] = []  # (play start, play end, arrival)
        self.last_arrival = float("-inf")
        self._seen_spans = 0
        self._seen_clears = 0

    def update(self) -> None:
        em = self.em
        spans = em.played
        if len(spans) > self._seen_spans:
            new = spans[self._seen_spans :]
            first = new[0].first_sample
            last = new[-1].first_sample + new[-1].n_samples
            pcm = ulaw_decode(bytes(em._buffer.audio[first:last]))
            arrivals = {r.first_sample: r.time for r in em.received[-len(new) - 2 :]}
            for span in new:
                local = PlayedSpan(span.start, span.first_sample - first, span.n_samples, span.rate)
                arrival = arrivals.get(span.first_sample, span.start)
                for a, b, v in _span_levels(pcm, local, self.threshold):
                    if v:
                        self.voiced.append((a, b, arrival))
            self._seen_spans = len(spans)
        if em.received:
            self.last_arrival = em.received[-1].time
        if len(em.clears) > self._seen_clears:
            for c in em.clears[self._seen_clears :]:
                self.voiced = [v for v in self.voiced if not (v[2] <= c < v[1])]
            self._seen_clears = len(em.clears)

    def onset_after(self, t: float, now: float) -> float | None:
        """Play time of the first voiced frame played in ``[t, now]`` (None if none yet)."""
        i = bisect.bisect_left(self.voiced, (t,))
        if i < len(self.voiced) and self.voiced[i][0] <= now:
            return self.voiced[i][0]
        return None

    def spoke_since(self, t: float, now: float) -> bool:
        """Whether any voiced audio ending after ``t`` has played by ``now``."""
        for a, b, _ in reversed(self.voiced):  # in play order: stop at the first older one
            if b <= t:
                return False
            if a <= now:
                return True
        return False

    def quiet_since(self, now: float) -> float:
        """Seconds since the last voiced audio played, or since the last arrival, whichever is
        later (0 while audio is queued or playing)."""
        if self.em.playback_end > now:
            return 0.0
        last = next((b for _, b, _ in reversed(self.voiced) if b <= now), float("-inf"))
        return max(0.0, now - max(last, self.last_arrival))
