"""DTMF: RFC 4733 telephone events, an in-band Goertzel detector, and a tone generator.

**RFC 4733** (``telephone-event``): one 4-byte payload per RTP packet::

     0                   1                   2                   3
    |     event     |E|R| volume    |          duration             |

All packets of one event carry the RTP timestamp of the event's start; the duration grows with
each update, and the final packet (E bit) is usually sent three times. :class:`EventReceiver`
reports each event exactly once, when its first end packet arrives (or when a new event shows the
old one's end packets were lost, or on :meth:`EventReceiver.poll` / :meth:`EventReceiver.flush`).

**In-band detection** (:class:`DtmfDetector`) for carriers that send tones in the audio. Per
window of ~12.75 ms (102 samples at 8 kHz, windows overlapping by half) it measures the eight
DTMF frequencies (and their second harmonics) with single-bin DFTs -- the Goertzel measure,
evaluated for all of them at once as one matrix product -- and declares a hit when all hold:

* each of the strongest row and column tone is at least ``min_level_dbfs`` (default -40 dBFS),
* twist: the row tone is at most 8 dB above the column tone (normal twist) and the column tone at
  most 4 dB above the row tone (reverse twist),
* each winner is at least 8 dB above every other tone of its group,
* the two tones hold at least 80% of the window's energy (speech and noise spread theirs), and the
  second harmonics of both tones are at least 15 dB below them (speech is harmonic-rich); the
  row tone's harmonic is not checked where it falls within 100 Hz of the column tone.

A digit is reported when its run of hit windows ends, if the run is long enough: the duration is
estimated as the sum of the windows' tone amplitudes relative to the run's strongest window, times
the hop (each sample lies in two windows), so partial windows at the edges count fractionally. It
must reach ``min_duration_ms`` (default 28 ms): ITU-T Q.24 asks that 40 ms tones be accepted and
tones of 20 ms or less rejected (a 40 ms tone scores at least 31.9 ms, a 20 ms one at most
26.4 ms). One failed window inside a run is tolerated.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from harken.audio.level import dbfs_to_amplitude
from harken.errors import AudioError, RemoteProtocolError

__all__ = [
    "DIGITS",
    "DtmfDetector",
    "DtmfDigit",
    "EventPacket",
    "EventReceiver",
    "TelephoneEvent",
    "digit_to_event",
    "dtmf_tone",
    "event_packets",
    "event_to_digit",
    "generate_dtmf",
]

DIGITS: Final = "0123456789*#ABCD"
ROW_HZ: Final = (697.0, 770.0, 852.0, 941.0)
COL_HZ: Final = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD: Final = ("123A", "456B", "789C", "*0#D")
_EVENT_LEN: Final = 4


def event_to_digit(event: int) -> str | None:
    """The DTMF digit of an RFC 4733 event code (0-15), or None for other events."""
    return DIGITS[event] if 0 <= event < 16 else None


def digit_to_event(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit (``0-9 * # A-D``)."""
    i = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if i < 0:
        raise AudioError(f"not a DTMF digit: {digit!r}")
    return i


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """A digit the caller pressed. ``timestamp`` is the RTP timestamp of the event's start
    (RFC 4733) or the sample index of the tone's start (in-band)."""

    digit: str
    duration_ms: int
    timestamp: int = 0


