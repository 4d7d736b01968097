"""Turn detection: text completeness, the decision table, Smart Turn features and verdicts on
clear cases, the TurnStage state machine (generations, backstops, transcripts) and VAD + turn
end to end on a telephone call.

Speech for the turn model is synthesized with Piper (the ``piper`` extra, installed for tests):
Smart Turn judges prosody, and espeak's robotic prosody is not a fair test of it. Piper tests
skip when the extra is missing.
"""

from __future__ import annotations

import asyncio
import importlib.util
from functools import lru_cache

import numpy as np
import pytest

from harken.bench import speech_data as sd
from harken.errors import ConfigError
from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    StartFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Call, Pipeline
from harken.speech.endpoint import Plan, is_opener, plan
from harken.speech.models import package_dir
from harken.speech.smart_turn import SmartTurn, default_smart_turn, log_mel_features
from harken.speech.turn import (
    EntryHook,
    TurnParams,
    TurnPool,
    TurnStage,
    decide,
    text_complete,
)
from harken.speech.vad import VadStage
from harken.speech.vad_batch import SileroBatcher
from harken.testing.stages import Recorder

needs_piper = pytest.mark.skipif(not sd.have_piper(), reason="the piper extra is not installed")

COMPLETE = ("I'd like to book a table for two.", "Can you help me?")
INCOMPLETE = ("I think that, um,", "I want to, hmm,")


@lru_cache(maxsize=8)
def piper_clip(text: str, rate: int = 16000) -> np.ndarray:
    audio, native = sd.piper(text)
    out = sd.to_rate(audio, native, rate)
    out.setflags(write=False)
    return out


def _padded(audio: np.ndarray, rate: int, before: float = 0.5, after: float = 0.2) -> np.ndarray:
    return (
        np.concatenate(
            [np.zeros(int(before * rate)), audio.astype(np.float64), np.zeros(int(after * rate))]
        ).astype(np.float32)
        / 32768
    )


# --------------------------------------------------------------------------------------------
# text and decisions


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("I'd like to book a table for two.", True),
        ("What time do you close?", True),
        ("What is this for?", True),
        ("Thank you.", True),
        ("I think so.", True),
        ("I'd like to book a table for", False),
        ("I'd like to book a table for.", False),  # STT punctuates anyway
        ("My name is, uh,", False),
        ("I was going to say, um", False),
        ("and because", False),
        ("so the thing is...", False),
        ("wait \u2014", False),
        ("I'm calling because", False),
        ("My name is.", False),  # STT punctuates a pause after "is" too
        ("The number is", False),
        ("Yes, it is.", True),
        ("Sure, it's 555-867-5309.", True),  # digits are words: the last is not "it's"
        ("yes", None),
        ("", None),
        ("   ", None),
    ],
)
def test_text_complete(text: str, verdict: bool | None) -> None:
    assert text_complete(text) is verdict


def test_decide() -> None:
    veto = TurnParams(text="veto")
    vote = TurnParams(text="vote")
    off = TurnParams(text="off")
    text_only = TurnParams(model=False)
    assert decide(0.9, None, veto) == (True, "model", 0.9)
    assert decide(0.9, False, veto) == (False, "", 0.9)  # the transcript vetoes
    assert decide(0.9, False, off) == (True, "model", 0.9)  # transcripts ignored
    assert decide(0.3, True, veto) == (False, "", 0.3)
    assert decide(0.3, True, vote) == (True, "text", 0.3)  # the transcript lowers the bar
    assert decide(0.1, True, vote) == (False, "", 0.1)
    assert decide(None, True, veto) == (False, "", None)  # the model has not answered yet
    assert decide(None, True, text_only) == (True, "text", None)
    assert decide(None, None, text_only) == (False, "", None)


