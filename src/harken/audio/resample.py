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
    about 2 ms at 8<->16 kHz. Each polyphase branch is normalised to unity DC gain. The delay
    line keeps the raw int16 input; a 20 ms frame is a byte copy plus five numpy calls into
    arrays preallocated per stream (see :class:`_FirStream`), about 3.5 µs at 8<->16 kHz here.
``"soxr"``
    soxr's ``ResampleStream`` (int16), for arbitrary rates. On this machine it costs 3.5-8 µs a
    call on a 20 ms frame, and at ``MQ``/``HQ`` it emits output in ~100 ms bursts (its FFT
    block size), so a steady 20 ms cadence needs a :class:`Rechunker` and adds latency; ``QQ``
    is steady but is a cubic interpolator with no anti-alias filter. See docs/audio.md.

Rounding: the FIR produces ``2*y`` in float32 (the factor is folded into the coefficients);
``trunc(2*y)`` indexes a table that rounds half away from zero and clips to int16, so the float to
int16 step is two numpy calls (a converting assignment into a preallocated intp array, then a
``take``). :mod:`harken.audio.transcode` reuses the same index to encode G.711 straight from the
filter output.

:class:`Rechunker` turns PCM of any length into exact frames (20 ms by default).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import lru_cache
from typing import Any, Final, Literal

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
_U8: Final = np.dtype(np.uint8)

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

    A rough cost model of one frame, in multiply-adds, fitted to timings of every pair of 8, 16,
    24 and 48 kHz on this machine (the chosen q is within 0.1 µs of the best one measured): every
    block costs its window times its outputs (the matrix product, zeros included), plus gathering
    the window (a converting copy), plus a fixed overhead per row; a row whose output count is
    not a multiple of 8 (one AVX register of float32) costs 15% more in the BLAS kernel. q must
    divide the 20 ms frame so that frames never leave a remainder.
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
        cost = blocks * (window * q * up + 2 * window + 300)
        if (q * up) % 8:
            cost *= 1.15
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


_Slot = tuple[
    memoryview,  # where the frame's bytes go (the delay line, as raw bytes)
    npt.NDArray[Any],  # the same samples as an array (for feed())
    npt.NDArray[Any],  # the frame's windows: a strided view of the delay line
    npt.NDArray[np.float32],  # rows: the windows gathered, contiguous
    npt.NDArray[np.float32],  # rows @ matrix = 2*y
    npt.NDArray[np.intp],  # trunc(2*y)
    npt.NDArray[Any],  # table[trunc(2*y)]: the output
]


