"""Local TTS engines (espeak-ng, Piper): real audio, streaming, word timing, cancellation and
loading once per process."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from harken.errors import ConfigError, ServiceError
from harken.speech.tts import (
    CachedEngine,
    EspeakEngine,
    PiperEngine,
    create_engine,
    piper_available,
)
from harken.speech.tts import piper as piper_mod
from harken.speech.tts.base import (
    TtsEngine,
    TtsStream,
    active_jobs,
    estimate_words,
    split_sentences,
    thread_stream,
    voiced_span,
)
from harken.speech.tts.espeak import espeak_instance

needs_piper = pytest.mark.skipif(not piper_available(), reason="the piper extra is not installed")

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(x**2))) if x.size else 0.0


async def collect(engine: TtsEngine, text: str) -> tuple[list[bytes], TtsStream]:
    stream = engine.stream(text)
    chunks: list[bytes] = []
    async with contextlib.aclosing(stream):
        async for pcm in stream:
            chunks.append(pcm)
    return chunks, stream


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``cond`` (no fixed sleeps: generous deadline, returns as soon as it holds)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


# --------------------------------------------------------------------------------------------
# helpers in base


def test_split_sentences_keeps_offsets() -> None:
    text = "Hello there. How are you?  Fine, 3.5 apples! ok"
    parts = split_sentences(text)
    assert [p for p, _ in parts] == ["Hello there.", "How are you?", "Fine, 3.5 apples!", "ok"]
    for piece, offset in parts:
        assert text[offset : offset + len(piece)] == piece
    assert split_sentences("   ") == []


def test_estimate_words_spreads_characters_over_the_span() -> None:
    words = estimate_words("a longer word", 1.0, 3.0, char_offset=10)
    assert [w.word for w in words] == ["a", "longer", "word"]
    assert [(w.char_start, w.char_end) for w in words] == [(10, 11), (12, 18), (19, 23)]
    assert words[0].start_s == 1.0
    assert all(a.end_s <= b.start_s for a, b in itertools.pairwise(words))
    assert words[-1].end_s <= 3.0
    durations = [w.end_s - w.start_s for w in words]
    assert durations[1] > durations[2] > durations[0]  # longer words take longer
    assert estimate_words("   ", 0, 1) == []


def test_voiced_span_finds_the_sound() -> None:
    x = np.zeros(1000, np.int16)
    x[200:500] = 5000
    assert voiced_span(x, 1000) == (0.2, 0.5)
    assert voiced_span(np.zeros(100, np.int16).tobytes(), 1000) is None


async def test_thread_stream_stops_the_producer_when_the_consumer_leaves() -> None:
    produced: list[int] = []
    release = threading.Event()
    stopped = threading.Event()

    def produce(emit: Callable[[int], bool]) -> None:
        for i in range(1000):
            if i == 1:
                release.wait(10)  # hold until the consumer has gone
            if not emit(i):
                stopped.set()
                return
            produced.append(i)

    items = thread_stream(produce, what="test")
    assert await items.__anext__() == 0
    await items.aclose()
    release.set()
    await wait_for(lambda: active_jobs() == 0)
    assert stopped.is_set()
    assert produced == [0]


async def test_thread_stream_reraises_producer_errors() -> None:
    def bad(emit: Callable[[int], bool]) -> None:
        emit(1)
        raise ValueError("boom")

    items = thread_stream(bad, what="bad engine")
    with pytest.raises(ServiceError, match="bad engine failed"):
        async for _ in items:
            pass


# --------------------------------------------------------------------------------------------
# espeak-ng


async def test_espeak_speaks_plausible_non_silent_audio_with_real_word_timing() -> None:
    engine = EspeakEngine()
    await engine.warm_up()
    assert engine.ready
    chunks, stream = await collect(engine, SENTENCE)
    pcm = b"".join(chunks)
    seconds = len(pcm) / 2 / engine.sample_rate
    assert engine.sample_rate == 22050
    assert 2.0 < seconds < 7.0  # 12 words at ~175 wpm
    assert rms(pcm) > 1000
    assert len(chunks) > 10  # streamed in small pieces, not one buffer
    assert max(len(c) for c in chunks) <= 2 * engine.sample_rate * 0.1  # <= 100 ms each
    assert not stream.estimated
    words = [w.word for w in stream.words]
    assert words[:3] == ["The", "quick", "brown"] and words[-1] == "bank"
    starts = [w.start_s for w in stream.words]
    assert starts == sorted(starts) and starts[-1] < seconds
    for w in stream.words:
        assert SENTENCE[w.char_start : w.char_end] == w.word


async def test_espeak_longer_text_takes_longer_and_rate_matters() -> None:
    short = b"".join((await collect(EspeakEngine(), "Yes."))[0])
    long_ = b"".join((await collect(EspeakEngine(), SENTENCE))[0])
    fast = b"".join((await collect(EspeakEngine(rate=350), SENTENCE))[0])
    assert len(short) < len(long_) / 3
    assert len(fast) < len(long_) * 0.75


async def test_espeak_abandoned_stream_aborts_synthesis() -> None:
    engine = EspeakEngine()
    text = " ".join([SENTENCE] * 20)  # ~70 s of speech
    before = espeak_instance().samples
    stream = engine.stream(text)
    first = await stream.__anext__()
    assert first
    await stream.aclose()
    await wait_for(lambda: active_jobs() == 0)
    assert espeak_instance().samples - before < engine.sample_rate * 20
    chunks, _ = await collect(engine, "Still works.")  # the global instance is usable again
    assert rms(b"".join(chunks)) > 500


def test_espeak_unknown_voice_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        EspeakEngine("xx-not-a-voice").synthesize("hello")
    with pytest.raises(ConfigError):
        EspeakEngine(rate=10)


def test_espeak_is_one_instance_per_process() -> None:
    a = EspeakEngine()
    b = EspeakEngine(voice="en", rate=200)
    a.synthesize("one")
    before = espeak_instance()
    b.synthesize("two")
    assert espeak_instance() is before


# --------------------------------------------------------------------------------------------
# Piper


@needs_piper
async def test_piper_loads_once_per_process() -> None:
    first = PiperEngine()
    await first.warm_up()
    loads = piper_mod.load_count()
    second = PiperEngine()
    assert second.ready  # the process already holds the voice
    await second.warm_up()
    chunks, _ = await collect(second, "Hello.")
    assert chunks
    assert piper_mod.load_count() == loads


@needs_piper
async def test_piper_speaks_plausible_audio_sentence_by_sentence() -> None:
    engine = PiperEngine()
    await engine.warm_up()
    assert engine.chunked  # the default voice splits at its vocoder (the onnx package is there)
    text = "Hello there. " + SENTENCE
    chunks, stream = await collect(engine, text)
    seconds = [len(c) / 2 / engine.sample_rate for c in chunks]
    # the first piece is the first ~0.28 s of "Hello there.", not the whole sentence
    assert seconds[0] <= 24 * 256 / engine.sample_rate + 1e-9
    assert 2.4 < sum(seconds) < 9.0
    assert len(chunks) >= 4  # each sentence streamed in more than one piece
    assert rms(b"".join(chunks)) > 500
    assert [w.word for w in stream.words][:3] == ["Hello", "there.", "The"]
    assert stream.words[2].start_s >= stream.words[1].end_s  # sentence two follows sentence one
    assert stream.words[-1].end_s <= sum(seconds) + 1e-6
    for w in stream.words:
        assert text[w.char_start : w.char_end] == w.word


@needs_piper
def test_piper_falls_back_to_whole_sentences_when_the_split_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object) -> object:
        raise RuntimeError("no /dec/ block")

    monkeypatch.setattr(piper_mod, "split_voice", broken)
    engine = PiperEngine(threads=3)  # a cache key of its own: this voice loads afresh
    assert not engine.chunked
    pcm = engine.synthesize("Hello there.")
    assert 0.4 < len(pcm) / 2 / engine.sample_rate < 2.0 and rms(pcm) > 500


@needs_piper
def test_piper_producer_stops_between_chunks() -> None:
    engine = PiperEngine()
    engine.load()
    got: list[bytes] = []
    before = piper_mod.sentence_count()

    def emit(item: tuple[bytes, list[object]]) -> bool:
        got.append(item[0])
        return False  # the consumer left after the first chunk

    engine._producer(SENTENCE + " Two. Three. Four.")(emit)
    assert len(got) == 1 and got[0]
    assert piper_mod.sentence_count() == before + 1  # nothing after the first sentence started


@needs_piper
async def test_piper_abandoned_stream_leaves_no_thread_running() -> None:
    engine = PiperEngine()
    await engine.warm_up()
    stream = engine.stream("One. Two. Three. Four. Five. Six. Seven. Eight.")
    assert await stream.__anext__()
    await stream.aclose()
    await wait_for(lambda: active_jobs() == 0)


def test_create_engine_picks_piper_when_installed_else_espeak() -> None:
    engine = create_engine()
    assert engine.name == ("piper" if piper_available() else "espeak")
    assert isinstance(create_engine("espeak", rate=200), EspeakEngine)
    with pytest.raises(ConfigError):
        create_engine("nope")
    with pytest.raises(ConfigError):
        create_engine("espeak", bogus=1)


# --------------------------------------------------------------------------------------------
# phrase cache


async def test_cached_engine_replays_short_clauses_without_synthesising() -> None:
    engine = CachedEngine(EspeakEngine(), phrases=["Sure."], max_chars=20)
    await engine.warm_up()
    assert len(engine) == 1 and engine.misses == 1
    espeak = espeak_instance()
    before = espeak.syntheses
    chunks, stream = await collect(engine, "Sure.")
    assert espeak.syntheses == before  # served from the cache
    assert engine.hits == 1
    assert rms(b"".join(chunks)) > 1000
    assert [w.word for w in stream.words] == ["Sure"] and not stream.estimated
    # a new short clause is synthesised once, then cached
    await collect(engine, "Got it.")
    await collect(engine, "Got it.")
    assert espeak.syntheses == before + 1 and engine.hits == 2
    # long text streams through uncached, with the engine's word timing
    chunks, stream = await collect(engine, SENTENCE)
    assert espeak.syntheses == before + 2 and len(engine) == 2
    assert stream.words[-1].word == "bank"


async def test_cached_engine_does_not_keep_abandoned_syntheses() -> None:
    engine = CachedEngine(EspeakEngine(), phrases=[], max_chars=2000)
    text = " ".join([SENTENCE] * 5)
    stream = engine.stream(text)
    assert await stream.__anext__()
    await stream.aclose()
    assert len(engine) == 0
    chunks, _ = await collect(engine, text)
    assert len(engine) == 1 and engine.misses == 1
    cached, _ = await collect(engine, text)
    assert cached == chunks and engine.hits == 1


def test_without_piper_the_default_is_espeak_with_an_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "piper", None)  # as if the extra were not installed
    assert not piper_available()
    assert isinstance(create_engine(), EspeakEngine)
    with pytest.raises(ConfigError, match=r"harken\[piper\]"):
        PiperEngine()


async def test_engines_of_one_voice_share_the_process_cache() -> None:
    first = create_engine("espeak", cache=True)
    second = create_engine("espeak", cache=True)
    assert isinstance(first, CachedEngine) and isinstance(second, CachedEngine)
    await collect(first, "Shared phrase.")
    hits = second.hits
    await collect(second, "Shared phrase.")
    assert second.hits == hits + 1  # rendered once, by the first
    other = create_engine("espeak", cache=True, voice="en-gb")
    assert isinstance(other, CachedEngine) and "Shared phrase." not in other._entries
