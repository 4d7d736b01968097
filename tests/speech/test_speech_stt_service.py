"""SttService in a call: VAD gating, interim and final transcripts, turns, abandonment, errors.

Real engines on synthesized speech (see test_speech_stt_local.py for the corpus). Audio is fed
faster than real time: these tests check *what* is recognised and emitted, never how fast.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest

from harken.audio import ulaw_decode, ulaw_encode
from harken.bench.stt_corpus import SENTENCES, Utterance, corpus, phone_path, wer
from harken.errors import ProviderError
from harken.frames import (
    AudioFrame,
    ErrorFrame,
    Frame,
    TextFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Call
from harken.speech.stt.base import Transcription
from harken.speech.stt.openai import OpenAITranscriptionEngine
from harken.speech.stt.service import SttService
from harken.speech.stt.sphinx import SphinxEngine
from harken.speech.stt.whisper import WhisperEngine

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    engine = WhisperEngine()
    engine.warm_up_sync()
    return engine


@pytest.fixture(scope="module")
def clips() -> list[Utterance]:
    pytest.importorskip("piper", reason="the piper extra is needed for the second voice")
    return corpus(sentences=(SENTENCES[0], SENTENCES[13], SENTENCES[44]))


class Spy:
    """Wraps a real batch engine and records the audio each pass was given."""

    def __init__(self, engine: WhisperEngine) -> None:
        self.engine = engine
        self.name = engine.name
        self.sample_rate = engine.sample_rate
        self.partials = engine.partials
        self.buffers: list[bytes] = []

    async def warm_up(self) -> None:
        await self.engine.warm_up()

    async def transcribe(self, pcm: bytes, *, prompt: str = "", prefix: str = "") -> Transcription:
        self.buffers.append(pcm)
        return await self.engine.transcribe(pcm, prompt=prompt, prefix=prefix)

    async def aclose(self) -> None:
        await self.engine.aclose()


class Harness:
    def __init__(self, service: SttService) -> None:
        self.service = service
        self.down: list[Frame] = []
        self.up: list[Frame] = []
        self.call = Call(service, on_down=self.down.append, on_up=self.up.append)
        self.t = 0.0

    @property
    def transcripts(self) -> list[TranscriptFrame]:
        return [f for f in self.down if isinstance(f, TranscriptFrame)]

    @property
    def finals(self) -> list[str]:
        return [f.text for f in self.transcripts if f.final]

    def frames(self, pcm: np.ndarray, rate: int) -> Iterator[AudioFrame]:
        n = rate // 50
        for i in range(0, len(pcm), n):
            chunk = pcm[i : i + n]
            yield AudioFrame(chunk.tobytes(), rate, timestamp=self.t)
            self.t += len(chunk) / rate

    async def feed(self, pcm: np.ndarray, rate: int = 16000, pace: float = 0.002) -> None:
        for frame in self.frames(pcm, rate):
            self.call.feed(frame)
            await asyncio.sleep(pace)

    async def turn(self, pcm: np.ndarray, rate: int = 16000, *, wait_interim: bool = False) -> None:
        seen = len(self.transcripts)
        self.call.system(UserStartedSpeakingFrame(self.t))
        half = len(pcm) // 2
        await self.feed(pcm[:half], rate)
        if wait_interim:
            async with asyncio.timeout(60):
                while len(self.transcripts) == seen:
                    await asyncio.sleep(0.01)
        await self.feed(pcm[half:], rate)
        self.call.system(UserStoppedSpeakingFrame(self.t))
        self.call.system(UserTurnEndFrame(self.t))
        await self.service.drain()


async def test_streaming_turns_give_interims_then_one_final_each(
    whisper: WhisperEngine, clips: list[Utterance]
) -> None:
    h = Harness(SttService(whisper))
    await h.call.start()
    pairs = []
    for clip in clips:
        before = len(h.transcripts)
        await h.turn(clip.pcm, wait_interim=True)
        frames = h.transcripts[before:]
        assert [f.final for f in frames].count(True) == 1, frames
        assert frames[-1].final and not any(f.final for f in frames[:-1])
        assert any(not f.final for f in frames)  # interim text came before the end
        pairs.append((clip.text, frames[-1].text))
        await h.feed(np.zeros(8000, np.int16))  # a pause between turns (not transcribed)
    h.call.cancel()
    await h.call.wait()
    assert wer(pairs) <= 0.10, pairs
    assert h.service.finals == len(clips)
    # every delivered final says where its text came from
    assert sum(h.service.final_sources.values()) == len(clips), h.service.final_sources
    assert set(h.service.final_sources) <= {"inflight", "partial", "pass"}


async def test_phone_audio_8khz_ulaw_is_resampled_and_recognised(
    whisper: WhisperEngine, clips: list[Utterance]
) -> None:
    h = Harness(SttService(whisper, interim=False))
    await h.call.start()
    pairs = []
    for clip in clips:
        narrow = np.frombuffer(ulaw_decode(ulaw_encode(phone_path(clip.pcm).tobytes())), np.int16)
        await h.turn(narrow, 8000)
        pairs.append((clip.text, h.finals[-1]))
    h.call.cancel()
    await h.call.wait()
    assert wer(pairs) <= 0.15, pairs
    assert not [f for f in h.transcripts if not f.final]  # interim=False: finals only


async def test_only_speech_and_preroll_reach_the_model(
    whisper: WhisperEngine, clips: list[Utterance]
) -> None:
    spy = Spy(whisper)
    h = Harness(SttService(spy, preroll_s=0.3))  # type: ignore[arg-type]
    await h.call.start()
    marker = np.full(16000, 1111, np.int16)  # one second of "noise" before speech
    after = np.full(16000, 2222, np.int16)  # and after it
    await h.feed(marker)
    await h.turn(clips[0].pcm)
    await h.feed(after)
    await h.service.drain()
    h.call.cancel()
    await h.call.wait()
    assert spy.buffers
    longest = max(spy.buffers, key=len)
    samples = np.frombuffer(longest, np.int16)
    preroll = int(0.3 * 16000)
    in_speech = int(np.count_nonzero(clips[0].pcm == 1111))
    assert np.count_nonzero(samples == 1111) == preroll + in_speech  # exactly the pre-roll
    assert samples[:preroll].tolist() == [1111] * preroll
    assert np.count_nonzero(samples == 2222) == np.count_nonzero(clips[0].pcm == 2222)
    assert len(samples) == len(clips[0].pcm) + int(0.3 * 16000)
    assert h.finals and "table" in h.finals[0]


async def test_speech_resuming_before_the_turn_ends_is_one_turn(
    whisper: WhisperEngine, clips: list[Utterance]
) -> None:
    h = Harness(SttService(whisper))
    await h.call.start()
    first, second = clips[0].pcm, clips[1].pcm
    h.call.system(UserStartedSpeakingFrame(h.t))
    await h.feed(first)
    h.call.system(UserStoppedSpeakingFrame(h.t))  # a speculative final starts here
    await h.feed(np.zeros(4000, np.int16))
    h.call.system(UserStartedSpeakingFrame(h.t))  # ... and is dropped: the caller goes on
    await h.feed(second)
    h.call.system(UserStoppedSpeakingFrame(h.t))
    await asyncio.sleep(0)
    assert h.finals == []  # nothing final before the turn ends
    h.call.system(UserTurnEndFrame(h.t))
    await h.service.drain()
    h.call.cancel()
    await h.call.wait()
    assert len(h.finals) == 1
    text = h.finals[0].lower()
    assert "table" in text and "internet" in text, text


async def test_the_text_up_to_a_stop_is_sent_at_once_as_a_speculative_interim(
    whisper: WhisperEngine, clips: list[Utterance]
) -> None:
    h = Harness(SttService(whisper))
    await h.call.start()
    h.call.system(UserStartedSpeakingFrame(h.t))
    await h.feed(clips[0].pcm)
    h.call.system(UserStoppedSpeakingFrame(h.t))
    async with asyncio.timeout(60):  # the turn has not ended: the text comes speculatively
        while not any(f.speculative for f in h.transcripts):
            await asyncio.sleep(0.01)
    spec = [f for f in h.transcripts if f.speculative]
    assert len(spec) == 1 and not spec[0].final and h.finals == []
    h.call.system(UserTurnEndFrame(h.t))
    await h.service.drain()
    h.call.cancel()
    await h.call.wait()
    assert h.finals == [spec[0].text]  # the final is the same reading


async def test_abandoned_turns_emit_nothing(whisper: WhisperEngine, clips: list[Utterance]) -> None:
    h = Harness(SttService(whisper))
    await h.call.start()
    h.call.system(UserStartedSpeakingFrame(0.0))
    await h.feed(clips[0].pcm)
    h.call.system(UserStoppedSpeakingFrame(h.t))  # the final pass is in flight ...
    h.call.cancel()  # ... and the call is cancelled before the turn ends
    await h.call.wait()
    await asyncio.sleep(0.5)
    assert h.finals == []

    # a graceful end with a turn still open drops the turn too, and the end frame passes on
    h2 = Harness(SttService(whisper))
    await h2.call.start()
    h2.call.system(UserStartedSpeakingFrame(0.0))
    await h2.feed(clips[1].pcm)
    h2.call.end()
    await h2.call.wait()
    await h2.service.drain()
    assert h2.finals == []


async def test_silent_turn_gives_no_final_and_other_frames_pass(whisper: WhisperEngine) -> None:
    h = Harness(SttService(whisper))
    await h.call.start()
    await h.turn(np.zeros(16000, np.int16))
    h.call.feed(TextFrame("hello"))
    h.call.end()
    await h.call.wait()
    assert h.finals == []
    assert h.service.empty_turns == 1
    assert [f.text for f in h.down if isinstance(f, TextFrame)] == ["hello"]


async def test_streaming_engine_through_the_service(clips: list[Utterance]) -> None:
    engine = SphinxEngine(pool_size=1)
    h = Harness(SttService(engine))
    await h.call.start()
    clip = next(c for c in clips if c.voice == "piper" and "table" in c.text)
    await h.turn(clip.pcm)
    h.call.cancel()
    await h.call.wait()
    assert len(h.finals) == 1
    assert "book a table" in h.finals[0]
    assert any(not f.final for f in h.transcripts)


async def test_engine_failure_is_an_error_frame_upstream(clips: list[Utterance]) -> None:
    # a real client against a port nobody listens on
    engine = OpenAITranscriptionEngine("key", base_url="http://127.0.0.1:9", max_retries=0)
    h = Harness(SttService(engine))
    await h.call.start()
    await h.turn(clips[0].pcm[:8000])
    h.call.cancel()
    await h.call.wait()
    await engine.aclose()
    errors = [f for f in h.up if isinstance(f, ErrorFrame)]
    assert len(errors) == 1 and isinstance(errors[0].error, ProviderError)
    assert errors[0].stage == "stt"
    assert h.finals == []


async def test_early_pass_when_the_audio_turns_quiet_and_pass_coverage(
    whisper: WhisperEngine, clips: list[Utterance]
) -> None:
    from harken.speech.stt.transcriber import AgreementTranscriber

    t = AgreementTranscriber(whisper, step_s=30.0)  # no step-driven passes in this test
    loud = (np.random.default_rng(1).standard_normal(320) * 3000).astype(np.int16).tobytes()
    quiet = (np.random.default_rng(2).standard_normal(320) * 100).astype(np.int16).tobytes()
    for _ in range(50):
        t.feed(loud)
    assert t.early_passes == 0
    for _ in range(4):  # 80 ms of quiet (30 dB down): not yet
        t.feed(quiet)
    assert t.early_passes == 0
    for _ in range(10):  # 100 ms and more: one early pass, not one per frame
        t.feed(quiet)
    assert t.early_passes == 1
    for _ in range(5):  # loud again re-arms it
        t.feed(loud)
    for _ in range(5):
        t.feed(quiet)
    assert t.early_passes == 2
    # coverage: the whole buffer, or up to past the end of speech (media time)
    size = len(t.buffer)
    assert t._covers(size, None, None)
    assert not t._covers(size - 640, 1.0, None)
    assert t._covers(size - 640, 1.07, 1.0)
    assert not t._covers(size - 640, 1.03, 1.0)
    # ... or, by the level watch: the pass ended on 100 ms of quiet and only quiet came after
    for _ in range(3):
        t.feed(quiet)
    size = len(t.buffer)
    assert t._covers(size - 3 * 640, None, None)
    assert not t._covers(size - 4 * 640, None, None)  # it ended on 80 ms of quiet only
    t.feed(loud)
    assert not t._covers(size - 3 * 640, None, None)  # speech came after it
    await t.aclose()
    # the real thing: speech in, the final text out
    t = AgreementTranscriber(whisper)
    t.feed(clips[0].pcm.tobytes())
    text = await t.finish()
    await t.aclose()
    assert "table" in text