# ---------------------------------------------------------------------------------------------
# RFC 4733


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    """One RFC 4733 payload. ``duration`` is in RTP timestamp units; ``volume`` is -dBm0."""

    event: int
    end: bool
    volume: int
    duration: int

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        """Parse a payload; raises :class:`RemoteProtocolError` unless it is exactly 4 bytes."""
        if len(payload) != _EVENT_LEN:
            raise RemoteProtocolError(
                f"telephone-event payload must be {_EVENT_LEN} bytes, got {len(payload)}"
            )
        b = bytes(payload)
        return cls(b[0], bool(b[1] & 0x80), b[1] & 0x3F, (b[2] << 8) | b[3])

    def __bytes__(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise AudioError(f"event code out of range: {self.event}")
        if not 0 <= self.volume <= 63:
            raise AudioError(f"volume out of range 0-63: {self.volume}")
        if not 0 <= self.duration <= 0xFFFF:
            raise AudioError(f"duration out of range 0-65535: {self.duration}")
        return bytes(
            (
                self.event,
                (0x80 if self.end else 0) | self.volume,
                self.duration >> 8,
                self.duration & 0xFF,
            )
        )

    @property
    def digit(self) -> str | None:
        """The DTMF digit, or None for a non-DTMF event."""
        return event_to_digit(self.event)


@dataclass(frozen=True, slots=True)
class EventPacket:
    """One packet of an outgoing event: send with the event's start timestamp; set the RTP
    marker bit where ``marker`` is True."""

    payload: bytes
    marker: bool
    end: bool


def event_packets(
    digit: str,
    duration_ms: int = 100,
    *,
    clock_rate: int = 8000,
    volume: int = 10,
    update_ms: int = 50,
    end_repeats: int = 3,
) -> list[EventPacket]:
    """The RFC 4733 packets for one digit: updates every ``update_ms``, then ``end_repeats``
    identical end packets (RFC 4733 section 2.5.1.4)."""
    if duration_ms <= 0 or update_ms <= 0 or end_repeats < 1:
        raise AudioError("duration_ms, update_ms and end_repeats must be positive")
    event = digit_to_event(digit)
    total = round(duration_ms * clock_rate / 1000)
    if total > 0xFFFF:
        raise AudioError(f"{duration_ms} ms does not fit one event at {clock_rate} Hz")
    step = max(1, round(update_ms * clock_rate / 1000))
    packets = []
    for i, dur in enumerate(range(step, total, step)):
        payload = bytes(TelephoneEvent(event, False, volume, dur))
        packets.append(EventPacket(payload, i == 0, False))
    end = bytes(TelephoneEvent(event, True, volume, total))
    for i in range(end_repeats):
        packets.append(EventPacket(end, not packets and i == 0, True))
    return packets


class EventReceiver:
    """Turns a stream of RFC 4733 packets into digits, each exactly once.

    Feed every telephone-event packet with its RTP timestamp. Redundant end packets, late updates
    and retransmissions of an event already reported are ignored (events are told apart by their
    start timestamp). If an event's end packets are all lost, the event is reported when the next
    event starts, when :meth:`poll` sees no update for ``timeout_ms``, or on :meth:`flush`.
    """

    __slots__ = ("_clock", "_cur", "_done", "_timeout")

    def __init__(self, clock_rate: int = 8000, *, timeout_ms: int = 1000) -> None:
        self._clock = clock_rate
        self._timeout = timeout_ms * clock_rate // 1000
        self._cur: tuple[int, int, int] | None = None  # (timestamp, event, duration)
        self._done: deque[int] = deque(maxlen=16)

    def _finish(self) -> DtmfDigit | None:
        cur, self._cur = self._cur, None
        if cur is None:
            return None
        ts, event, duration = cur
        self._done.append(ts)
        digit = event_to_digit(event)
        if digit is None:
            return None
        return DtmfDigit(digit, duration * 1000 // self._clock, ts)

    def feed(self, timestamp: int, payload: bytes | bytearray | memoryview) -> list[DtmfDigit]:
        """Process one packet; returns the digits completed by it (usually none or one)."""
        ev = TelephoneEvent.parse(payload)
        timestamp &= 0xFFFFFFFF
        out: list[DtmfDigit] = []
        if timestamp in self._done:
            return out
        cur = self._cur
        if cur is not None and (cur[0] != timestamp or cur[1] != ev.event):
            d = self._finish()
            if d is not None:
                out.append(d)
            cur = None
        duration = ev.duration if cur is None else max(cur[2], ev.duration)
        self._cur = (timestamp, ev.event, duration)
        if ev.end:
            d = self._finish()
            if d is not None:
                out.append(d)
        return out

    def poll(self, timestamp: int) -> list[DtmfDigit]:
        """Report an event whose end packets never came, once ``timestamp`` (the stream's current
        RTP time) is ``timeout_ms`` past its last known end."""
        cur = self._cur
        if cur is None:
            return []
        elapsed = ((timestamp - cur[0] - cur[2] + 0x80000000) & 0xFFFFFFFF) - 0x80000000
        if elapsed < self._timeout:
            return []
        d = self._finish()
        return [d] if d is not None else []

    def flush(self) -> list[DtmfDigit]:
        """Report an unfinished event now (e.g. at the end of the call)."""
        d = self._finish()
        return [d] if d is not None else []


# ---------------------------------------------------------------------------------------------
# tone generation


def _tone_pair(digit: str) -> tuple[float, float]:
    key = DIGITS[digit_to_event(digit)]
    r = next(i for i, row in enumerate(KEYPAD) if key in row)
    return ROW_HZ[r], COL_HZ[KEYPAD[r].index(key)]


def dtmf_tone(
    digit: str,
    sample_rate: int = 8000,
    duration_ms: float = 100,
    *,
    level_dbfs: float = -20.0,
    twist_db: float = 0.0,
    start_sample: int = 0,
) -> npt.NDArray[np.int16]:
    """One digit's dual tone. ``level_dbfs`` is the RMS of the pair; ``twist_db`` > 0 makes the
    column (high) tone louder. ``start_sample`` continues the phase of a longer signal."""
    f_row, f_col = _tone_pair(digit)
    n = round(sample_rate * duration_ms / 1000)
    rms = dbfs_to_amplitude(level_dbfs)
    g = 10 ** (twist_db / 20)
    a_row = rms * np.sqrt(2 / (1 + g * g))
    a_col = a_row * g
    t = (np.arange(n) + start_sample) / sample_rate
    x = a_row * np.sin(2 * np.pi * f_row * t) + a_col * np.sin(2 * np.pi * f_col * t)
    out: npt.NDArray[np.int16] = np.clip(np.round(x), -32768, 32767).astype(np.int16)
    return out


def generate_dtmf(
    digits: str,
    sample_rate: int = 8000,
    *,
    tone_ms: float = 100,
    gap_ms: float = 100,
    level_dbfs: float = -20.0,
) -> npt.NDArray[np.int16]:
    """A digit string as in-band audio: each tone followed by ``gap_ms`` of silence."""
    gap = np.zeros(round(sample_rate * gap_ms / 1000), np.int16)
    parts: list[npt.NDArray[np.int16]] = []
    for d in digits:
        parts.append(dtmf_tone(d, sample_rate, tone_ms, level_dbfs=level_dbfs))
        parts.append(gap)
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


# ---------------------------------------------------------------------------------------------
# in-band detection

_NORMAL_TWIST: Final = 10 ** (8 / 10)  # row tone may exceed the column tone by 8 dB
_REVERSE_TWIST: Final = 10 ** (4 / 10)  # column tone may exceed the row tone by 4 dB
_RELATIVE_PEAK: Final = 10 ** (8 / 10)  # winner over the rest of its group
_TO_TOTAL: Final = 0.8  # share of the window energy in the two tones
_HARMONIC: Final = 10 ** (-15 / 10)  # second harmonic at most 15 dB below its tone


class DtmfDetector:
    """In-band DTMF detector for 16-bit PCM (8 kHz, or any rate up to 48 kHz).

    ``process(pcm)`` takes any amount of audio and returns the digits whose tones ended in it.
    Deterministic and frame-size agnostic: feeding 1 ms or 1 s chunks gives the same digits.
    """

    __slots__ = (
        "_basis",
        "_block",
        "_buf",
        "_harmonic_masked",
        "_hop",
        "_hop_ms",
        "_min_amp2",
        "_min_ms",
        "_pos",
        "_run",
        "_run_digit",
        "_run_miss",
        "_run_start",
        "sample_rate",
    )

    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        min_level_dbfs: float = -40.0,
        min_duration_ms: float = 28.0,
    ) -> None:
        if not 4000 <= sample_rate <= 48000:
            raise AudioError(f"DTMF detection needs 4-48 kHz audio, got {sample_rate}")
        self.sample_rate = sample_rate
        self._block = round(sample_rate * 0.01275)  # 102 samples at 8 kHz
        self._hop = self._block // 2
        self._hop_ms = 1000 * self._hop / sample_rate
        freqs = np.array(ROW_HZ + COL_HZ + tuple(2 * f for f in ROW_HZ + COL_HZ))
        n = np.arange(self._block)[:, None]
        w = 2 * np.pi * freqs[None, :] / sample_rate
        self._basis = np.concatenate([np.cos(w * n), np.sin(w * n)], axis=1)  # (block, 32)
        # A row tone's second harmonic can fall within ~100 Hz of the column tone (2*697 Hz is
        # 58 Hz from 1336 Hz), where a ~12.75 ms block cannot separate them: skip that check.
        self._harmonic_masked = np.array(
            [[abs(2 * fr - fc) < 100 for fc in COL_HZ] for fr in ROW_HZ], dtype=bool
        )
        # tone "energy" e = 2|X|^2/N equals sum(x^2) of a sine of that frequency in the block
        self._min_amp2 = dbfs_to_amplitude(min_level_dbfs) ** 2 * self._block
        self._min_ms = min_duration_ms
        self._buf = np.zeros(0, np.float64)
        self._pos = 0  # sample index of the start of _buf
        self._run_digit: str | None = None
        self._run: list[float] = []  # tone amplitude of each block of the current run
        self._run_start = 0
        self._run_miss = 0

    def _classify(self, windows: npt.NDArray[np.float64]) -> list[tuple[str | None, float]]:
        """For each window: (digit or None, combined tone amplitude)."""
        x = windows @ self._basis
        e = 2.0 * (x[:, :16] ** 2 + x[:, 16:] ** 2) / self._block  # (n, 16) tone energies
        total = np.einsum("ij,ij->i", windows, windows)
        rows, cols = e[:, 0:4], e[:, 4:8]
        r = rows.argmax(axis=1)
        c = cols.argmax(axis=1)
        idx = np.arange(len(e))
        er, ec = rows[idx, r], cols[idx, c]
        rows_sorted, cols_sorted = np.sort(rows, axis=1), np.sort(cols, axis=1)
        ok = (
            (er >= self._min_amp2)
            & (ec >= self._min_amp2)
            & (er < ec * _NORMAL_TWIST)
            & (ec < er * _REVERSE_TWIST)
            & (er + ec >= _TO_TOTAL * total)
            & (rows_sorted[:, -2] * _RELATIVE_PEAK <= er)
            & (cols_sorted[:, -2] * _RELATIVE_PEAK <= ec)
            & (e[idx, 12 + c] <= _HARMONIC * ec)
            & (self._harmonic_masked[r, c] | (e[idx, 8 + r] <= _HARMONIC * er))
        )
        amp = np.sqrt(er) + np.sqrt(ec)
        return [
            (KEYPAD[r[i]][c[i]], float(amp[i])) if ok[i] else (None, 0.0) for i in range(len(e))
        ]

    def _end_run(self) -> DtmfDigit | None:
        while self._run and self._run[-1] == 0.0:
            self._run.pop()
        digit, run = self._run_digit, self._run
        self._run_digit, self._run, self._run_miss = None, [], 0
        if digit is None or not run:
            return None
        peak = max(run)
        # Windows overlap by half, so each tone sample lies in two windows and the sum of the
        # windows' tone fractions times the hop measures the tone. Windows straddling the tone's
        # edges usually fail the checks (the edge splatters energy); one hop makes up for them.
        duration = (sum(a / peak for a in run) + 1.0) * self._hop_ms
        if duration < self._min_ms:
            return None
        return DtmfDigit(digit, round(duration), self._run_start)

    def process(
        self, pcm: bytes | bytearray | memoryview | npt.NDArray[np.int16]
    ) -> list[DtmfDigit]:
        """Feed audio; returns the digits that ended within it."""
        x = pcm if isinstance(pcm, np.ndarray) else np.frombuffer(pcm, "<i2")
        xf = x.astype(np.float64)
        buf = np.concatenate([self._buf, xf]) if self._buf.size else xf
        hop, block = self._hop, self._block
        nwin = (buf.size - block) // hop + 1 if buf.size >= block else 0
        if nwin <= 0:
            self._buf = buf
            return []
        step = buf.strides[0]
        windows = as_strided(buf, shape=(nwin, block), strides=(hop * step, step))
        results = self._classify(windows)
        base = self._pos
        self._pos += nwin * hop
        self._buf = buf[nwin * hop :].copy()
        found: list[DtmfDigit] = []
        for i, (digit, amp) in enumerate(results):
            if self._run_digit is not None:
                if digit == self._run_digit:
                    self._run.append(amp)
                    self._run_miss = 0
                    continue
                self._run_miss += 1
                if self._run_miss == 1 and digit is None:
                    self._run.append(0.0)  # tolerate one dropped window
                    continue
                d = self._end_run()
                if d is not None:
                    found.append(d)
            if digit is not None:
                self._run_digit, self._run, self._run_miss = digit, [amp], 0
                self._run_start = base + i * hop
        return found

    def flush(self) -> list[DtmfDigit]:
        """End the stream: report a tone still in progress."""
        d = self._end_run()
        self._buf = np.zeros(0, np.float64)
        return [d] if d is not None else []
