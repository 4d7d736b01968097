"""Smart Turn v3.2: Whisper log-mel features in numpy, and the ONNX model behind them.

Smart Turn (pipecat-ai, BSD-2) is a Whisper-encoder classifier: given the last <= 8 s of a
caller's audio at 16 kHz it says how likely the caller has finished their turn. Its input is
Whisper's log-mel spectrogram of exactly 8 s:

1. keep the last 8 s (128000 samples); shorter audio is zero-padded *at the start*;
2. normalise the waveform to zero mean and unit variance (over the padded 8 s, eps 1e-7);
3. power spectrogram: periodic Hann window of 400, hop 160, centred (reflect-padded by 200),
   real FFT -> 801 frames x 201 bins;
4. 80 triangular mel filters on the Slaney scale (linear below 1 kHz, logarithmic above),
   area-normalised, 0-8 kHz;
5. ``log10(max(mel, 1e-10))``, drop the last frame (800 remain), clamp to ``max - 8``, then
   ``(x + 4) / 4``.

These facts were read from pipecat's reference (``pipecat/audio/turn/smart_turn/``, itself derived
from ``transformers.WhisperFeatureExtractor``); the implementation below is harken's own, in
float32 where that does not change the result measurably (tests compare it with the reference
file when it is installed). The model outputs a probability (a sigmoid is inside the graph, even
though its output is named ``logits``): > 0.5 means "complete".

Cost on this machine: features ~6 ms, model ~40-60 ms for one 8 s input on one thread; it runs
in a process-wide thread pool, never on the event loop (see :mod:`harken.speech.turn`).
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from typing import Final

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

from harken.speech.models import OrtSession, smart_turn_session

__all__ = [
    "MAX_SAMPLES",
    "SAMPLE_RATE",
    "SmartTurn",
    "log_mel_features",
    "mel_filterbank",
]

SAMPLE_RATE: Final = 16000
MAX_SECONDS: Final = 8
MAX_SAMPLES: Final = SAMPLE_RATE * MAX_SECONDS
N_FFT: Final = 400
HOP: Final = 160
N_MELS: Final = 80
N_FRAMES: Final = MAX_SAMPLES // HOP  # 800 after dropping the last frame

_F32 = np.float32


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney mel: 3 mels per 200 Hz up to 1 kHz (15 mels), then log-spaced (27 mels per x6.4)."""
    lin = hz * (3.0 / 200.0)
    safe = np.maximum(hz, 1e-9)
    log = 15.0 + np.log(safe / 1000.0) * (27.0 / math.log(6.4))
    return np.where(hz >= 1000.0, log, lin)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    lin = mel * (200.0 / 3.0)
    log = 1000.0 * np.exp((mel - 15.0) * (math.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log, lin)


@lru_cache(maxsize=1)
def mel_filterbank() -> npt.NDArray[np.float32]:
    """``(201, 80)`` Slaney-normalised triangular filters mapping power bins to mel bands."""
    bins = N_FFT // 2 + 1
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, bins)
    edges_mel = np.linspace(
        _hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SAMPLE_RATE / 2]))[0], N_MELS + 2
    )
    edges = _mel_to_hz(edges_mel)  # N_MELS + 2 corner frequencies
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    f = fft_hz[:, None]
    rising = (f - lower) / (centre - lower)
    falling = (upper - f) / (upper - centre)
    tri = np.clip(np.minimum(rising, falling), 0.0, None)
    tri *= 2.0 / (upper - lower)  # equal area per filter (Slaney)
    return tri.astype(_F32)


@lru_cache(maxsize=1)
def _hann() -> npt.NDArray[np.float32]:
    n = np.arange(N_FFT)
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)).astype(_F32)  # periodic


def fit_8s(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The last 8 s of ``audio`` (16 kHz float), zero-padded at the start to exactly 8 s."""
    if audio.size >= MAX_SAMPLES:
        return np.ascontiguousarray(audio[-MAX_SAMPLES:], dtype=_F32)
    out = np.zeros(MAX_SAMPLES, _F32)
    if audio.size:
        out[-audio.size :] = audio
    return out


def log_mel_features(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Smart Turn's ``(80, 800)`` input for the last 8 s of ``audio`` (16 kHz, float in [-1, 1])."""
    x = fit_8s(np.asarray(audio, dtype=_F32))
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    pad = N_FFT // 2
    padded = np.pad(x, (pad, pad), mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP]  # (801, 400), a view
    spec = np.fft.rfft(frames * _hann(), axis=-1)  # float32 in -> complex64 (numpy >= 2)
    power = spec.real**2 + spec.imag**2
    mel = power[:-1] @ mel_filterbank()  # (800, 80): the last frame is dropped
    logmel = np.log10(np.maximum(mel, 1e-10))
    logmel = np.maximum(logmel, logmel.max() - 8.0)
    out: npt.NDArray[np.float32] = ((logmel + 4.0) / 4.0).T.astype(_F32)
    return np.ascontiguousarray(out)


class SmartTurn:
    """The Smart Turn v3.2 classifier over one process-wide ONNX session.

    :meth:`predict` is synchronous and CPU-heavy (tens of ms): call it from a worker thread.
    onnxruntime releases the GIL while it runs; the session is safe to call from several
    threads, but the lock keeps one inference at a time so a burst of turn ends cannot take
    more cores than the pool was given.
    """

    def __init__(self, session: OrtSession | None = None) -> None:
        self._session = session
        self._lock = threading.Lock()

    @property
    def session(self) -> OrtSession:
        if self._session is None:
            self._session = smart_turn_session()
        return self._session

    def predict(self, audio: npt.NDArray[np.float32]) -> float:
        """Probability that the turn is complete, given the caller's audio (16 kHz float)."""
        return self.predict_many([audio])[0]

    def predict_many(self, audios: list[npt.NDArray[np.float32]]) -> list[float]:
        """Probabilities for several independent clips, as one batch."""
        if not audios:
            return []
        feats = np.stack([log_mel_features(a) for a in audios])
        with self._lock:
            out = self.session.run(None, {"input_features": feats})[0]
        return [float(p) for p in np.asarray(out, dtype=np.float64).reshape(-1)]


_DEFAULT: SmartTurn | None = None
_DEFAULT_LOCK = threading.Lock()


def default_smart_turn() -> SmartTurn:
    """The process-wide :class:`SmartTurn`."""
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = SmartTurn()
    return _DEFAULT
