"""Pure measurement models of the echo bench: byte-count RTT matching, the caller's playback
clock (mark echoes), and percentiles. No I/O, no clock: every time is passed in.

**Byte-count matching.** The load generator numbers every byte of caller audio it sends. The
server may re-chunk the echo (other message sizes), re-encode it (µ-law -> PCM -> µ-law gives
other bytes, or another encoding gives another byte rate), delay or batch it; what it cannot
change is *how much* audio comes back. So the round trip of a received chunk is its receive time
minus the send time of the inbound frame that carried the chunk's **last byte**, counting bytes
from the start of the stream (scaled by ``ratio`` = received bytes per sent byte when the
encodings differ). This needs no content matching and no per-message ids.

**Playback clock.** A bidirectional Twilio stream plays the server's audio at 8000 samples/s:
from its arrival when the caller's buffer is idle, else after what is queued. A ``mark`` is
echoed once the audio queued before it has played (at once if nothing is queued); ``clear``
drops the queued audio and echoes every pending mark at once. :class:`PlayClock` is that model
with O(1) work per message, so a load generator can run it for hundreds of calls.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = [
    "PERCENTILES",
    "FrameMatcher",
    "PlayClock",
    "match_rtts",
    "summarize",
]

#: The percentiles every latency figure reports, as (JSON key suffix, percentile).
PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50", 50.0),
    ("p90", 90.0),
    ("p99", 99.0),
    ("p999", 99.9),
)


def match_rtts(
    sent: Sequence[tuple[int, float]],
    received: Iterable[tuple[int, float]],
    ratio: float = 1.0,
) -> list[float | None]:
    """Round trip of every received chunk by byte-count matching (the reference algorithm).

    ``sent``: (bytes, send time) of each inbound frame, in order. ``received``: (bytes, receive
    time) of each echoed chunk, in order. ``ratio``: received bytes per sent byte (1 for µ-law
    both ways, 2 for µ-law in and 16-bit PCM out). Returns, per received chunk, its receive time
    minus the send time of the inbound frame that carried its last byte; None for a chunk whose
    last byte lies beyond everything sent (the server sent more than it got)."""
    ends: list[int] = []  # cumulative sent bytes after each frame
    total = 0
    for nbytes, _ in sent:
        total += nbytes
        ends.append(total)
    out: list[float | None] = []
    got = 0
    for nbytes, t in received:
        got += nbytes
        last = math.ceil(got / ratio) - 1  # index of the last *sent* byte this chunk completes
        j = bisect.bisect_right(ends, last)
        out.append(t - sent[j][1] if j < len(sent) else None)
    return out


class FrameMatcher:
    """Incremental byte-count matching for one call whose frames are all ``frame_bytes`` long
    (the load generator's case): O(1) per frame sent and per chunk received.

    Send times live in a float array indexed by frame number; :meth:`received` returns the index
    of the frame that carried a chunk's last byte (so the caller can also tell whether that frame
    was sent inside the measurement window), or -1 if the chunk's bytes run past what was sent.
    """

    __slots__ = ("frame_bytes", "ratio", "recv_bytes", "sent_frames", "times")

    def __init__(self, frame_bytes: int = 160, ratio: float = 1.0) -> None:
        self.frame_bytes = frame_bytes
        self.ratio = ratio
        self.times: list[float] = []
        self.sent_frames = 0
        self.recv_bytes = 0

    def sent(self, t: float) -> None:
        self.times.append(t)
        self.sent_frames += 1

    def received(self, nbytes: int) -> int:
        self.recv_bytes += nbytes
        if self.ratio == 1.0:
            frame = (self.recv_bytes - 1) // self.frame_bytes
        else:
            frame = (math.ceil(self.recv_bytes / self.ratio) - 1) // self.frame_bytes
        return frame if frame < self.sent_frames else -1


class PlayClock:
    """The caller's playback buffer, reduced to a clock (see the module docstring).

    Each method returns the names of the marks to echo *now*, in order."""

    __slots__ = ("pending", "play_end", "rate")

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self.play_end = 0.0  # when everything received so far will have played
        self.pending: deque[tuple[float, str]] = deque()  # (due, name)

    def media(self, nbytes: int, now: float, bytes_per_sample: int = 1) -> None:
        start = now if now > self.play_end else self.play_end
        self.play_end = start + nbytes / (bytes_per_sample * self.rate)

    def mark(self, name: str, now: float) -> list[str]:
        out = self.due(now)
        if self.play_end <= now and not self.pending:
            out.append(name)
        else:
            self.pending.append((self.play_end, name))
        return out

    def due(self, now: float) -> list[str]:
        """Marks whose audio has played by ``now`` (1 ms tolerance)."""
        out: list[str] = []
        pending = self.pending
        while pending and pending[0][0] <= now + 0.001:
            out.append(pending.popleft()[1])
        return out

    def clear(self, now: float) -> list[str]:
        """Drop queued audio; every pending mark is echoed at once."""
        out = [name for _, name in self.pending]
        self.pending.clear()
        if self.play_end > now:
            self.play_end = now
        return out


def summarize(
    samples: Sequence[float] | np.ndarray, prefix: str, scale: float = 1000.0
) -> dict[str, float | None]:
    """``{prefix_p50_ms: …, prefix_p90_ms, prefix_p99_ms, prefix_p999_ms, prefix_max_ms,
    prefix_mean_ms}`` of ``samples`` (seconds) in milliseconds (``scale``); None everywhere when
    there are none.

    Percentiles use linear interpolation between order statistics (numpy's default), so p99.9
    needs about 1,000 samples to mean anything; the sample count is reported next to it."""
    arr = np.asarray(samples, dtype=np.float64)
    keys = [f"{prefix}_{name}_ms" for name, _ in PERCENTILES]
    keys += [f"{prefix}_max_ms", f"{prefix}_mean_ms"]
    if arr.size == 0:
        return dict.fromkeys(keys, None)
    values = np.percentile(arr, [q for _, q in PERCENTILES]) * scale
    out: dict[str, float | None] = {
        key: round(float(v), 3) for key, v in zip(keys, values, strict=False)
    }
    out[f"{prefix}_max_ms"] = round(float(arr.max()) * scale, 3)
    out[f"{prefix}_mean_ms"] = round(float(arr.mean()) * scale, 3)
    return out
