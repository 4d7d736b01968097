"""A phrase cache: short clauses that recur across calls are synthesised once per process.

Voice agents open most replies with the same few words ("Sure.", "Okay, let me check.",
"One moment."), and that first clause is exactly what sets the time to first audio. On a small
shared CPU a neural voice needs 80-250 ms for it; from the cache it is ~1 ms.
:class:`CachedEngine` wraps any engine: clauses of at most ``max_chars`` characters are
remembered with their word timings in an LRU of ``size`` entries; longer text streams straight
through. The key is the exact text (a clause with surrounding whitespace is not cached), so cached
word offsets always index the text asked for. ``warm_up`` fills the cache with ``phrases`` (by
default :data:`COMMON_OPENERS`) once the engine itself is warm. Only complete syntheses are
stored: an abandoned stream leaves nothing behind.

One cached phrase costs its audio (about 44 KB per second at 22.05 kHz); 256 short phrases stay
under ~10 MB.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from typing import Final

from harken.speech.tts.base import TtsEngine, TtsStream, WordTiming

__all__ = ["COMMON_OPENERS", "CachedEngine"]

_Entry = tuple[tuple[bytes, ...], tuple[WordTiming, ...]]
_SHARED: dict[tuple[object, ...], OrderedDict[str, _Entry]] = {}


def _voice_key(engine: TtsEngine) -> tuple[object, ...]:
    """What makes two engines sound the same: class, name, rate and voice settings."""
    settings = tuple(
        str(getattr(engine, a, "")) for a in ("model", "voice", "rate", "pitch", "base_url")
    )
    return (type(engine).__qualname__, engine.name, engine.sample_rate, *settings)


COMMON_OPENERS: Final = (
    "Sure.",
    "Sure,",
    "Okay.",
    "Okay,",
    "Got it.",
    "Of course.",
    "Let me check.",
    "Let me check,",
    "One moment.",
    "Thanks!",
    "Thank you.",
    "Great.",
    "Alright,",
    "Yes.",
    "No problem.",
    "Hello!",
    "Hi there!",
    "Sorry,",
)


class CachedEngine(TtsEngine):
    """``engine`` with a process-wide LRU of short clauses' audio (see the module docstring)."""

    def __init__(
        self,
        engine: TtsEngine,
        *,
        max_chars: int = 32,
        size: int = 256,
        phrases: Iterable[str] = COMMON_OPENERS,
        shared: bool = False,
    ) -> None:
        self.engine = engine
        self.name = engine.name
        self.local = engine.local
        self.sample_rate = engine.sample_rate
        self.max_chars = max_chars
        self.size = size
        self.phrases = tuple(phrases)
        # ``shared``: one cache for every CachedEngine of the same voice in this process (one
        # per agent, and tests build many agents): a phrase is rendered once per process
        self._entries: OrderedDict[str, _Entry] = (
            _SHARED.setdefault(_voice_key(engine), OrderedDict()) if shared else OrderedDict()
        )
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _key(self, text: str) -> str | None:
        key = text.strip()
        return key if key == text and 0 < len(key) <= self.max_chars else None

    @property
    def ready(self) -> bool:
        return self.engine.ready

    async def warm_up(self) -> None:
        await self.engine.warm_up()
        for phrase in self.phrases:
            if phrase in self._entries:
                continue  # rendered already (by another agent of this process)
            stream = self.stream(phrase)
            async with contextlib.aclosing(stream):
                async for _ in stream:
                    pass

    async def aclose(self) -> None:
        await self.engine.aclose()

    async def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        key = self._key(text)
        entry = self._entries.get(key) if key is not None else None
        if entry is not None:
            assert key is not None
            self._entries.move_to_end(key)
            self.hits += 1
            stream.words.extend(entry[1])
            for pcm in entry[0]:
                yield pcm
            return
        inner = self.engine.stream(text)
        chunks: list[bytes] = []
        async with contextlib.aclosing(inner):
            async for pcm in inner:
                if key is not None:
                    chunks.append(pcm)
                yield pcm
        stream.words.extend(inner.words)
        stream.estimated = inner.estimated
        if key is not None:
            self.misses += 1
            self._entries[key] = (tuple(chunks), tuple(inner.words))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
