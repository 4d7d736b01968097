"""TtsService in a real call: frame sequence, resampling, utterance grouping, heard-text mapping,
interruption (no audio of an abandoned utterance afterwards), errors, warm-once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from harken.audio import resample
from harken.frames import (
    AgentStoppedSpeakingFrame,
    AudioFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    StartFrame,
    TextFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import Call, Pipeline
from harken.speech.tts import (
    EspeakEngine,
    OpenAITts,
    PiperEngine,
    TtsEngine,
    TtsService,
    active_jobs,
    piper_available,
)
from harken.speech.tts import piper as piper_mod
from harken.speech.tts.base import TtsStream, WordTiming

needs_piper = pytest.mark.skipif(not piper_available(), reason="the piper extra is not installed")


class Run:
    """A call with one TtsService; records what comes out of the bottom, and errors."""

    def __init__(self, engine: TtsEngine, rate: int = 8000, **kw: object) -> None:
        self.out: list[Frame] = []
        self.errors: list[ErrorFrame] = []
        self.service = TtsService(engine, **kw)  # type: ignore[arg-type]
        self.call = Call(
            Pipeline([self.service]), on_down=self.out.append, on_error=self.errors.append
        )
        self.rate = rate

    async def __aenter__(self) -> Run:
        await self.call.start(StartFrame(sample_rate_out=self.rate))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.call.closed:
            self.call.end()
        await asyncio.wait_for(self.call.wait(), 20)

    def feed(self, *frames: Frame) -> None:
        for f in frames:
            self.call.feed(f)

    async def until(self, cond: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, f"timed out; got {self.kinds()}"
            await asyncio.sleep(0.005)

    def kinds(self) -> list[str]:
        return [type(f).__name__ for f in self.out]

    def count(self, cls: type) -> int:
        return sum(isinstance(f, cls) for f in self.out)

    def audio(self) -> list[AudioFrame]:
        return [f for f in self.out if isinstance(f, AudioFrame)]


def collapse(kinds: list[str]) -> list[str]:
    """Runs of AudioFrame collapsed to one entry."""
    out: list[str] = []
    for k in kinds:
        if not (out and k == out[-1] == "AudioFrame"):
            out.append(k)
    return out


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    engine = EspeakEngine()
    asyncio.run(engine.warm_up())
    return engine


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_one_clause_is_started_audio_stopped_at_the_transport_rate(
    espeak: EspeakEngine, rate: int
) -> None:
    text = "Hello there, how are you today?"
    reference, _ = espeak.synthesize(text)
    async with Run(espeak, rate) as run:
        run.feed(TextFrame(text))
        await run.until(lambda: run.count(TTSStoppedFrame) == 1)
    assert collapse(run.kinds()) == ["TTSStartedFrame", "AudioFrame", "TTSStoppedFrame", "EndFrame"]
    started = run.out[0]
    assert isinstance(started, TTSStartedFrame) and started.text == text
    frames = run.audio()
    assert all(f.sample_rate == rate for f in frames)
    frame_bytes = rate // 50 * 2
    assert all(len(f.pcm) == frame_bytes for f in frames[:-1])  # exact 20 ms frames
    assert 0 < len(frames[-1].pcm) <= frame_bytes
    assert [f.timestamp for f in frames] == sorted(f.timestamp for f in frames)
    got = np.frombuffer(b"".join(f.pcm for f in frames), np.int16).astype(np.float64)
    # the streamed, per-utterance resampling has the shape of a one-shot conversion of the same
    # text (espeak-ng varies by a few samples from run to run: compare 20 ms energy envelopes)
    want = np.frombuffer(resample(reference, 22050, rate), np.int16).astype(np.float64)
    # ...less the silence before its first sound, which the service drops but for 5 ms
    assert 0 < np.flatnonzero(np.abs(got) > 30)[0] <= rate * 0.005
    lead = np.flatnonzero(np.abs(want) > 30)[0] - int(rate * 0.005)
    assert lead > 0  # espeak-ng starts with silence: there was something to drop
    want = want[lead:]
    assert abs(len(got) - len(want)) < rate * 0.03
    step = rate // 50
    n = min(len(got), len(want)) // step
    env_got = np.sqrt((got[: n * step].reshape(n, step) ** 2).mean(axis=1))
    env_want = np.sqrt((want[: n * step].reshape(n, step) ** 2).mean(axis=1))
    assert np.corrcoef(env_got, env_want)[0, 1] > 0.95
    assert 0.8 < env_got.sum() / env_want.sum() < 1.25
    rec = run.service.record(1)
    assert rec is not None and rec.complete and not rec.interrupted
    assert rec.audio_s == pytest.approx(len(got) / rate)
    assert rec.first_audio_s is not None and rec.first_audio_s < rec.audio_s


async def test_clauses_of_one_reply_are_one_utterance(espeak: EspeakEngine) -> None:
    async with Run(espeak, 8000) as run:
        run.feed(
            LLMResponseStartFrame(),
            TextFrame("Sure,"),
            TextFrame("I can help with that."),
            TextFrame("   "),
            TextFrame("Let me check."),
            LLMResponseEndFrame(),
            TextFrame("Anything else?"),
        )
        await run.until(lambda: run.count(TTSStoppedFrame) == 2)
    assert collapse(run.kinds()) == [
        "LLMResponseStartFrame",
        "TTSStartedFrame",
        "AudioFrame",
        "TTSStoppedFrame",
        "LLMResponseEndFrame",
        "TTSStartedFrame",
        "AudioFrame",
        "TTSStoppedFrame",
        "EndFrame",
    ]
    starts = [f for f in run.out if isinstance(f, TTSStartedFrame)]
    stops = [f for f in run.out if isinstance(f, TTSStoppedFrame)]
    assert [f.utterance_id for f in starts] == [f.utterance_id for f in stops] == [1, 2]
    rec = run.service.record(1)
    assert rec is not None
    assert rec.text == "Sure, I can help with that. Let me check."
    assert len(rec.clauses) == 3
    words = [w.word for w in rec.words]
    assert words[0] == "Sure" and words[-1] == "check"
    assert [w.start_s for w in rec.words] == sorted(w.start_s for w in rec.words)
    for w in rec.words:
        assert rec.text[w.char_start : w.char_end] == w.word
    # seconds heard -> words heard
    assert rec.heard_text(0.0) == ""
    assert rec.heard_text(rec.audio_s + 1) == rec.text
    help_word = next(w for w in rec.words if w.word == "help")
    assert rec.heard_text(help_word.end_s).endswith("help")
    assert rec.heard_text(help_word.start_s) == "Sure, I can"
    # the transport's report is remembered and used by default
    run.service.on_system(AgentStoppedSpeakingFrame(utterance_id=1, played_s=help_word.end_s))
    assert run.service.heard_text(1) == "Sure, I can help"


class _Silent(TtsEngine):
    """Each clause: ``lead_s`` of digital silence, 0.5 s of tone, 0.1 s of silence; one word
    timed at the tone."""

    sample_rate = 8000

    def __init__(self, lead_s: float) -> None:
        self.lead = int(lead_s * 8000)

    async def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        tone = (np.sin(np.arange(4000) * 0.3) * 8000).astype(np.int16)
        pcm = np.concatenate([np.zeros(self.lead, np.int16), tone, np.zeros(800, np.int16)])
        stream.words.append(
            WordTiming(text, self.lead / 8000, self.lead / 8000 + 0.5, 0, len(text))
        )
        for i in range(0, len(pcm), 160):
            yield pcm[i : i + 160].tobytes()


@pytest.mark.parametrize(("lead_s", "dropped_s"), [(0.08, 0.075), (0.5, 0.3), (0.0, 0.0)])
async def test_the_silence_before_an_utterance_is_dropped(lead_s: float, dropped_s: float) -> None:
    """The caller hears the reply as soon as it makes a sound: the engine's leading silence
    goes (5 ms kept, 0.3 s at most), the pause before a later clause stays, and the words move
    back with the audio."""
    async with Run(_Silent(lead_s), 8000) as run:
        run.feed(LLMResponseStartFrame(), TextFrame("One."), TextFrame("Two."))
        run.feed(LLMResponseEndFrame())
        await run.until(lambda: run.count(TTSStoppedFrame) == 1)
    got = np.frombuffer(b"".join(f.pcm for f in run.audio()), np.int16)
    loud = np.flatnonzero(np.abs(got) > 30)
    assert loud[0] / 8000 == pytest.approx(lead_s - dropped_s, abs=0.002)
    clause_s = lead_s + 0.6
    assert len(got) / 8000 == pytest.approx(2 * clause_s - dropped_s, abs=0.005)
    # the second clause keeps its leading silence: its tone starts after the first one's gap
    second = loud[int(np.argmax(np.diff(loud) > 400)) + 1] / 8000
    assert second == pytest.approx(clause_s - dropped_s + lead_s, abs=0.002)
    rec = run.service.record(1)
    assert rec is not None
    one, two = rec.words
    assert one.start_s == pytest.approx(loud[0] / 8000, abs=0.003)
    assert two.start_s == pytest.approx(second, abs=0.003)


async def test_group_replies_off_makes_every_clause_an_utterance(espeak: EspeakEngine) -> None:
    async with Run(espeak, 16000, group_replies=False) as run:
        run.feed(LLMResponseStartFrame(), TextFrame("One."), TextFrame("Two."))
        run.feed(LLMResponseEndFrame())
        await run.until(lambda: run.count(LLMResponseEndFrame) == 1)
    assert run.count(TTSStartedFrame) == run.count(TTSStoppedFrame) == 2


async def test_end_frame_closes_an_open_reply(espeak: EspeakEngine) -> None:
    async with Run(espeak, 8000) as run:
        run.feed(LLMResponseStartFrame(), TextFrame("Goodbye."))
        run.call.end()
        await run.until(lambda: run.count(EndFrame) == 1)
    assert collapse(run.kinds())[-3:] == ["AudioFrame", "TTSStoppedFrame", "EndFrame"]


@needs_piper
async def test_interruption_abandons_the_utterance_and_no_audio_follows() -> None:
    engine = PiperEngine()
    await engine.warm_up()
    text = " ".join(f"This is sentence number {n} of a long reply." for n in range(1, 9))
    async with Run(engine, 8000) as run:
        sentences = piper_mod.sentence_count()
        run.feed(LLMResponseStartFrame(), TextFrame(text), LLMResponseEndFrame())
        await run.until(lambda: run.count(AudioFrame) > 0)
        run.call.interrupt()
        cut = len(run.out)
        await run.until(lambda: active_jobs() == 0)  # the synthesis thread stopped...
        assert piper_mod.sentence_count() - sentences <= 4  # ...well before the eighth sentence
        assert run.out[cut:] == []  # nothing of the abandoned utterance after the interruption
        rec = run.service.record(1)
        assert rec is not None and rec.interrupted and not rec.complete
        # the words were placed even though synthesis was cut off: heard text is a prefix
        assert rec.words and rec.text.startswith(rec.heard_text(1.0))
        # the service carries on with the next reply
        run.feed(TextFrame("Okay."))
        await run.until(lambda: run.count(TTSStoppedFrame) == 1)
    after = run.out[cut:]
    assert collapse([type(f).__name__ for f in after])[:3] == [
        "TTSStartedFrame",
        "AudioFrame",
        "TTSStoppedFrame",
    ]
    assert isinstance(after[0], TTSStartedFrame) and after[0].utterance_id == 2
    heard = sum(f.duration for f in run.audio())
    assert heard < 10.0  # eight sentences would be ~20 s


@needs_piper
async def test_a_second_service_does_not_reload_the_model() -> None:
    await PiperEngine().warm_up()
    loads = piper_mod.load_count()
    for _ in range(2):
        async with Run(PiperEngine(), 16000) as run:
            run.feed(TextFrame("Hi."))
            await run.until(lambda: run.count(TTSStoppedFrame) == 1)
        assert run.count(AudioFrame) > 5
    assert piper_mod.load_count() == loads


async def test_provider_error_closes_the_utterance_and_reports_upstream() -> None:
    async def speech(request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "voice not found"}}, status=400)

    app = web.Application()
    app.router.add_post("/v1/audio/speech", speech)
    server = TestServer(app)
    await server.start_server()
    engine = OpenAITts(base_url=str(server.make_url("/v1")), api_key="k")
    try:
        async with Run(engine, 8000) as run:
            run.feed(TextFrame("Hello."))
            await run.until(lambda: run.count(TTSStoppedFrame) == 1 and bool(run.errors))
        assert collapse(run.kinds())[:2] == ["TTSStartedFrame", "TTSStoppedFrame"]
        assert "voice not found" in str(run.errors[0].error)
    finally:
        await engine.aclose()
        await server.close()