@pytest.mark.parametrize(
    ("prob", "text", "expected"),
    [
        (0.9, "I'd like a table for two.", Plan(0.0, "model", 0.9)),
        (0.9, None, Plan(0.0, "model", 0.9)),  # no transcript: the model alone
        (0.9, "Okay.", Plan(0.6, "model", 0.9)),  # an opener: wait for more
        (0.9, "No, wait.", Plan(0.6, "model", 0.9)),
        (0.9, "No thanks.", Plan(0.0, "model", 0.9)),  # "thanks" ends an answer
        (0.9, "I'd like a table for", Plan(2.0, "silence", 0.9)),  # trails off: veto
        (0.9, "So, um,", Plan(2.0, "silence", 0.9)),
        (0.3, "What are your hours?", Plan(0.0, "text", 0.3)),  # vote: the words lower the bar
        (0.1, "Is there parking.", Plan(1.0, "text", 0.1)),  # words complete, model unsure
        (0.1, "What are your hours?", Plan(0.0, "text", 0.1)),  # a question: settled
        (0.03, "Actually, goodbye.", Plan(0.0, "text", 0.03)),  # a farewell: settled
        (0.03, "Goodbye and", Plan(2.0, "silence", 0.03)),  # ... unless it trails off
        (0.1, "Oh sorry, wrong number bye", Plan(0.0, "text", 0.1)),  # unpunctuated farewell
        (0.1, "Sunday", Plan(1.0, "text", 0.1)),  # unpunctuated words: the model unsure
        (0.1, None, Plan(2.0, "silence", 0.1)),  # nothing says complete
        (None, "Sunday.", Plan(0.0, "text", None)),  # no verdict in time: the words decide
        (None, None, Plan(0.7, "timer", None)),  # ... or a plain silence timer
        (None, "Yes.", Plan(0.6, "text", None)),
    ],
)
def test_plan(prob: float | None, text: str | None, expected: Plan) -> None:
    assert plan(prob, text, TurnParams()) == expected


def test_plan_waits_never_exceed_the_backstop() -> None:
    short = TurnParams(silence_s=0.3)
    assert plan(0.1, "Where are you", short) == Plan(0.3, "text", 0.1)
    assert plan(None, None, TurnParams(model=False)) == Plan(2.0, "silence", None)
    assert plan(None, "Fine.", TurnParams(model=False)) == Plan(0.0, "text", None)


@pytest.mark.parametrize(
    ("prob", "text", "entry", "expected"),
    [
        (0.1, "For three.", True, Plan(0.0, "entry", 0.1)),  # a whole answer: at once
        (0.1, "Okay.", True, Plan(0.6, "entry", 0.1)),  # an opener still waits: "Okay, bye"
        (0.1, "Sure, it's 555-867-5309,", True, Plan(0.0, "entry", 0.1)),  # a comma alone
        (0.9, "Tuesday and", True, Plan(2.0, "silence", 0.9)),  # words trailing off still veto
        (0.99, "Hi.", False, Plan(1.2, "entry", 0.99)),  # nothing to act on: wait on
        (0.1, "Five five five.", False, Plan(1.2, "entry", 0.1)),  # longer than unsure_s
        (0.9, "My name is", False, Plan(2.0, "silence", 0.9)),  # a longer wait stands
        (0.9, "Maria Garcia.", None, Plan(0.0, "model", 0.9)),  # no opinion: the table
        (0.9, None, False, Plan(0.0, "model", 0.9)),  # no words, no dialogue verdict
        (0.9, "I'd like to book.", None, Plan(1.2, "entry", 0.9)),  # book what?
        (0.9, "I'd like to book a table.", None, Plan(0.0, "model", 0.9)),
        (0.9, "I'm going to.", None, Plan(2.0, "silence", 0.9)),  # "to" alone trails off
    ],
)
def test_plan_weighs_the_dialogue(
    prob: float, text: str | None, entry: bool | None, expected: Plan
) -> None:
    assert plan(prob, text, TurnParams(), entry) == expected
    off = TurnParams(entry=False)
    assert plan(prob, text, off, entry) == plan(prob, text, off)
    if entry is not None:  # no hook: the words alone
        assert plan(prob, text, TurnParams(), None).reason != "entry"
    assert plan(prob, text, TurnParams(text="off"), entry) == plan(prob, None, TurnParams())


def test_plan_weighs_the_callers_pace() -> None:
    """A caller who paused mid-turn and went on: every end waits that pause, but a question
    or a farewell, and a longer wait stands."""
    p = TurnParams()
    assert plan(0.9, "Tuesday.", p, True, 0.7) == Plan(0.7, "pace", 0.9)
    assert plan(0.9, "At seven thirty.", p, None, 0.7) == Plan(0.7, "pace", 0.9)
    assert plan(0.9, None, p, None, 0.7) == Plan(0.7, "pace", 0.9)  # no words: still
    assert plan(0.1, "Where do I park?", p, None, 0.7) == Plan(0.0, "text", 0.1)
    assert plan(0.1, "Okay, goodbye.", p, None, 0.7) == Plan(0.0, "text", 0.1)
    assert plan(0.9, "Hi.", p, False, 0.7) == Plan(1.2, "entry", 0.9)
    assert plan(0.9, "Well, um", p, None, 0.7) == Plan(2.0, "silence", 0.9)
    assert plan(0.9, "Tuesday.", TurnParams(silence_s=0.5), True, 0.7).wait_s == 0.5
    assert plan(0.9, "Tuesday.", p, True, 0.0) == Plan(0.0, "entry", 0.9)


