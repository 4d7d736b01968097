"""Packet loss concealment and pitch-synchronous time stretching for 16-bit mono PCM.

:class:`Concealer` follows ITU-T G.711 Appendix I, generalised to any sample rate:

* **Pitch repetition.** At the start of an erasure the pitch period P (2.5-15 ms, i.e. 66-400 Hz)
  is found by normalised cross-correlation of the last 20 ms of history against itself, and
  the last P samples are repeated. Repetition starts at a pitch-aligned point, so the joint with
  the real signal is smooth for voiced speech. After 10 ms the repeated buffer grows to 2 periods
  and after 20 ms to 3 (less "buzz"), always continuing from the same absolute position so there
  is no jump.
* **Fade-out.** Full level for the first 10 ms, then a linear fade to nothing over
  ``fade_ms`` (default 50 ms), so a long gap does not turn into a drone.
* **Comfort noise.** As the repetition fades, noise at the background level fades in (the
  noise floor is tracked from the quietest recent real frames, capped at -50 dBFS), gently
  low-pass shaped. Long gaps therefore sound like the line, not like dead air.
* **Merge.** When real audio returns, it is cross-faded with the continuing synthetic signal over
  5 ms (10 ms after an erasure longer than 20 ms).

:func:`compress` and :func:`expand` remove or insert one pitch period with a cross-fade (the
"accelerate" / "preemptive expand" operations of WebRTC's NetEQ); the jitter buffer uses them to
move its delay without audible jumps.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.errors import AudioError

__all__ = ["Concealer", "compress", "expand", "find_pitch"]

F64 = npt.NDArray[np.float64]
I16 = npt.NDArray[np.int16]

_MIN_PITCH_MS: Final = 2.5
_MAX_PITCH_MS: Final = 15.0
_CORR_MS: Final = 20.0  # correlation window for the pitch search
_NOISE_CAP: Final = 32768.0 * 10 ** (-50 / 20)  # comfort-noise RMS ceiling (-50 dBFS)
_VOICED: Final = 0.5  # normalised correlation above which stretching is considered safe


def find_pitch(x: F64, sample_rate: int) -> tuple[int, float]:
    """Best pitch period (in samples) at the end of ``x`` and its normalised correlation.

    Compares the last 20 ms with the 20 ms ending P samples earlier for every P in 2.5-15 ms
    (FFT-based), and returns the shortest P that is a local maximum of the normalised
    correlation within 0.05 of the best (so a multiple of the period does not win over it).
    With less than 35 ms of input the search is limited to half the input (a 20 ms frame:
    periods up to 10 ms, compared over 10 ms); under 10 ms it returns correlation 0.
    """
    lo = max(2, round(sample_rate * _MIN_PITCH_MS / 1000))
    # short input (a lone 20 ms frame): search up to half of it, compare what is left
    hi = min(round(sample_rate * _MAX_PITCH_MS / 1000), x.size // 2)
    win = min(round(sample_rate * _CORR_MS / 1000), x.size - hi)
    if hi < 2 * lo or win < lo:
        return lo, 0.0
    seg = x[-(win + hi) :]
    tmpl = seg[hi:]
    size = 1 << (seg.size + win - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(seg, size) * np.conj(np.fft.rfft(tmpl, size)), size)
    # corr[k] = sum_i tmpl[i] * seg[i + k]; lag P compares with seg[hi - P:], i.e. k = hi - P
    lags = np.arange(lo, hi + 1)
    k = hi - lags
    c = corr[k]
    cs = np.concatenate([[0.0], np.cumsum(seg * seg)])
    energy = cs[k + win] - cs[k]
    e0 = float(np.dot(tmpl, tmpl))
    norm = np.sqrt(np.maximum(energy * e0, 1e-9))
    score = c / norm
    # multiples of the period score as well as the period: of the local maxima within 0.05 of
    # the best, take the shortest lag
    peak = np.ones(score.size, bool)
    peak[1:] &= score[1:] >= score[:-1]
    peak[:-1] &= score[:-1] >= score[1:]
    best = int(np.argmax(peak & (score >= float(score.max()) - 0.05)))
    return int(lags[best]), float(score[best])


def _xfade(a: F64, b: F64) -> F64:
    """Raised-cosine cross-fade from ``a`` to ``b`` (same length)."""
    n = a.size
    w = 0.5 - 0.5 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    return a * (1.0 - w) + b * w


def compress(x: F64, sample_rate: int, *, force: bool = False) -> F64:
    """Remove one pitch period from ``x`` (ideally 35 ms or more) with a cross-fade.

    Returns ``x`` unchanged when the signal is not periodic enough to do it inaudibly, unless
    ``force`` is set (then a 10 ms segment is removed anyway).
    """
    p, score = find_pitch(x, sample_rate)
    if score < _VOICED:
        if not force:
            return x
        p = round(sample_rate * 0.010)
    if x.size < 2 * p + 1:
        return x
    s = max(0, (x.size - 2 * p) // 2)
    return np.concatenate([x[:s], _xfade(x[s : s + p], x[s + p : s + 2 * p]), x[s + 2 * p :]])


def expand(x: F64, sample_rate: int) -> F64:
    """Insert one pitch period into ``x`` with a cross-fade (``x`` unchanged if aperiodic)."""
    p, score = find_pitch(x, sample_rate)
    if score < _VOICED or x.size < 2 * p + 1:
        return x
    s = max(0, (x.size - 2 * p) // 2)
    return np.concatenate([x[: s + p], _xfade(x[s + p : s + 2 * p], x[s : s + p]), x[s + p :]])


class Concealer:
    """Stateful loss concealment for one stream.

    Feed every real chunk through :meth:`good` (it returns the chunk, cross-faded if it ends a
    concealment) and ask :meth:`conceal` for ``n`` samples whenever a chunk is missing. Both
    return int16 arrays. Deterministic: the comfort noise comes from a seeded generator.
    """

    __slots__ = (
        "_erased",
        "_fade",
        "_hist",
        "_hist_len",
        "_noise_rms",
        "_pbuf",
        "_period",
        "_pos",
        "_rng",
        "_shape_state",
        "concealed_samples",
        "events",
        "sample_rate",
    )

    def __init__(self, sample_rate: int, *, fade_ms: float = 50.0, seed: int = 0) -> None:
        if sample_rate < 4000:
            raise AudioError(f"sample rate too low for concealment: {sample_rate}")
        self.sample_rate = sample_rate
        self._hist_len = round(sample_rate * (_CORR_MS + 3 * _MAX_PITCH_MS) / 1000)
        self._hist = np.zeros(self._hist_len, np.float64)
        self._fade = max(1, round(sample_rate * fade_ms / 1000))
        self._rng = np.random.default_rng(seed)
        self._noise_rms = 0.0
        self._erased = 0  # samples concealed in the current erasure (0: none)
        self._period = 0
        self._pbuf = np.zeros(0, np.float64)
        self._pos = 0
        self._shape_state = 0.0
        self.concealed_samples = 0
        self.events = 0

    @property
    def concealing(self) -> bool:
        """True while an erasure is in progress (the next :meth:`good` will merge)."""
        return self._erased > 0

    def _remember(self, y: F64) -> None:
        if y.size >= self._hist_len:
            self._hist = y[-self._hist_len :].copy()
        else:
            self._hist = np.concatenate([self._hist[y.size :], y])

    def _track_noise(self, x: F64) -> None:
        """Noise floor: jump down to a quieter frame, creep up slowly (about 1 dB/s)."""
        if x.size == 0:
            return
        rms = math.sqrt(float(np.dot(x, x)) / x.size)
        if self._noise_rms == 0.0 or rms < self._noise_rms:
            self._noise_rms = rms
        else:
            self._noise_rms *= 10 ** (x.size / self.sample_rate / 20)

    def good(self, pcm: I16 | F64) -> I16:
        """Pass a real chunk through; cross-fades it in if it ends a concealment."""
        x = pcm.astype(np.float64)
        if self._erased:
            ms = 10.0 if self._erased > 0.020 * self.sample_rate else 5.0
            n = min(x.size, round(self.sample_rate * ms / 1000))
            syn = self._synth(n)
            x = x.copy()
            x[:n] = _xfade(syn, x[:n])
            self._erased = 0
        else:
            self._track_noise(x)
        self._remember(x)
        return np.clip(np.round(x), -32768, 32767).astype(np.int16)

    def _start(self) -> None:
        sr = self.sample_rate
        self._period, _score = find_pitch(self._hist, sr)
        self._pbuf = self._hist
        self._pos = self._hist.size - self._period  # absolute index into the history
        self.events += 1

    def _periods(self) -> int:
        ten_ms = self.sample_rate // 100
        return 1 if self._erased < ten_ms else (2 if self._erased < 2 * ten_ms else 3)

    def _synth(self, n: int) -> F64:
        """n samples of the repeated pitch buffer, with the fade-out and comfort noise."""
        out = np.empty(n, np.float64)
        end = self._pbuf.size
        i = 0
        while i < n:
            length = self._periods() * self._period
            begin = end - length
            if self._pos < begin:  # pragma: no cover - positions only move forward
                self._pos = begin
            take = min(n - i, end - self._pos)
            out[i : i + take] = self._pbuf[self._pos : self._pos + take]
            i += take
            self._pos += take
            if self._pos >= end:
                self._pos = end - self._periods() * self._period
        # gain: flat for 10 ms, then linear to zero over fade samples
        start = self._erased
        t = np.arange(start, start + n) - self.sample_rate // 100
        gain = np.clip(1.0 - t / self._fade, 0.0, 1.0)
        noise = self._comfort_noise(n)
        return out * gain + noise * (1.0 - gain)

    def _comfort_noise(self, n: int) -> F64:
        rms = min(self._noise_rms, _NOISE_CAP)
        if rms <= 0.5:
            return np.zeros(n, np.float64)
        w = self._rng.standard_normal(n + 1)
        w[0] = self._shape_state
        self._shape_state = float(w[-1])
        shaped = (w[1:] + 0.5 * w[:-1]) / math.sqrt(1.25)  # gentle low-pass, unit variance
        return shaped * rms

    def conceal(self, n: int) -> I16:
        """``n`` samples to play in place of missing audio."""
        if n <= 0:
            return np.zeros(0, np.int16)
        if not self._erased:
            self._start()
        y = self._synth(n)
        self._erased += n
        self.concealed_samples += n
        self._remember(y)  # the pitch buffer stays the pre-erasure history
        return np.clip(np.round(y), -32768, 32767).astype(np.int16)

    def reset(self) -> None:
        """Forget the history (a new stream)."""
        self._hist[:] = 0
        self._erased = 0
        self._period = 0
        self._noise_rms = 0.0
