"""Levels in dBFS and silence helpers for 16-bit PCM.

Convention: ``dBFS = 20*log10(rms / 32768)``, i.e. relative to a full-scale *square* wave, so a
full-scale sine reads -3.01 dBFS. Digital silence reads :data:`SILENCE_DBFS` (not -inf), which
keeps comparisons and JSON simple.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.audio.resample import frame_samples
from harken.errors import AudioError

__all__ = [
    "SILENCE_DBFS",
    "LevelMeter",
    "dbfs_to_amplitude",
    "is_silent",
    "peak_dbfs",
    "rms_dbfs",
    "silence",
]

SILENCE_DBFS: Final = -120.0
_FULL_SCALE: Final = 32768.0
_I16: Final = np.dtype("<i2")

Pcm = bytes | bytearray | memoryview | npt.NDArray[np.int16]


def _samples(pcm: Pcm) -> npt.NDArray[np.int16]:
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16:
            raise AudioError(f"expected int16 samples, got {pcm.dtype}")
        return pcm
    if len(pcm) % 2:
        raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, _I16)


def _to_db(power: float) -> float:
    if power <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(power / (_FULL_SCALE * _FULL_SCALE)))


def rms_dbfs(pcm: Pcm) -> float:
    """RMS level of the samples in dBFS (``SILENCE_DBFS`` for empty or all-zero input)."""
    x = _samples(pcm)
    if x.size == 0:
        return SILENCE_DBFS
    xf = x.astype(np.float64)
    return _to_db(float(np.dot(xf, xf)) / x.size)


def peak_dbfs(pcm: Pcm) -> float:
    """Peak absolute sample in dBFS (-32768 reads 0 dBFS)."""
    x = _samples(pcm)
    if x.size == 0:
        return SILENCE_DBFS
    peak = max(-int(x.min()), int(x.max()))
    return _to_db(float(peak) * peak)


def dbfs_to_amplitude(dbfs: float) -> float:
    """Linear RMS amplitude (in int16 units) of a level in dBFS."""
    return float(_FULL_SCALE * 10.0 ** (dbfs / 20.0))


def is_silent(pcm: Pcm, threshold_dbfs: float = -50.0) -> bool:
    """True when the RMS level is below ``threshold_dbfs``."""
    return rms_dbfs(pcm) < threshold_dbfs


@lru_cache(maxsize=32)
def silence(sample_rate: int, duration_ms: float = 20) -> bytes:
    """Digital silence (int16 zeros) of the given duration; cached, so cheap on the hot path."""
    return bytes(2 * frame_samples(sample_rate, duration_ms))


class LevelMeter:
    """A smoothed level meter: fast attack, slow release, plus a running noise-floor estimate.

    ``update(frame)`` returns the smoothed level in dBFS. ``noise_floor_dbfs`` follows the
    quietest recent frames (it rises slowly and falls at once), which is what comfort noise and
    silence thresholds want.
    """

    __slots__ = ("_attack", "_floor_rise", "_release", "level_dbfs", "noise_floor_dbfs", "peak")

    def __init__(
        self,
        *,
        attack: float = 0.5,
        release: float = 0.05,
        floor_rise_db: float = 0.05,
    ) -> None:
        if not (0 < attack <= 1 and 0 < release <= 1):
            raise AudioError("attack and release must be in (0, 1]")
        self._attack = attack
        self._release = release
        self._floor_rise = floor_rise_db
        self.level_dbfs = SILENCE_DBFS
        self.noise_floor_dbfs = SILENCE_DBFS
        self.peak = SILENCE_DBFS

    def update(self, pcm: Pcm) -> float:
        """Feed one frame; return the smoothed RMS level in dBFS."""
        db = rms_dbfs(pcm)
        coef = self._attack if db > self.level_dbfs else self._release
        self.level_dbfs += coef * (db - self.level_dbfs)
        self.peak = max(self.peak, db)
        if self.noise_floor_dbfs == SILENCE_DBFS or db < self.noise_floor_dbfs:
            self.noise_floor_dbfs = db
        else:
            self.noise_floor_dbfs += self._floor_rise
        return self.level_dbfs