def test_openers() -> None:
    assert is_opener("Okay.") and is_opener("Yes,") and is_opener("oh, sorry")
    assert not is_opener("Okay, goodbye.") and not is_opener("") and not is_opener("Sunday.")
    assert not is_opener("yes yes yes")


def test_turn_params_validation() -> None:
    with pytest.raises(ConfigError):
        TurnParams(threshold=0.0)
    with pytest.raises(ConfigError):
        TurnParams(text="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        TurnParams(max_audio_s=10)
    with pytest.raises(ConfigError):
        TurnParams(silence_s=0)
    with pytest.raises(ConfigError):
        TurnParams(partial_s=-0.1)


# --------------------------------------------------------------------------------------------
# Smart Turn


def test_features_match_the_reference_implementation() -> None:
    """harken's numpy log-mel equals pipecat's vendored Whisper extractor (loaded by path)."""
    ref_path = package_dir("pipecat", "pipecat-ai") / "audio/turn/smart_turn/_whisper_features.py"
    if not ref_path.is_file():
        pytest.skip("pipecat's reference feature extractor is not installed")
    spec = importlib.util.spec_from_file_location("_ref_whisper_features", ref_path)
    assert spec is not None and spec.loader is not None
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    rng = np.random.default_rng(4)
    for n in (16000 * 2, 16000 * 8, 16000 * 11):  # shorter, exact, longer than 8 s
        x = (rng.standard_normal(n) * 0.05).astype(np.float32)
        x[: n // 3] *= 0.01
        ours = log_mel_features(x)
        fitted = np.pad(x, (max(0, 128000 - n), 0))[-128000:]
        theirs = ref.compute_whisper_log_mel_features(fitted, do_normalize=True)
        assert ours.shape == theirs.shape == (80, 800)
        assert np.max(np.abs(ours - theirs)) < 1e-4


def test_smart_turn_session_shapes() -> None:
    model = SmartTurn()
    probs = model.predict_many([np.zeros(16000, np.float32), np.zeros(100, np.float32)])
    assert len(probs) == 2
    assert all(0.0 <= p <= 1.0 for p in probs)


@needs_piper
def test_smart_turn_clear_cases() -> None:
    model = default_smart_turn()
    clips = [_padded(piper_clip(t), 16000) for t in COMPLETE + INCOMPLETE]
    probs = model.predict_many(clips)
    for text, p in zip(COMPLETE, probs[: len(COMPLETE)], strict=True):
        assert p >= 0.7, (text, p)
    for text, p in zip(INCOMPLETE, probs[len(COMPLETE) :], strict=True):
        assert p < 0.3, (text, p)


async def test_turn_pool_runs_off_the_loop_and_reports_failures() -> None:
    pool = TurnPool()
    p = await pool.predict(np.zeros(8000, np.int16), 8000)
    assert p is not None and 0.0 <= p <= 1.0

    class Broken(SmartTurn):
        def predict_many(self, audios: list[np.ndarray]) -> list[float]:
            raise RuntimeError("model exploded")

    broken = TurnPool(Broken())
    assert await broken.predict(np.zeros(8000, np.int16), 8000) is None
    assert broken.failed == 1


# --------------------------------------------------------------------------------------------
# the stage, with a pool the test answers for


class FakePool:
    """Stands in for :class:`TurnPool`: records requests; the test answers them."""

    def __init__(self) -> None:
        self.requests: list[tuple[np.ndarray, int, object]] = []

    def submit(
        self, pcm: np.ndarray, rate: int, done: object, *, deadline: float | None = None
    ) -> None:
        self.requests.append((pcm, rate, done))

    def answer(self, p: float | None, i: int = -1) -> None:
        self.requests[i][2](p)  # type: ignore[operator]


async def _turn_call(
    params: TurnParams, entry: EntryHook | None = None
) -> tuple[Call, TurnStage, Recorder, FakePool]:
    pool = FakePool()
    stage = TurnStage(params, pool=pool, entry=entry)  # type: ignore[arg-type]
    recorder = Recorder()
    call = Call(Pipeline([stage, recorder]))
    await call.start(StartFrame(sample_rate_in=8000))
    return call, stage, recorder, pool


def _audio(call: Call, start: float, end: float, rate: int = 8000) -> None:
    """Feed 20 ms frames of quiet noise covering media time [start, end)."""
    rng = np.random.default_rng(int(start * 1000))
    t = start
    while t < end - 1e-9:
        pcm = (rng.standard_normal(rate // 50) * 30).astype(np.int16).tobytes()
        call.feed(AudioFrame(pcm, rate, timestamp=t))
        t = round(t + 0.02, 6)


def _ends(recorder: Recorder) -> list[tuple[str, float, float | None]]:
    return [(f.reason, f.speech_end, f.confidence) for f in recorder.of(UserTurnEndFrame)]


async def test_model_complete_ends_the_turn() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(silence_s=1.0))
    _audio(call, 0.0, 0.5)
    call.system(UserStartedSpeakingFrame(timestamp=0.5))
    _audio(call, 0.5, 2.0)
    call.system(UserStoppedSpeakingFrame(timestamp=1.8))
    assert len(pool.requests) == 1
    pcm, rate, _ = pool.requests[0]
    assert rate == 8000
    assert pcm.size == 2.0 * 8000  # from 0.5 s before the speech start to 0.2 s after its end
    assert _ends(recorder) == []
    pool.answer(0.9)
    assert _ends(recorder) == [("model", 1.8, 0.9)]
    _audio(call, 2.0, 4.0)  # no backstop after the turn has ended
    assert len(_ends(recorder)) == 1
    call.cancel()


async def test_incomplete_waits_for_the_silence_backstop() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(silence_s=1.0))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.system(UserStoppedSpeakingFrame(timestamp=1.3))
    pool.answer(0.1)
    _audio(call, 1.5, 2.28)
    assert _ends(recorder) == []
    _audio(call, 2.28, 2.4)  # media time reaches stop + 1.0 s
    assert _ends(recorder) == [("silence", 1.3, 0.1)]
    call.cancel()


async def test_speech_resuming_discards_the_pending_verdict() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(silence_s=1.0))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.system(UserStoppedSpeakingFrame(timestamp=1.3))
    call.system(UserStartedSpeakingFrame(timestamp=1.45))  # the caller goes on
    pool.answer(0.95, 0)  # the stale verdict arrives: ignored
    _audio(call, 1.5, 3.0)  # and no backstop while speaking
    assert _ends(recorder) == []
    _audio(call, 3.0, 3.2)
    call.system(UserStoppedSpeakingFrame(timestamp=2.9))
    assert len(pool.requests) == 2
    assert pool.requests[1][0].size == 3.1 * 8000  # the whole turn (all the audio there is)
    assert pool.requests[0][0].size == 1.5 * 8000  # up to 1.3 + 0.2 s
    pool.answer(0.8, 1)
    assert _ends(recorder) == [("model", 2.9, 0.8)]
    call.cancel()


async def test_results_after_the_call_ended_are_dropped() -> None:
    call, stage, recorder, pool = await _turn_call(TurnParams())
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.0)
    call.system(UserStoppedSpeakingFrame(timestamp=0.9))
    call.cancel()
    await call.wait()
    pool.answer(0.99)
    assert _ends(recorder) == []
    assert stage.closed