class _FirStream:
    """State of one FIR stream: a delay line of raw input samples and preallocated work arrays.

    The delay line holds the input as it arrives (int16 PCM, or G.711 code bytes when ``lut``
    maps codes to samples), so writing a frame is a plain byte copy. A frame then costs five
    numpy calls, all into preallocated arrays:

    1. gather the windows of its blocks (block + ``taps - 1`` samples of history, a strided view
       of the delay line) into a contiguous float32 ``rows`` array: a converting copy, or for
       codes one ``take`` through ``lut``, which decodes and gathers at once;
    2. ``rows @ matrix`` gives ``2*y`` (BLAS; ``rows`` is contiguous, so numpy makes no copy of
       its own, which it does for an overlapping strided view);
    3. ``trunc(2*y)`` as intp (a converting assignment);
    4. ``table[trunc(2*y)]``: :data:`ROUND_TABLE` (round half away from zero, clip to int16), or
       a G.711 encode table folded with it;
    5. ``tobytes``.

    Chunks of exactly one frame (``frame_n`` samples), arriving with no partial block pending,
    take the fast path: each of the ``K`` frame positions along the delay line has its write slot,
    window view and work arrays prepared at construction, and the history is moved back to the
    start of the line once every ``K`` frames. Anything else takes the general path, which
    shares the same delay line, so the two mix freely.
    """

    __slots__ = (
        "_b_in",
        "_cap",
        "_fast",
        "_fbytes",
        "_fill",
        "_fn",
        "_hist",
        "_k",
        "_line",
        "_lut",
        "_pos",
        "_start",
        "_table",
        "_window",
        "_zero_end",
        "matrix",
        "max_chunk",
    )

    def __init__(
        self,
        kernel: _Kernel,
        frame_n: int,
        table: npt.NDArray[Any] = ROUND_TABLE,
        lut: npt.NDArray[np.float32] | None = None,
    ) -> None:
        self._k = kernel
        self.matrix = kernel.matrix
        self._table = table
        self._lut = lut
        b_in, hist, window = kernel.b_in, kernel.hist, kernel.window
        self._b_in, self._hist, self._window = b_in, hist, window
        frame_blocks = max(1, math.ceil(frame_n / b_in))
        blocks = max(16, 16 * frame_blocks)
        self._cap = hist + blocks * b_in
        line: npt.NDArray[Any] = np.zeros(self._cap, _U8 if lut is not None else _I16)
        self._line = line
        self._start = 0  # first history sample; always a multiple of b_in
        self._fill = hist  # one past the last sample written
        self.max_chunk = (blocks - 1) * b_in  # the most one piece of the general path takes
        fn = frame_n if frame_n > 0 and frame_n % b_in == 0 else -1
        self._fn = fn
        self._fbytes = fn * line.itemsize if fn > 0 else -1
        self._fast: list[_Slot] = []
        if fn > 0:
            nb, b_out, isz = fn // b_in, kernel.b_out, line.itemsize
            rows = np.zeros((nb, window), _F32)
            y = np.zeros((nb, b_out), _F32)
            j = np.zeros((nb, b_out), np.intp)
            out = np.zeros((nb, b_out), table.dtype)
            raw = memoryview(line.data).cast("B")
            slots = (self._cap - hist) // fn
            windows = as_strided(
                line, shape=(slots, nb, window), strides=(fn * isz, b_in * isz, isz)
            )
            windows.flags.writeable = False
            for i in range(slots):
                s = i * fn + hist
                write = raw[s * isz : (s + fn) * isz]
                self._fast.append((write, line[s : s + fn], windows[i], rows, y, j, out))
        # A delay line of codes cannot hold silence (A-law has no code for 0), so at the start
        # of a stream the history positions below _zero_end are zeroed in the gathered windows,
        # on the general path, until the stream has moved past them.
        self._zero_end = hist if lut is not None else 0
        self._pos = 0 if fn > 0 and not self._zero_end else -1  # next fast slot, or -1

    def push(self, data: bytes | bytearray | memoryview) -> bytes:
        """Raw input bytes in; the table's output for every sample completed, as bytes."""
        k = self._pos
        if k >= 0 and len(data) == self._fbytes:
            write, _, src, rows, y, j, out = self._fast[k]
            try:
                write[:] = data
            except (TypeError, ValueError):  # a memoryview of another format: general path
                pass
            else:
                lut = self._lut
                if lut is None:
                    rows[...] = src
                else:
                    lut.take(src, None, rows, "clip")
                rows.dot(self.matrix, y)
                j[...] = y
                self._table.take(j, None, out, "wrap")
                k += 1
                self._pos = k if k < len(self._fast) else self._rewind()
                return out.tobytes()
        return self.feed(np.frombuffer(data, self._line.dtype)).tobytes()

    def feed(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Samples in (the delay line's dtype); a new array of the table's output out."""
        k = self._pos
        if k >= 0 and len(x) == self._fn:
            _, slot, src, rows, y, j, out = self._fast[k]
            slot[...] = x
            if self._lut is None:
                rows[...] = src
            else:
                self._lut.take(src, None, rows, "clip")
            rows.dot(self.matrix, y)
            j[...] = y
            self._table.take(j, None, out, "wrap")
            k += 1
            self._pos = k if k < len(self._fast) else self._rewind()
            return out.reshape(-1).copy()
        return self._feed_general(x)

    def _rewind(self) -> int:
        """Move the history back to the start of the line after the last fast slot."""
        hist, end = self._hist, len(self._fast) * self._fn
        self._line[:hist] = self._line[end : end + hist]
        return 0

    def _feed_general(self, x: npt.NDArray[Any]) -> npt.NDArray[Any]:
        if self._pos >= 0:  # coming off the fast path: its position becomes start/fill
            self._start = self._pos * self._fn
            self._fill = self._start + self._hist
        parts = []
        line, hist, b_in, window = self._line, self._hist, self._b_in, self._window
        isz = line.itemsize
        for i in range(0, len(x), self.max_chunk):
            piece = x[i : i + self.max_chunk]
            n = len(piece)
            start, fill = self._start, self._fill
            if fill + n > self._cap:
                keep = fill - start
                line[:keep] = line[start:fill]
                self._zero_end = max(0, self._zero_end - start)
                start, fill = 0, keep
            line[fill : fill + n] = piece
            fill += n
            blocks = (fill - start - hist) // b_in
            if blocks > 0:
                src = as_strided(line[start:], shape=(blocks, window), strides=(b_in * isz, isz))
                if self._lut is None:
                    rows = src.astype(_F32)
                else:
                    rows = self._lut.take(src.astype(np.intp))
                    for r in range(blocks):  # history from before the stream began: silence
                        m = self._zero_end - start - r * b_in
                        if m <= 0:
                            break
                        rows[r, :m] = 0.0
                y = rows.dot(self.matrix)
                parts.append(self._table.take(y.astype(np.intp), None, None, "wrap").reshape(-1))
                start += blocks * b_in
            self._start, self._fill = start, fill
        fn, start = self._fn, self._start
        if self._zero_end <= start:
            self._zero_end = 0
        aligned = fn > 0 and self._fill - start == hist and start % fn == 0 and not self._zero_end
        self._pos = start // fn if aligned and start // fn < len(self._fast) else -1
        if not parts:
            return np.empty(0, self._table.dtype)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def reset(self) -> None:
        self._line[:] = 0
        self._start, self._fill = 0, self._hist
        self._zero_end = self._hist if self._lut is not None else 0
        self._pos = 0 if self._fn > 0 and not self._zero_end else -1


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
        if fir is not None:
            return fir.push(pcm)
        return self.process_array(np.frombuffer(pcm, _I16)).tobytes()

    def process_array(self, x: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Convert a chunk of int16 samples; returns the output ready so far."""
        if x.dtype != np.int16 or x.ndim != 1:
            raise AudioError(f"expected a 1-D int16 array, got {x.dtype} {x.shape}")
        if self._fir is not None:
            fir_out: npt.NDArray[np.int16] = self._fir.feed(x)
            return fir_out
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
