"""Adaptive jitter buffer for packetised 16-bit PCM (RTP-like sequence numbers and timestamps).

The model (after WebRTC's NetEQ, simplified):

* **Timeline.** Timestamps (32-bit, wrapping) are unwrapped to 64-bit sample positions. Each
  packet's *transit* is ``arrival - position / rate``; the *base* is the smallest transit seen
  in the last 2 s (a sliding-window minimum), and a packet's *relative delay* is
  ``transit - base`` (how much later than the fastest recent packet it came).
* **Target delay.** Relative delays go into a 1 ms histogram with exponential forgetting (time
  constant ~300 packets, about 6 s at 50 packets/s; the first packets count fully). The target
  is its ``quantile`` (0.95) clamped to ``[min_delay_ms, max_delay_ms]``: the buffer waits long
  enough for 95% of packets and conceals the rest.
* **Playout.** ``get(now)`` returns exactly one frame every call. The *buffer delay*
  ``D = now - base - play_position / rate`` says how long ago the next packet was due; a packet
  is playable iff its relative delay <= D, so D is what is steered to the target. Audio goes
  through a small sample FIFO so that operations may produce any length; the delay the caller
  hears (``current_delay_ms``) is D plus what the FIFO holds ahead of the packet (0-1 frame):

  - packet present, D within +-10 ms of target: play it (a delay that stays more than 2 ms
    below or 6 ms above the target for 25 frames gets one stretch, as below, to centre it);
  - packet present, D > target + 10 ms: *accelerate* (remove a pitch period), or drop the frame
    outright if it is near-silent;
  - packet present, D < target - 10 ms: *preemptive expand* (insert a pitch period);
  - packet missing, D < target - 10 ms: *expand* (conceal without advancing: the delay grows);
  - packet missing otherwise: the packet is lost (or too late): conceal and move on. If it
    arrives later it is counted as a late drop.

  Concealment is :class:`harken.audio.plc.Concealer` (pitch repetition, fade, comfort noise,
  cross-fade back into real audio).
* **Resync.** A packet whose relative delay is more than ``resync_s`` off (the sender jumped its
  timestamps) is not buffered; two in a row restart the timeline on the new clock.

Everything is driven by the caller's clock (``arrival_time`` and ``now`` in seconds, any
origin), so the buffer is deterministic and testable with a simulated clock.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.audio.plc import Concealer, compress, expand
from harken.errors import AudioError

__all__ = ["JitterBuffer", "JitterStats", "Unwrapper", "seq_diff", "seq_newer", "ts_diff"]

_SEQ_MOD: Final = 1 << 16
_TS_MOD: Final = 1 << 32
_BASE_WINDOW_S: Final = 10.0
_HYSTERESIS_S: Final = 0.010  # act at once beyond +-10 ms of the target
_SOFT_LOW_S: Final = 0.002  # ... and after _SOFT_FRAMES frames below target - 2 ms
_SOFT_HIGH_S: Final = 0.006  # ... or above target + 6 ms
_SOFT_FRAMES: Final = 25
_SILENT_RMS: Final = 32768.0 * 10 ** (-50 / 20)  # frames below -50 dBFS may be dropped
_FORGET: Final = 1.0 - 1.0 / 300
_MAX_PACKETS: Final = 1000


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


def ts_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 32-bit timestamps, in [-2**31, 2**31 - 1]."""
    return ((a - b + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def seq_newer(a: int, b: int) -> bool:
    """True when sequence number ``a`` is after ``b`` (RFC 3550 / serial-number arithmetic)."""
    return seq_diff(a, b) > 0


class Unwrapper:
    """Extends a wrapping counter (16-bit sequence, 32-bit timestamp) to an unbounded int.

    Each value is placed at the extension nearest to the last one returned, so the counter may
    step back (reordering) by up to half its range without being mistaken for a wrap.
    """

    __slots__ = ("_bits", "_last", "_mod")

    def __init__(self, bits: int) -> None:
        if bits < 2:
            raise AudioError("an unwrapper needs at least 2 bits")
        self._bits = bits
        self._mod = 1 << bits
        self._last: int | None = None

    def unwrap(self, value: int) -> int:
        """The unwrapped value of ``value`` (taken modulo 2**bits)."""
        value &= self._mod - 1
        if self._last is None:
            self._last = value
            return value
        half = self._mod >> 1
        delta = ((value - self._last + half) & (self._mod - 1)) - half
        self._last += delta
        return self._last

    def reset(self) -> None:
        self._last = None


@dataclass(slots=True)
class JitterStats:
    """Counters and gauges of a :class:`JitterBuffer` (a snapshot; times in ms)."""

    packets_received: int = 0
    packets_expected: int = 0
    packets_lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    late_drops: int = 0
    overflow_drops: int = 0
    resyncs: int = 0
    frames_out: int = 0
    concealed_ms: float = 0.0
    concealment_events: int = 0
    expands: int = 0
    accelerates: int = 0
    preemptive_expands: int = 0
    silence_drops: int = 0
    current_delay_ms: float = 0.0
    buffer_delay_ms: float = 0.0
    target_delay_ms: float = 0.0
    buffered_ms: float = 0.0

    @property
    def loss_percent(self) -> float:
        """Packets never received, as a percentage of those expected (RFC 3550 style)."""
        if self.packets_expected <= 0:
            return 0.0
        return 100.0 * self.packets_lost / self.packets_expected

    @property
    def late_percent(self) -> float:
        """Packets that came too late to play, as a percentage of those expected."""
        if self.packets_expected <= 0:
            return 0.0
        return 100.0 * self.late_drops / self.packets_expected


class JitterBuffer:
    """Reorders, de-duplicates and paces packets; ``get`` never stalls.

    ``put(seq, timestamp, payload, arrival_time)`` buffers one packet of int16 PCM (any length;
    ``clock_rate`` is the RTP timestamp rate when it differs from ``sample_rate``).
    ``get(now)`` returns exactly one ``frame_ms`` frame of int16 bytes: real, stretched or
    concealed. Call it on the playout clock (every ``frame_ms``).
    """

    def __init__(
        self,
        sample_rate: int = 8000,
        frame_ms: int = 20,
        *,
        min_delay_ms: float = 10.0,
        max_delay_ms: float = 400.0,
        initial_delay_ms: float = 60.0,
        quantile: float = 0.95,
        clock_rate: int | None = None,
        resync_s: float = 2.0,
        seed: int = 0,
    ) -> None:
        if sample_rate < 4000 or frame_ms <= 0:
            raise AudioError(f"bad jitter buffer format: {sample_rate} Hz, {frame_ms} ms")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise AudioError("need 0 <= min_delay_ms <= max_delay_ms")
        if not 0.5 <= quantile < 1.0:
            raise AudioError("quantile must be in [0.5, 1)")
        self.sample_rate = sample_rate
        self.frame = sample_rate * frame_ms // 1000
        if self.frame * 1000 != sample_rate * frame_ms:
            raise AudioError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
        self.clock_rate = clock_rate or sample_rate
        self._min_delay = min_delay_ms / 1000
        self._max_delay = max_delay_ms / 1000
        self._quantile = quantile
        self._resync_s = resync_s
        self._target = min(max(initial_delay_ms / 1000, self._min_delay), self._max_delay)
        self._plc = Concealer(sample_rate, seed=seed)
        self._hist = np.zeros(int(max_delay_ms) + 2, np.float64)
        self._hist_n = 0
        self._stats = JitterStats()
        self._seq = Unwrapper(16)
        self._ts = Unwrapper(32)
        self._reset_timeline()

    # -- state -----------------------------------------------------------------------------

    def _reset_timeline(self) -> None:
        self._packets: dict[int, npt.NDArray[np.int16]] = {}
        self._starts: list[int] = []  # sorted packet positions
        self._seen: deque[int] = deque(maxlen=256)
        self._seen_set: set[int] = set()
        self._min_q: deque[tuple[float, float]] = deque()  # (arrival, transit), increasing
        self._base: float | None = None
        self._play: int | None = None  # next sample position to take from the packets
        self._started = False
        self._fifo = np.zeros(0, np.int16)
        self._first_seq: int | None = None
        self._max_seq: int | None = None
        self._far = 0
        self._low = self._high = 0
        self._seq.reset()
        self._ts.reset()

    def reset(self) -> None:
        """Drop everything buffered and start a new stream (statistics are kept)."""
        self._reset_timeline()
        self._plc.reset()

    @property
    def target_delay_ms(self) -> float:
        return self._target * 1000

    @property
    def stats(self) -> JitterStats:
        """A snapshot of the statistics."""
        s = self._stats
        if self._first_seq is not None and self._max_seq is not None:
            s.packets_expected = self._max_seq - self._first_seq + 1
            s.packets_lost = max(0, s.packets_expected - s.packets_received)
        s.concealed_ms = 1000 * self._plc.concealed_samples / self.sample_rate
        s.concealment_events = self._plc.events
        s.target_delay_ms = self._target * 1000
        s.buffered_ms = 1000 * sum(p.size for p in self._packets.values()) / self.sample_rate
        return dataclasses.replace(s)

    # -- input -----------------------------------------------------------------------------

    def _pos(self, ext_ts: int) -> int:
        if self.clock_rate == self.sample_rate:
            return ext_ts
        return ext_ts * self.sample_rate // self.clock_rate

    def _update_base(self, arrival: float, transit: float) -> None:
        q = self._min_q
        while q and q[-1][1] >= transit:
            q.pop()
        q.append((arrival, transit))
        while q[0][0] < arrival - _BASE_WINDOW_S:
            q.popleft()
        self._base = q[0][1]

    def _observe(self, rel_delay: float) -> None:
        """Add a relative delay to the histogram and recompute the target."""
        self._hist_n += 1
        w = max(1.0 - _FORGET, 1.0 / self._hist_n)
        self._hist *= 1.0 - w
        b = min(int(max(rel_delay, 0.0) * 1000), self._hist.size - 1)
        self._hist[b] += w
        if self._hist_n >= 20:
            cum = np.cumsum(self._hist)
            idx = int(np.searchsorted(cum, self._quantile * cum[-1]))
            self._target = min(max((idx + 1) / 1000, self._min_delay), self._max_delay)

    def put(
        self,
        seq: int,
        timestamp: int,
        payload: bytes | bytearray | memoryview,
        arrival_time: float,
    ) -> None:
        """Buffer one packet of int16 little-endian PCM that arrived at ``arrival_time``."""
        if len(payload) % 2:
            raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(payload)}")
        st = self._stats
        ext_seq = self._seq.unwrap(seq)
        if ext_seq in self._seen_set:
            st.duplicates += 1
            return
        pos = self._pos(self._ts.unwrap(timestamp))
        transit = arrival_time - pos / self.sample_rate
        if self._base is not None and abs(transit - self._base) > self._resync_s:
            self._far += 1
            if self._far < 2:
                return
            st.resyncs += 1
            self._reset_timeline()
            ext_seq = self._seq.unwrap(seq)
            pos = self._pos(self._ts.unwrap(timestamp))
            transit = arrival_time - pos / self.sample_rate
        self._far = 0
        if len(self._seen) == self._seen.maxlen:
            self._seen_set.discard(self._seen[0])
        self._seen.append(ext_seq)
        self._seen_set.add(ext_seq)
        st.packets_received += 1
        if self._first_seq is None or self._max_seq is None:
            self._first_seq = self._max_seq = ext_seq
        elif ext_seq > self._max_seq:
            self._max_seq = ext_seq
        else:
            st.reordered += 1
            self._first_seq = min(self._first_seq, ext_seq)
        self._update_base(arrival_time, transit)
        assert self._base is not None
        self._observe(transit - self._base)
        pcm = np.frombuffer(payload, "<i2")
        if self._play is not None and pos + pcm.size <= self._play:
            st.late_drops += 1
            return
        if pos in self._packets:
            st.duplicates += 1
            return
        self._packets[pos] = pcm
        bisect.insort(self._starts, pos)
        if len(self._starts) > _MAX_PACKETS:
            oldest = self._starts.pop(0)
            del self._packets[oldest]
            st.overflow_drops += 1

    # -- output ----------------------------------------------------------------------------

    def _drop_before(self, pos: int) -> None:
        """Forget packets that end at or before ``pos``."""
        while self._starts:
            p = self._starts[0]
            if p + self._packets[p].size > pos:
                break
            self._starts.pop(0)
            del self._packets[p]

    def _take(self, pos: int) -> npt.NDArray[np.int16] | None:
        """The audio from ``pos`` to the end of the packet covering it, if buffered."""
        self._drop_before(pos)
        if not self._starts or self._starts[0] > pos:
            return None
        p = self._starts.pop(0)
        pcm = self._packets.pop(p)
        return pcm[pos - p :]

    def _step(self, now: float) -> None:
        """Append some audio to the FIFO (the decision logic)."""
        st = self._stats
        assert self._play is not None and self._base is not None
        rate = self.sample_rate
        delay = now - self._base - self._play / rate
        st.buffer_delay_ms = delay * 1000
        target = self._target
        # Where the delay sits inside the +-10 ms band is steered slowly: a delay that stays a
        # little low (or high) for half a second gets one stretch, so it centres on the target.
        if delay < target - _SOFT_LOW_S:
            self._low += 1
            self._high = 0
        elif delay > target + _SOFT_HIGH_S:
            self._high += 1
            self._low = 0
        else:
            self._low = self._high = 0
        too_low = delay < target - _HYSTERESIS_S or self._low >= _SOFT_FRAMES
        too_high = delay > target + _HYSTERESIS_S or self._high >= _SOFT_FRAMES
        pcm = self._take(self._play)
        if pcm is None:
            nxt = self._starts[0] if self._starts else None
            n = self.frame if nxt is None else max(1, min(self.frame, nxt - self._play))
            out = self._plc.conceal(n)
            if too_low:
                self._low = 0
                st.expands += 1  # wait for it: the delay grows by n samples
            else:
                self._play += n  # lost or too late: move on
        else:
            self._play += pcm.size
            x = pcm
            if too_high:
                self._high = 0
                xf = x.astype(np.float64)
                if math.sqrt(float(np.dot(xf, xf)) / max(1, xf.size)) < _SILENT_RMS:
                    st.silence_drops += 1
                    return
                xf, _ = self._with_next(xf)
                y = compress(xf, rate, force=delay > target + 5 * _HYSTERESIS_S)
                if y.size < xf.size:
                    st.accelerates += 1
                x = np.round(y).astype(np.int16)
            elif too_low:
                self._low = 0
                xf, _ = self._with_next(x.astype(np.float64))
                y = expand(xf, rate)
                if y.size > xf.size:
                    st.preemptive_expands += 1
                x = np.round(y).astype(np.int16)
            out = self._plc.good(x)
        self._fifo = np.concatenate([self._fifo, out]) if self._fifo.size else out

    def _with_next(self, xf: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], int]:
        """Extend a frame with the next contiguous packet (stretching wants >= 35 ms)."""
        if xf.size >= round(0.035 * self.sample_rate):
            return xf, 0
        assert self._play is not None
        nxt = self._take(self._play)
        if nxt is None:
            return xf, 0
        self._play += nxt.size
        return np.concatenate([xf, nxt.astype(np.float64)]), nxt.size

    def get(self, now: float) -> bytes:
        """One frame of int16 bytes to play starting at ``now``; never blocks, never short."""
        st = self._stats
        st.frames_out += 1
        n = self.frame
        if not self._started:
            if self._starts:
                self._play = self._starts[0]
            if self._play is None or self._base is None:
                return bytes(2 * n)
            if now - self._base - self._play / self.sample_rate < self._target:
                return bytes(2 * n)
            self._started = True
        while self._fifo.size < n:
            self._step(now)
        assert self._play is not None and self._base is not None
        head = self._play - self._fifo.size
        st.current_delay_ms = 1000 * (now - self._base - head / self.sample_rate)
        out = self._fifo[:n]
        self._fifo = self._fifo[n:]
        return out.tobytes()