async def test_transcript_veto_then_completion() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(text="veto", silence_s=3.0))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.feed(TranscriptFrame("I'd like to book a table", final=True))
    call.feed(TranscriptFrame("for", final=False))
    call.system(UserStoppedSpeakingFrame(timestamp=1.4))
    pool.answer(0.9)
    assert _ends(recorder) == []  # "... a table for" cannot be the end
    call.feed(TranscriptFrame("for two.", final=True))  # the final replaces the interim
    assert _ends(recorder) == [("model", 1.4, 0.9)]
    call.cancel()


async def test_text_only_turns() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(model=False, silence_s=3.0))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.system(UserStoppedSpeakingFrame(timestamp=1.4))
    assert pool.requests == []
    call.feed(TranscriptFrame("Yes, that works", final=False))
    assert _ends(recorder) == []
    call.feed(TranscriptFrame("Yes, that works for me.", final=True))
    assert _ends(recorder) == [("text", 1.4, None)]
    call.cancel()


async def test_vote_lets_a_complete_transcript_lower_the_bar() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(text="vote"))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.feed(TranscriptFrame("Can you help me?", final=True))
    call.system(UserStoppedSpeakingFrame(timestamp=1.4))
    pool.answer(0.3)
    assert _ends(recorder) == [("text", 1.4, 0.3)]
    call.cancel()


async def test_wall_clock_backstop_when_audio_stops() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(silence_s=0.05))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.0)
    call.system(UserStoppedSpeakingFrame(timestamp=0.9))
    pool.answer(0.2)
    for _ in range(200):  # the transport sends nothing more; the timer decides
        if _ends(recorder):
            break
        await asyncio.sleep(0.01)
    assert _ends(recorder) == [("silence", 0.9, 0.2)]
    call.cancel()


