"""What the agent said, heard back with harken's own Whisper engine, and the ``expect`` checks.

The agent's **played** audio (what the caller heard: a ``clear`` cuts the rest) is split into
replies (agent speech separated by more than :data:`REPLY_GAP_S` of silence), and each reply is
transcribed once with :class:`~harken.speech.stt.whisper.WhisperEngine` (tiny.en, offline) after
the call, never during it (it would compete with the server for the CPU). A check's window picks
the replies that overlap it.

Matching is on normalised text (lower case, letters and digits only, single spaces): a phrase is
"said" when it occurs in the window's text. Whisper tiny.en mishears some words on 8 kHz audio,
so a phrase should be a few distinctive words ("confirmation code", "how many").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from harken.sim.listen import RATE, Span, merge
from harken.sim.script import Expect
from harken.testing._playback import PlayedSpan

if TYPE_CHECKING:
    from harken.speech.stt.whisper import WhisperEngine

__all__ = ["REPLY_GAP_S", "Reply", "Transcriber", "check", "normalise", "replies"]

REPLY_GAP_S: Final = 1.0
_MAX_CHUNK_S: Final = 25.0


@dataclass(slots=True)
class Reply:
    """One stretch of agent speech (played times) and, once transcribed, its text."""

    span: Span
    text: str = ""


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def replies(voiced: Sequence[Span]) -> list[Reply]:
    """Agent speech grouped into replies (gaps over :data:`REPLY_GAP_S` split them)."""
    return [Reply(s) for s in merge(voiced, REPLY_GAP_S)]


def played_between(
    pcm: npt.NDArray[np.int16], played: Sequence[PlayedSpan], window: Span
) -> npt.NDArray[np.int16]:
    """The received samples that played inside ``window``, in order."""
    parts = []
    for s in played:
        if s.n_samples <= 0 or s.end <= window.start or s.start >= window.end:
            continue
        a = max(0, int((window.start - s.start) * s.rate))
        b = min(s.n_samples, int(np.ceil((window.end - s.start) * s.rate)))
        if b > a:
            parts.append(pcm[s.first_sample + a : s.first_sample + b])
    return np.concatenate(parts) if parts else np.zeros(0, np.int16)


class Transcriber:
    """Whisper tiny.en on agent audio (the model loads on first use, once per process)."""

    def __init__(self) -> None:
        self._engine: WhisperEngine | None = None

    def text(self, pcm: npt.NDArray[np.int16]) -> str:
        """8 kHz speech to text (chunks of at most 25 s)."""
        from harken.audio import resample

        if self._engine is None:
            from harken.speech.stt.whisper import WhisperEngine

            self._engine = WhisperEngine()
        step = int(_MAX_CHUNK_S * RATE)
        out = []
        for i in range(0, len(pcm), step):
            chunk = pcm[i : i + step]
            wide = np.frombuffer(resample(chunk.tobytes(), RATE, 16000), dtype=np.int16)
            out.append(self._engine.transcribe_sync(wide).text.strip())
        return " ".join(t for t in out if t)

    def transcribe(
        self, pcm: npt.NDArray[np.int16], played: Sequence[PlayedSpan], found: list[Reply]
    ) -> None:
        for reply in found:
            reply.text = self.text(played_between(pcm, played, reply.span))


def window_text(found: Sequence[Reply], window: Span) -> str:
    return " ".join(
        r.text for r in found if r.span.end > window.start and r.span.start < window.end
    )


def check(expect: Expect, text: str) -> list[str]:
    """The failed ``said``/``said_any``/``not_said`` checks against ``text`` (empty: all hold)."""
    heard = f" {normalise(text)} "
    fails = []
    for phrase in expect.said:
        if f" {normalise(phrase)} " not in heard:
            fails.append(f"agent did not say {phrase!r}")
    if expect.said_any and not any(f" {normalise(p)} " in heard for p in expect.said_any):
        fails.append(f"agent said none of {list(expect.said_any)!r}")
    for phrase in expect.not_said:
        if f" {normalise(phrase)} " in heard:
            fails.append(f"agent said {phrase!r}")
    return fails
