"""The caller's voice: phrases synthesised once, trimmed, joined with scripted pauses.

Each phrase is spoken by :func:`harken.testing.caller.caller_voice` (Piper when the ``piper``
extra is installed, else espeak-ng; 8 kHz int16) and cached per process. Leading and trailing
silence is trimmed to :data:`EDGE_S` so a scripted pause is the pause written in the script, not
the script's pause plus the TTS engine's padding.

An :class:`Utterance` knows where its speech is, in 20 ms frames: ``segments`` are the voiced
frame ranges of each phrase (first and last frame whose level is above
:data:`~harken.sim.listen.VOICED_DBFS`). The runner turns those frame indices into send times.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.sim.listen import FRAME, RATE, VOICED_DBFS, frame_dbfs

__all__ = ["EDGE_S", "Utterance", "synthesise", "utterance"]

EDGE_S: Final = 0.04
"""Silence kept before and after each trimmed phrase."""

_CACHE: dict[str, npt.NDArray[np.int16]] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Utterance:
    """PCM to send (whole 20 ms frames) and its voiced frame ranges, one per phrase."""

    pcm: npt.NDArray[np.int16]
    segments: tuple[tuple[int, int], ...]  # (first voiced frame, last voiced frame), inclusive

    @property
    def frames(self) -> int:
        return len(self.pcm) // FRAME


def _trim(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    levels = frame_dbfs(pcm)
    voiced = np.flatnonzero(levels > VOICED_DBFS)
    if len(voiced) == 0:
        return pcm
    edge = round(EDGE_S * RATE)
    start = max(0, int(voiced[0]) * FRAME - edge)
    end = min(len(pcm), (int(voiced[-1]) + 1) * FRAME + edge)
    return pcm[start:end]


def synthesise(text: str) -> npt.NDArray[np.int16]:
    """One phrase as trimmed 8 kHz PCM (cached; thread-safe)."""
    with _LOCK:
        cached = _CACHE.get(text)
        if cached is None:
            from harken.testing.caller import caller_voice

            cached = _CACHE[text] = _trim(caller_voice(text))
        return cached


def prepare(texts: Iterable[str]) -> None:
    """Synthesise every phrase now (before dialling: synthesis must not compete with a call)."""
    for text in texts:
        synthesise(text)


def _pad(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    extra = (-len(pcm)) % FRAME
    return np.concatenate([pcm, np.zeros(extra, np.int16)]) if extra else pcm


def utterance(parts: list[str], pause_s: float) -> Utterance:
    """The phrases, each padded to whole frames, joined by ``pause_s`` of silence."""
    chunks: list[npt.NDArray[np.int16]] = []
    segments: list[tuple[int, int]] = []
    frame = 0
    gap = np.zeros(round(pause_s * RATE / FRAME) * FRAME, np.int16)
    for i, text in enumerate(parts):
        if i:
            chunks.append(gap)
            frame += len(gap) // FRAME
        pcm = _pad(synthesise(text))
        voiced = np.flatnonzero(frame_dbfs(pcm) > VOICED_DBFS)
        first, last = (
            (int(voiced[0]), int(voiced[-1])) if len(voiced) else (0, len(pcm) // FRAME - 1)
        )
        segments.append((frame + first, frame + last))
        chunks.append(pcm)
        frame += len(pcm) // FRAME
    return Utterance(np.concatenate(chunks) if chunks else np.zeros(0, np.int16), tuple(segments))