async def test_an_opener_waits_for_more_speech_then_ends() -> None:
    call, _stage, recorder, pool = await _turn_call(TurnParams(wait_text_s=0.4))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 0.9)
    call.system(UserStoppedSpeakingFrame(timestamp=0.6))  # heard at 0.9
    pool.answer(0.95)  # Smart Turn: complete
    assert _ends(recorder) == []  # but the words are not known yet
    call.feed(TranscriptFrame("Okay.", final=False, speculative=True))
    assert _ends(recorder) == []  # "Okay." alone: wait for 0.6 s of silence
    _audio(call, 0.9, 1.18)
    assert _ends(recorder) == []
    _audio(call, 1.18, 1.22)
    assert _ends(recorder) == [("model", 0.6, 0.95)]
    call.cancel()


async def test_the_dialogue_holds_a_partial_answer_and_ends_a_whole_one() -> None:
    asked: list[str] = []

    def phone_number(text: str) -> bool | None:
        asked.append(text)
        digits = sum(c.isdigit() for c in text)
        return None if not digits else digits >= 10

    params = TurnParams(silence_s=3.0, pace_max_s=0.0)  # the caller's pace: the next test
    call, _stage, recorder, pool = await _turn_call(params, phone_number)
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.feed(TranscriptFrame("It's 555.", final=True))
    call.system(UserStoppedSpeakingFrame(timestamp=1.4))
    pool.answer(0.95)  # Smart Turn: complete; the dialogue: three digits are not a number
    _audio(call, 1.5, 2.58)
    assert _ends(recorder) == []
    call.system(UserStartedSpeakingFrame(timestamp=2.4))  # the caller goes on
    _audio(call, 2.58, 3.5)
    call.feed(TranscriptFrame("867-5309.", final=True))
    call.system(UserStoppedSpeakingFrame(timestamp=3.4))
    assert _ends(recorder) == []  # the model's verdict is pending
    pool.answer(0.05)  # the model unsure; ten digits are a whole answer
    assert _ends(recorder) == [("entry", 3.4, 0.05)]
    assert asked == ["It's 555.", "It's 555. 867-5309."]  # each pause asks once per text
    call.cancel()


async def test_the_partial_wait_ends_the_turn_and_a_failing_hook_is_ignored() -> None:
    def broken(text: str) -> bool | None:
        raise RuntimeError("a bug in the brain")

    for hook, end in ((lambda text: False, 2.6), (broken, 1.4)):
        call, _stage, recorder, pool = await _turn_call(TurnParams(silence_s=3.0), hook)
        call.system(UserStartedSpeakingFrame(timestamp=0.2))
        _audio(call, 0.0, 1.5)
        call.feed(TranscriptFrame("I need a table.", final=True))
        call.system(UserStoppedSpeakingFrame(timestamp=1.4))
        pool.answer(0.9)
        if end > 2:
            _audio(call, 1.5, end - 0.02)
            assert _ends(recorder) == []  # complete to the model, not to the dialogue
        _audio(call, max(1.5, end - 0.02), end + 0.02)
        assert _ends(recorder) == [("entry" if end > 2 else "model", 1.4, 0.9)]
        call.cancel()


async def test_a_caller_who_pauses_mid_turn_gets_that_pause_at_the_ends_that_follow() -> None:
    """ "Tuesday ... at six pm": whole to the model and to the dialogue at the pause. Once the
    caller has gone on after a 0.64 s pause, ends wait that pause plus a margin (this turn and
    the next), except a question; two turns later, a fluent caller is answered at once."""
    call, stage, recorder, pool = await _turn_call(TurnParams(silence_s=3.0))
    t = 0.0

    def turn(
        pause: float | None, text: str, answer_at: float = 0.3
    ) -> tuple[float, list[tuple[str, float, float | None]]]:
        """Speech of 1 s (resumed after ``pause`` when given), the model says complete;
        (media time of the decision, ends)."""
        nonlocal t
        call.system(UserStartedSpeakingFrame(timestamp=t + 0.2))
        _audio(call, t, t + 1.2)
        if pause is not None:
            call.feed(TranscriptFrame("Well, um", final=True))  # trails off: no end here
            call.system(UserStoppedSpeakingFrame(timestamp=t + 1.2))
            _audio(call, t + 1.2, t + 1.2 + pause)
            call.system(UserStartedSpeakingFrame(timestamp=t + 1.2 + pause))  # goes on
            t += pause + 1.0
            _audio(call, t + 0.2, t + 1.2)
        call.feed(TranscriptFrame(text, final=True))
        stop = t + 1.2
        call.system(UserStoppedSpeakingFrame(timestamp=stop))
        _audio(call, stop, stop + answer_at)
        n = len(stage.ends)
        pool.answer(0.95)
        while len(stage.ends) == n:
            _audio(call, round(stop + answer_at, 6), round(stop + answer_at + 0.02, 6))
            answer_at = round(answer_at + 0.02, 6)
        t = stop + 2.0
        _audio(call, stop + answer_at, t)
        return round(stage.ends[-1][3] - stop, 2), _ends(recorder)[-1:]

    assert stage.pace_s == 0.0
    assert turn(None, "For three.") == (0.3, [("model", 1.2, 0.95)])  # fluent: at once
    wait, end = turn(0.64, "Tuesday at six pm.")  # paused, went on, then stopped
    assert wait == 0.72 and end[0][0] == "pace"
    assert stage.pace_s == pytest.approx(0.64 * 1.05 + 0.04)
    assert turn(None, "At seven.")[0] == 0.72  # the turn after: still this caller's pace
    assert turn(None, "Is there parking?")[0] == 0.3  # a question is whole: at once
    assert turn(None, "Maria Garcia.") == (0.3, [("model", stop_of(stage), 0.95)])
    assert stage.pace_s == 0.0
    turn(1.9, "Thursday.")  # a very long pause: the wait is capped at pace_max_s
    assert stage.pace_s == pytest.approx(TurnParams().pace_max_s)
    call.cancel()
    # off
    call, stage, recorder, pool = await _turn_call(TurnParams(silence_s=3.0, pace_max_s=0.0))
    assert turn(0.64, "Tuesday at six pm.")[0] == 0.3
    call.cancel()


