"""Streaming sample-rate conversion and rechunking into exact frames.

:class:`Resampler` converts a stream of 16-bit mono PCM between rates, carrying filter state across
calls, so a stream cut into 20 ms frames comes out exactly as if it had been converted in one
piece: no clicks at frame boundaries. Two engines:

``"fir"`` (the default for every pair of 8, 16, 22.05, 24, 32, 44.1 and 48 kHz)
    A polyphase Kaiser-windowed-sinc FIR for the rational ratio L/M, evaluated as one BLAS
    matrix product per call: the input is cut into blocks of ``q*M`` samples, each block's
    overlapping window (block + ``taps - 1`` samples of history) is one row, and a precomputed
    ``(window x q*L)`` matrix maps a row to ``q*L`` output samples. A 20 ms frame in gives a
    20 ms frame out, every time (the output is steady, never bursty), with a group delay of
    about 2 ms at 8<->16 kHz. Each polyphase branch is normalised to unity DC gain.
``"soxr"``
    soxr's ``ResampleStream`` (int16), for arbitrary rates. On this machine it costs 5-8 µs a
    call on a 20 ms frame, and at ``MQ``/``HQ`` it emits output in ~100 ms bursts (its FFT
    block size), so a steady 20 ms cadence needs a :class:`Rechunker` and adds latency; ``QQ``
    is steady but is a cubic interpolator with no anti-alias filter. See docs/audio.md.

Rounding: the FIR produces ``2*y`` in float32 (the factor is folded into the coefficients);
``trunc(2*y)`` indexes a table that rounds half away from zero and clips to int16, so the float to
int16 step is two numpy calls. :mod:`harken.audio.transcode` reuses the same index to encode
G.711 straight from the filter output.

:class:`Rechunker` turns PCM of any length into exact frames (20 ms by default).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

from harken.errors import AudioError

__all__ = [
    "QUALITIES",
    "ROUND_TABLE",
    "Rechunker",
    "Resampler",
    "frame_samples",
    "resample",
]

Quality = Literal["fast", "voice", "high"]
Engine = Literal["auto", "fir", "soxr"]

# quality -> (stopband attenuation dB, passband edge, stopband edge), edges as fractions of the
# lower of the two rates. "voice" keeps 0-3.4 kHz flat at 8 kHz and lets the 3.4-4.6 kHz
# transition band fold into 3.4-4 kHz (outside the telephone band); "high" stops at Nyquist.
QUALITIES: Final[dict[str, tuple[float, float, float]]] = {
    "fast": (55.0, 0.40, 0.60),
    "voice": (70.0, 0.425, 0.575),
    "high": (90.0, 0.45, 0.50),
}
_SOXR_QUALITY: Final = {"fast": "LQ", "voice": "MQ", "high": "HQ"}
_MAX_PHASES: Final = 512  # L or M above this: use soxr
_MIN_RATE: Final = 1000
_MAX_RATE: Final = 384000
_I16: Final = np.dtype("<i2")
_F32: Final = np.dtype(np.float32)

_ROUND_BITS: Final = 19
_ROUND_SIZE: Final = 1 << _ROUND_BITS


def _round_table() -> npt.NDArray[np.int16]:
    """``ROUND_TABLE[j mod 2**19]`` = int16 value of ``y`` where ``j = trunc(2*y)``.

    For ``j >= 0``, ``y`` is in ``[j/2, (j+1)/2)`` and rounds (half away from zero) to
    ``(j+1) >> 1``; for ``j < 0``, ``y`` is in ``((j-1)/2, j/2]`` and rounds to ``j >> 1``.
    The result is clipped to int16. Valid while ``|y| < 131072``: a branch can have a gain of up
    to ~2 on adversarial input (sum of |h|), so int16 input needs more than 2**17 entries.
    """
    j = np.arange(_ROUND_SIZE, dtype=np.int64)
    j = np.where(j >= _ROUND_SIZE // 2, j - _ROUND_SIZE, j)
    v = np.where(j >= 0, (j + 1) >> 1, j >> 1)
    out = np.clip(v, -32768, 32767).astype(np.int16)
    out.flags.writeable = False
    return out


ROUND_TABLE: Final = _round_table()
_ROUND = ROUND_TABLE


def frame_samples(sample_rate: int, frame_ms: float = 20) -> int:
    """Samples in one frame; raises :class:`AudioError` unless it is a whole number."""
    n = sample_rate * frame_ms / 1000
    if n <= 0 or n != int(n):
        raise AudioError(f"{frame_ms} ms at {sample_rate} Hz is not a whole number of samples")
    return int(n)


def _check_rate(rate: int) -> int:
    if not isinstance(rate, int) or isinstance(rate, bool):
        raise AudioError(f"sample rate must be an int, got {rate!r}")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise AudioError(f"sample rate {rate} Hz is outside {_MIN_RATE}-{_MAX_RATE} Hz")
    return rate


def _kaiser_beta(atten_db: float) -> float:
    if atten_db > 50:
        return 0.1102 * (atten_db - 8.7)
    if atten_db >= 21:
        return float(0.5842 * (atten_db - 21) ** 0.4 + 0.07886 * (atten_db - 21))
    return 0.0


def _block_factor(in_rate: int, up: int, down: int, taps: int) -> int:
    """Choose q (blocks of q*down inputs -> q*up outputs) for the cheapest 20 ms frame.

    A rough cost model of one frame, in multiply-adds: every block costs its window times its
    outputs (the matrix product, zeros included), plus copying the window, plus a fixed
    overhead per row. q must divide the 20 ms frame so that frames never leave a remainder.
    """
    frame = in_rate // 50 if in_rate % 50 == 0 else None
    best_q, best_cost = 1, math.inf
    for q in range(1, 513):
        b_in = q * down
        if frame is not None and frame % b_in:
            continue
        if frame is not None and b_in > frame:
            break
        window = b_in + taps - 1
        blocks = (frame or 320) / b_in
        cost = blocks * (window * q * up + 8 * window + 300)
        if cost < best_cost:
            best_q, best_cost = q, cost
    return best_q


class _Kernel:
    """A designed polyphase filter laid out as a block matrix (immutable, shared by streams)."""

    __slots__ = ("b_in", "b_out", "delay_in", "hist", "matrix", "taps", "window")

    def __init__(self, in_rate: int, up: int, down: int, quality: str) -> None:
        atten, pass_frac, stop_frac = QUALITIES[quality]
        base = min(in_rate, in_rate * up / down)
        fs = in_rate * up  # the rate of the (virtual) zero-stuffed signal
        pass_hz, stop_hz = pass_frac * base, stop_frac * base
        dw = 2 * math.pi * (stop_hz - pass_hz) / fs
        n = math.ceil((atten - 7.95) / (2.285 * dw)) + 1
        # Odd length with (n - 1) / 2 a multiple of ``down``: the group delay is then a whole
        # number of output samples, so one-shot conversion can remove it exactly.
        n = math.ceil((n - 1) / (2 * down)) * 2 * down + 1
        taps = math.ceil(n / up)  # taps per polyphase branch
        cutoff = (pass_hz + stop_hz) / 2 / fs
        t = np.arange(n) - (n - 1) / 2
        h = np.zeros(taps * up)
        h[:n] = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n, _kaiser_beta(atten))
        # branch p holds h[p], h[p+L], ...; normalise each to unity DC gain (gain L overall)
        branches = h.reshape(taps, up).T.copy()
        branches /= branches.sum(axis=1, keepdims=True)
        worst = float(np.abs(branches).sum(axis=1).max())
        if worst >= 3.99:  # pragma: no cover - a design that could overflow the round table
            raise AudioError(f"resampler design overflows ({worst:.2f})")
        q = _block_factor(in_rate, up, down, taps)
        b_in, b_out = q * down, q * up
        window = b_in + taps - 1
        matrix = np.zeros((window, b_out), dtype=np.float64)
        for r in range(b_out):
            nk, p = divmod(r * down, up)
            for i in range(taps):
                matrix[nk + taps - 1 - i, r] = branches[p, i]
        self.matrix = (2.0 * matrix).astype(np.float32)  # x2: see ROUND_TABLE
        self.matrix.flags.writeable = False
        self.taps = taps
        self.b_in, self.b_out, self.window, self.hist = b_in, b_out, window, taps - 1
        self.delay_in = (n - 1) / 2 / up  # group delay in input samples (whole output samples)


@lru_cache(maxsize=64)
def _kernel(in_rate: int, up: int, down: int, quality: str) -> _Kernel:
    return _Kernel(in_rate, up, down, quality)


class _FirStream:
    """State of one FIR stream: a float32 delay line with precomputed overlapping-window views.

    ``claim(n)`` reserves room for the next ``n`` input samples and returns the slot to write them
    into plus the window rows that become complete once they are written (or None). Multiplying
    those rows by ``matrix`` gives ``2*y`` for ``rows * b_out`` output samples. When chunks are
    the expected frame size the slot and rows come from a precomputed list (no slicing), and the
    history is moved back to the start of the buffer once every few frames instead of every call.
    """

    __slots__ = (
        "_b_in",
        "_buf",
        "_cap",
        "_fast",
        "_fill",
        "_fn",
        "_hist",
        "_k",
        "_start",
        "_views",
        "matrix",
        "max_chunk",
    )

    def __init__(self, kernel: _Kernel, frame_n: int) -> None:
        self._k = kernel
        self.matrix = kernel.matrix
        b_in, hist = kernel.b_in, kernel.hist
        self._b_in, self._hist = b_in, hist
        frame_blocks = max(1, math.ceil(frame_n / b_in))
        blocks = max(16, 8 * frame_blocks)
        self._cap = hist + blocks * b_in
        self._buf = np.zeros(self._cap, dtype=_F32)
        step = self._buf.strides[0]
        self._views = as_strided(
            self._buf, shape=(blocks, kernel.window), strides=(b_in * step, step)
        )
        self._views.flags.writeable = False
        self._start = 0  # first history sample; always a multiple of b_in
        self._fill = hist  # one past the last sample written
        self.max_chunk = (blocks - 1) * b_in  # the most one claim() can take
        # fast path: chunks of exactly one frame, aligned on frame boundaries
        self._fn = frame_n if frame_n > 0 and frame_n % b_in == 0 else -1
        self._fast: list[tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = []
        if self._fn > 0:
            nb = frame_n // b_in
            for i in range((self._cap - hist) // frame_n):
                s = i * frame_n
                slot = self._buf[s + hist : s + hist + frame_n]
                self._fast.append((slot, self._views[i * nb : (i + 1) * nb]))

    def claim(self, n: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Reserve ``n <= max_chunk`` input samples: (slot to fill, complete window rows)."""
        start, fill = self._start, self._fill
        if fill + n > self._cap:
            keep = fill - start
            self._buf[:keep] = self._buf[start:fill]
            start, fill = 0, keep
        if n == self._fn and fill - start == self._hist and start % n == 0:
            self._start, self._fill = start + n, fill + n
            return self._fast[start // n]
        slot = self._buf[fill : fill + n]
        fill += n
        blocks = (fill - start - self._hist) // self._b_in
        rows = None
        if blocks > 0:
            s = start // self._b_in
            rows = self._views[s : s + blocks]
            start += blocks * self._b_in
        self._start, self._fill = start, fill
        return slot, rows

    def feed(self, x: npt.NDArray[np.int16] | npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Feed any number of samples; return ``2*y`` for every output completed, flattened."""
        parts: list[npt.NDArray[np.float32]] = []
        step = self.max_chunk
        for i in range(0, len(x), step):
            piece = x[i : i + step]
            slot, rows = self.claim(len(piece))
            slot[...] = piece
            if rows is not None:
                parts.append(rows.dot(self.matrix).reshape(-1))
        if not parts:
            return np.empty(0, _F32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def reset(self) -> None:
        self._buf[:] = 0
        self._start, self._fill = 0, self._hist


class Resampler:
    """Stateful 16-bit mono resampler for a stream of chunks (typically 20 ms frames).

    ``process`` takes little-endian int16 bytes and returns the output available so far;
    ``process_array`` does the same on int16 arrays. With the FIR engine a chunk that is a whole
    number of blocks (every 10 or 20 ms frame at the rates above) is converted completely and
    at once; a ragged chunk leaves less than one block (under 1 ms for 8/16/24/48 kHz, one 20 ms
    frame for 22.05 kHz pairs) waiting for the next call.
    """

    __slots__ = ("_fir", "_in_count", "_out_count", "_soxr", "engine", "in_rate", "out_rate")

    def __init__(
        self,
        in_rate: int,
        out_rate: int,
        *,
        quality: str = "voice",
        engine: Engine = "auto",
        chunk_hint: int | None = None,
    ) -> None:
        self.in_rate = _check_rate(in_rate)
        self.out_rate = _check_rate(out_rate)
        ratio = Fraction(out_rate, in_rate)
        up, down = ratio.numerator, ratio.denominator
        self._fir: _FirStream | None = None
        self._soxr: object | None = None
        self._in_count = 0
        self._out_count = 0
        if engine not in ("auto", "fir", "soxr"):
            raise AudioError(f"unknown resampler engine {engine!r}")
        if in_rate == out_rate:
            self.engine = "passthrough"
            return
        if engine == "auto":
            engine = "fir" if max(up, down) <= _MAX_PHASES and quality in QUALITIES else "soxr"
        if engine == "fir":
            if quality not in QUALITIES:
                raise AudioError(f"unknown quality {quality!r} (one of {sorted(QUALITIES)})")
            hint = chunk_hint if chunk_hint is not None else max(1, in_rate // 50)
            self._fir = _FirStream(_kernel(in_rate, up, down, quality), hint)
        else:
            import soxr  # lazy: only the soxr engine needs it

            sq = _SOXR_QUALITY.get(quality, quality)
            if sq not in ("QQ", "LQ", "MQ", "HQ", "VHQ"):
                raise AudioError(f"unknown quality {quality!r} for soxr")
            self._soxr = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=sq)
        self.engine = engine

    @property
    def delay_s(self) -> float:
        """Algorithmic delay (group delay of the filter) in seconds; soxr reports its own."""
        if self._fir is not None:
            return self._fir._k.delay_in / self.in_rate
        if self._soxr is not None:
            return float(self._soxr.delay()) / self.out_rate  # type: ignore[attr-defined]
        return 0.0

    def process(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Convert a chunk of int16 little-endian PCM; returns the output ready so far."""
        if len(pcm) & 1:
            raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        fir = self._fir
        if fir is not None and len(pcm) <= 2 * fir.max_chunk:
            # the hot path: one write, one matrix product, one table lookup
            slot, rows = fir.claim(len(pcm) >> 1)
            slot[...] = np.frombuffer(pcm, _I16)
            if rows is None:
                return b""
            j = rows.dot(fir.matrix).astype(np.intp)
            return bytes(_ROUND.take(j, None, None, "wrap").tobytes())
        return self.process_array(np.frombuffer(pcm, _I16)).tobytes()

    def process_array(self, x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Convert a chunk of int16 samples; returns the output ready so far."""
        if x.dtype != np.int16 or x.ndim != 1:
            raise AudioError(f"expected a 1-D int16 array, got {x.dtype} {x.shape}")
        if self._fir is not None:
            return _ROUND.take(self._fir.feed(x).astype(np.intp), None, None, "wrap")
        if self._soxr is not None:
            out: npt.NDArray[np.int16] = self._soxr.resample_chunk(x)  # type: ignore[attr-defined]
            return out
        return x.copy()

    def flush(self) -> bytes:
        """Drain the filter's delay line (the last ``delay_s`` of audio) and reset the stream."""
        if self._fir is not None:
            k = self._fir._k
            pad = math.ceil(k.delay_in) + k.b_in
            tail = self.process_array(np.zeros(pad, np.int16))
            self.reset()
            return tail.tobytes()
        if self._soxr is not None:
            out = self._soxr.resample_chunk(np.zeros(0, np.int16), last=True)  # type: ignore[attr-defined]
            self.reset()
            return bytes(out.tobytes())
        return b""

    def reset(self) -> None:
        """Forget all state: the next chunk starts a new stream."""
        if self._fir is not None:
            self._fir.reset()
        if self._soxr is not None:
            self._soxr.clear()  # type: ignore[attr-defined]


def resample(pcm: bytes, in_rate: int, out_rate: int, *, quality: str = "voice") -> bytes:
    """One-shot conversion of a whole buffer (delay compensated, same length ratio)."""
    r = Resampler(in_rate, out_rate, quality=quality)
    if r.engine == "passthrough":
        return bytes(pcm)
    x = np.frombuffer(pcm, _I16)
    want = math.floor(len(x) * out_rate / in_rate)
    body = r.process_array(x)
    tail = np.frombuffer(r.flush(), _I16)
    y = np.concatenate([body, tail])
    skip = round(r.delay_s * out_rate) if r.engine == "fir" else 0
    y = y[skip : skip + want]
    if len(y) < want:
        y = np.concatenate([y, np.zeros(want - len(y), np.int16)])
    return y.tobytes()


class Rechunker:
    """Cuts PCM of any length into frames of exactly ``frame_bytes`` bytes.

    ``push`` returns the complete frames now available (often none or one); the remainder waits.
    ``flush`` returns the last partial frame, zero-padded to full length (or ``b""``).
    """

    __slots__ = ("_buf", "frame_bytes")

    def __init__(self, sample_rate: int, frame_ms: float = 20, *, sample_width: int = 2) -> None:
        self.frame_bytes = frame_samples(sample_rate, frame_ms) * sample_width
        self._buf = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Bytes waiting for the next frame."""
        return len(self._buf)

    def push(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add data; return the complete frames."""
        fb = self.frame_bytes
        buf = self._buf
        if not buf and len(data) == fb:
            return [bytes(data)]
        buf += data
        n = len(buf) // fb
        if n == 0:
            return []
        view = memoryview(buf)
        frames = [bytes(view[i * fb : (i + 1) * fb]) for i in range(n)]
        view.release()
        del buf[: n * fb]
        return frames

    def flush(self, pad: bool = True) -> bytes:
        """The partial frame left over (zero-padded to a full frame when ``pad``), then empty."""
        if not self._buf:
            return b""
        out = bytes(self._buf)
        self._buf.clear()
        if pad:
            out += bytes(self.frame_bytes - len(out))
        return out

    def clear(self) -> None:
        """Drop the pending partial frame."""
        self._buf.clear()