async def test_a_caller_who_went_on_after_the_turn_ended_is_given_that_pause() -> None:
    """ "I'd like to book" misheard as "I'd like to vote." ends the turn; the caller goes on
    0.64 s after their speech (0.24 s into the agent's reply, too soon to be a reply to it):
    the next turn ends only after that pause. Speech that comes when the caller could have
    heard the reply, or after a turn that ended over the agent, teaches nothing."""

    async def went_on(after_agent: float, over_agent: bool = False) -> float:
        call, stage, _recorder, pool = await _turn_call(TurnParams(silence_s=3.0))
        if over_agent:
            call.system(AgentStartedSpeakingFrame(utterance_id=1))
        call.system(UserStartedSpeakingFrame(timestamp=0.2))
        _audio(call, 0.0, 1.5)
        call.system(UserStoppedSpeakingFrame(timestamp=1.2))
        pool.answer(0.95)  # ended at 1.5
        assert len(stage.ends) == 1
        if not over_agent:
            _audio(call, 1.5, 1.6)
            call.system(AgentStartedSpeakingFrame(utterance_id=1))  # the reply, at 1.6
        _audio(call, 1.6, 1.6 + after_agent)
        call.system(UserStartedSpeakingFrame(timestamp=1.6 + after_agent))  # the caller
        _audio(call, 1.6 + after_agent, 3.0)
        call.system(AgentStoppedSpeakingFrame(utterance_id=1))  # cut off by the caller
        call.system(UserStoppedSpeakingFrame(timestamp=3.0))
        pool.answer(0.95)
        n = 0
        while len(stage.ends) == 1:
            _audio(call, round(3.0 + 0.02 * n, 6), round(3.02 + 0.02 * n, 6))
            n += 1
        call.cancel()
        return round(stage.ends[-1][3] - 3.0, 2)

    p = TurnParams()  # (decided at the end of a 20 ms frame)
    assert await went_on(0.24) == pytest.approx(0.64 * p.pace_ratio + p.pace_margin_s, abs=0.02)
    assert await went_on(0.45) == pytest.approx(0.85 * p.pace_ratio + p.pace_margin_s, abs=0.02)
    assert await went_on(0.6) == 0.0  # the reply was audible for 0.6 s: a reply to it
    assert await went_on(0.24, over_agent=True) == 0.0  # a backchannel before, not a pause


def stop_of(stage: TurnStage) -> float:
    return stage.ends[-1][1]


def _loud(call: Call, start: float, end: float, rate: int = 8000) -> None:
    """20 ms frames of a loud tone (the caller talking again) over media time [start, end)."""
    t = start
    tone = (np.sin(2 * np.pi * 300 * np.arange(rate // 50) / rate) * 6000).astype(np.int16)
    while t < end - 1e-9:
        call.feed(AudioFrame(tone.tobytes(), rate, timestamp=t))
        t = round(t + 0.02, 6)


async def _resumed(resume_wait_s: float, loud_to: float) -> tuple[Call, TurnStage, Recorder]:
    """A turn paused at 0.8 s whose caller is loud again from 1.0 s to ``loud_to`` (the VAD
    has not confirmed it) when the model answers "complete"."""
    call, stage, recorder, pool = await _turn_call(TurnParams(resume_wait_s=resume_wait_s))
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.0)
    call.system(UserStoppedSpeakingFrame(timestamp=0.8))
    _loud(call, 1.0, loud_to)  # the caller goes on
    pool.answer(0.9)  # complete, says the model
    return call, stage, recorder


async def test_no_end_while_the_caller_is_audible_again() -> None:
    """The plan says "end now", but the caller is talking again and the VAD has not confirmed
    it yet: the turn waits, frame by frame, until the VAD's start (or quiet, or the cap)."""
    call, _stage, recorder = await _resumed(0.5, 1.06)
    _loud(call, 1.06, 1.2)
    assert _ends(recorder) == []  # audible: not now
    call.system(UserStartedSpeakingFrame(timestamp=1.0))  # the VAD confirms: the turn goes on
    _audio(call, 1.2, 3.5)
    assert _ends(recorder) == []
    call.cancel()
    # a noise that never becomes speech delays the end by resume_wait_s at most
    call, _stage, recorder = await _resumed(0.1, 1.04)
    _loud(call, 1.04, 1.5)
    assert _ends(recorder) == [("model", 0.8, 0.9)]
    assert 1.1 <= _stage.ends[0][3] <= 1.2  # decided 0.1 s late
    call.cancel()


async def test_the_audible_hold_off_is_measured_in_time_not_in_checks() -> None:
    """Regression: the hold-off re-armed itself 1 ms ahead and the wall-clock timer fired at
    once, each pass counting as a 20 ms frame, so 0.5 s of hold-off ran out ~80 ms after the
    stop (seen in the simulator: turns ended at sentence breaks while the caller went on)."""
    call, _stage, recorder = await _resumed(0.5, 1.06)
    await asyncio.sleep(0.05)  # the event loop runs: the wall-clock timer may fire meanwhile
    assert _ends(recorder) == []
    _loud(call, 1.06, 1.2)
    assert _ends(recorder) == []
    call.system(UserStartedSpeakingFrame(timestamp=1.0))  # the VAD confirms: the turn goes on
    assert _ends(recorder) == []
    call.cancel()
    # without frames, the wall clock alone ends the hold-off after resume_wait_s
    call, _stage, recorder = await _resumed(0.1, 1.06)
    t0 = asyncio.get_running_loop().time()
    for _ in range(100):
        if _ends(recorder):
            break
        await asyncio.sleep(0.01)
    assert _ends(recorder) == [("model", 0.8, 0.9)]
    assert asyncio.get_running_loop().time() - t0 >= 0.08
    call.cancel()


async def test_the_stage_waits_for_the_words_up_to_the_stop() -> None:
    params = TurnParams(wait_text_s=0.4)
    call, _stage, recorder, pool = await _turn_call(params)
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.feed(TranscriptFrame("I'd like a table", final=False))  # an old interim
    call.system(UserStoppedSpeakingFrame(timestamp=1.3))
    pool.answer(0.9)
    assert _ends(recorder) == []  # the interim is from before the stop: wait for the words
    call.feed(TranscriptFrame("I'd like a table for two.", final=False, speculative=True))
    assert _ends(recorder) == [("model", 1.3, 0.9)]
    call.cancel()
    # the words never come: decide without them once wait_text_s has passed
    call, _stage, recorder, pool = await _turn_call(params)
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.5)
    call.system(UserStoppedSpeakingFrame(timestamp=1.3))
    pool.answer(0.9)
    _audio(call, 1.5, 1.88)
    assert _ends(recorder) == []
    _audio(call, 1.88, 1.92)
    assert _ends(recorder) == [("model", 1.3, 0.9)]
    call.cancel()


async def test_a_late_verdict_gives_way_to_the_fallback_timer() -> None:
    call, stage, recorder, pool = await _turn_call(TurnParams())
    call.system(UserStartedSpeakingFrame(timestamp=0.2))
    _audio(call, 0.0, 1.0)
    call.system(UserStoppedSpeakingFrame(timestamp=0.8))
    _audio(call, 1.0, 1.48)
    assert _ends(recorder) == []
    _audio(call, 1.48, 1.52)  # 0.7 s after the end of speech, no verdict yet
    assert _ends(recorder) == [("timer", 0.8, None)]
    pool.answer(0.1)  # too late: dropped
    assert len(stage.ends) == 1
    call.cancel()


async def test_pool_skips_expired_requests_and_keeps_to_its_cpu_budget() -> None:
    class Slow(SmartTurn):
        def predict_many(self, audios: list[np.ndarray]) -> list[float]:
            import time

            time.sleep(0.05)
            return [0.5] * len(audios)

    import time

    pool = TurnPool(Slow(), max_batch=1)
    clip = np.zeros(800, np.int16)
    loop = asyncio.get_running_loop()
    answers: list[float | None] = []
    fut = loop.create_future()

    def done(p: float | None) -> None:
        answers.append(p)
        if len(answers) == 3 and not fut.done():
            fut.set_result(None)

    pool.submit(clip, 8000, done)
    pool.submit(clip, 8000, done, deadline=time.monotonic() + 0.01)  # expires in the queue
    pool.submit(clip, 8000, done)
    await asyncio.wait_for(fut, 5)
    assert answers == [0.5, None, 0.5] and pool.expired == 1

    busy = TurnPool(Slow(), max_batch=1, max_busy=0.004, window_s=10)
    first = await busy.predict(clip, 8000)
    second = await busy.predict(clip, 8000)  # 50 ms in 10 s is over a 0.4% budget
    assert first == 0.5 and second is None and busy.over_budget == 1


async def test_long_turns_send_the_last_eight_seconds() -> None:
    call, _stage, _recorder, pool = await _turn_call(TurnParams())
    call.system(UserStartedSpeakingFrame(timestamp=0.5))
    _audio(call, 0.0, 12.0)
    call.system(UserStoppedSpeakingFrame(timestamp=11.7))
    assert pool.requests[0][0].size == 8 * 8000
    call.cancel()


# --------------------------------------------------------------------------------------------
# end to end: VAD + turn detection on a phone call, real models


def _phone_call(text: str, rate: int, seed: int) -> tuple[bytes, float]:
    rng = np.random.default_rng(seed)
    speech = piper_clip(text, rate).astype(np.float64) * 1.5
    lead, tail = int(0.8 * rate), int(2.5 * rate)
    mix = np.concatenate([np.zeros(lead), speech, np.zeros(tail)])
    noise = sd.line_noise(mix.size, rate, rng, level_dbfs=-52.0)
    pcm = sd.phone_channel(np.clip(np.round(mix) + noise, -32768, 32767).astype(np.int16), rate)
    return pcm.tobytes(), (lead + speech.size) / rate


async def _run_turn_call(pcm: bytes, rate: int, params: TurnParams) -> tuple[Recorder, TurnStage]:
    batcher = SileroBatcher(manual=True)
    turn = TurnStage(params)
    recorder = Recorder()
    call = Call(Pipeline([VadStage(batcher=batcher), turn, recorder]))
    await call.start(StartFrame(sample_rate_in=rate))
    step = rate // 50 * 2
    for k in range(len(pcm) // step):
        call.feed(AudioFrame(pcm[k * step : (k + 1) * step], rate, timestamp=k * 0.02))
        batcher.pump()
        if recorder.of(UserTurnEndFrame):
            break
        if turn._requested:  # a verdict is on its way: let it land before media time moves on
            for _ in range(1000):
                await asyncio.sleep(0.005)
                if not turn._requested:
                    break
    call.cancel()
    return recorder, turn


@needs_piper
async def test_vad_and_turn_detection_on_a_phone_call() -> None:
    rate = 8000
    params = TurnParams(silence_s=1.5)
    pcm, speech_end = _phone_call(COMPLETE[0], rate, seed=1)
    recorder, turn = await _run_turn_call(pcm, rate, params)
    (end,) = recorder.of(UserTurnEndFrame)
    assert end.reason == "model"
    assert abs(end.speech_end - speech_end) <= 0.08
    assert len(recorder.of(UserStoppedSpeakingFrame)) == 1

    # a trailing filler without a pause before it: on 8 kHz audio Smart Turn takes a comma
    # pause ("I think that, um,") for an end far more often than on wideband audio
    pcm, speech_end = _phone_call("I would like to order the um", rate, seed=2)
    recorder, turn = await _run_turn_call(pcm, rate, params)
    ends = recorder.of(UserTurnEndFrame)
    assert [e.reason for e in ends] == ["silence"]
    assert turn.verdicts and all(p is not None and p < 0.5 for _, p, _ in turn.verdicts)


def test_inference_threads_run_below_the_event_loop() -> None:
    """Pool threads lower their own priority (Linux per-thread nice); the caller's is unchanged."""
    import os
    import sys
    import threading

    from harken.speech.models import BACKGROUND_NICE, background_thread

    if not sys.platform.startswith("linux"):
        pytest.skip("per-thread nice is Linux only")
    seen: list[int] = []

    def run() -> None:
        before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        background_thread()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - before)

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [min(BACKGROUND_NICE, 19 - mine)]
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine
