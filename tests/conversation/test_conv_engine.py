"""The conversation engine's turn-taking, barge-in, idle and ending rules (no models)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from harken.conversation import (
    BargeInParams,
    ConversationEngine,
    EngineSettings,
    Hangup,
    Heard,
    Piece,
    Say,
    State,
)
from harken.conversation.policy import BargeIn
from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    DTMFFrame,
    HangupFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    PausePlaybackFrame,
    ResumePlaybackFrame,
    StartFrame,
    TextFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Call, Pipeline
from harken.testing.stages import Recorder

SILENCE_20MS = bytes(320)
# caller speech stand-in: a 440 Hz tone at about -13 dBFS (above the barge-in level floor)
SPEECH_20MS = (np.sin(2 * np.pi * 440 * np.arange(160) / 8000) * 8000).astype(np.int16).tobytes()


class ScriptedBrain:
    """Answers every event with fixed text; ``delay`` between pieces; records what was heard."""

    def __init__(self, reply: str = "Sure, I can help with that. What day works?") -> None:
        self.reply_text = reply
        self.delay = 0.0
        self.heard_log: list[Heard] = []
        self.texts: list[str] = []
        self.digits: list[str] = []
        self.idles: list[int] = []
        self.hangup_after: str | None = None

    async def _say(self, text: str) -> AsyncIterator[Piece]:
        for word in text.split(" "):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield Say(word + " ")
        if self.hangup_after is not None:
            yield Hangup(self.hangup_after)

    def greet(self) -> AsyncIterator[Piece]:
        return self._say("Hello there, thanks for calling.")

    def reply(self, text: str) -> AsyncIterator[Piece]:
        self.texts.append(text)
        return self._say(self.reply_text)

    def dtmf(self, digits: str) -> AsyncIterator[Piece]:
        self.digits.append(digits)
        return self._say(f"You pressed {digits}.")

    def idle(self, count: int) -> AsyncIterator[Piece]:
        self.idles.append(count)
        return self._say("Are you still there?")

    def heard(self, result: Heard) -> None:
        self.heard_log.append(result)


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def make(
    brain: ScriptedBrain, settings: EngineSettings | None = None, heard: object = None
) -> tuple[Call, ConversationEngine, Recorder]:
    engine = ConversationEngine(brain, settings or EngineSettings(), heard=heard)  # type: ignore[arg-type]
    rec = Recorder()
    call = Call(Pipeline([engine, rec]), call_id="t")
    await call.start(StartFrame(call_id="t", sample_rate_in=8000, sample_rate_out=8000))
    await settle()
    return call, engine, rec


def texts(rec: Recorder) -> list[str]:
    return [f.text for f in rec.of(TextFrame)]


def play_through(call: Call, uid: int, played: float = 1.0, interrupted: bool = False) -> None:
    call.system(AgentStartedSpeakingFrame(utterance_id=uid))
    call.system(
        AgentStoppedSpeakingFrame(
            utterance_id=uid, played_s=played, interrupted=interrupted, strategy="mark"
        )
    )


async def caller_turn(call: Call, text: str, start: float = 5.0) -> None:
    call.system(UserStartedSpeakingFrame(timestamp=start))
    call.system(UserStoppedSpeakingFrame(timestamp=start + 1))
    call.system(UserTurnEndFrame(speech_end=start + 1, reason="model"))
    call.feed(TranscriptFrame(text, final=True))
    await settle()


async def test_greeting_first_clause_short_and_bracketed() -> None:
    brain = ScriptedBrain()
    call, engine, rec = await make(brain)
    kinds = [type(f) for f in rec.down]
    assert kinds[0] is LLMResponseStartFrame and kinds[-1] is LLMResponseEndFrame
    assert " ".join(texts(rec)).split() == ["Hello", "there,", "thanks", "for", "calling."]
    assert texts(rec)[0] == "Hello there,"  # first clause short: speech starts early
    assert engine.state is State.THINKING
    play_through(call, 1)
    assert engine.state is State.LISTENING
    assert brain.heard_log[-1].heard == brain.heard_log[-1].spoken
    call.cancel()


async def test_turn_is_answered_after_final_and_engine_overhead_recorded() -> None:
    brain = ScriptedBrain()
    call, engine, rec = await make(brain)
    play_through(call, 1)
    await caller_turn(call, "I'd like a table")
    assert brain.texts == ["I'd like a table"]
    record = engine.replies[-1]
    assert record.kind == "turn" and record.engine_ms is not None and record.engine_ms < 50
    assert "What day works?" in " ".join(texts(rec))
    call.cancel()


async def test_empty_turn_returns_to_listening_after_timeout() -> None:
    brain = ScriptedBrain()
    call, engine, _ = await make(brain, EngineSettings(final_timeout_s=0.05, idle_s=0))
    play_through(call, 1)
    call.system(UserStartedSpeakingFrame(timestamp=3.0))
    call.system(UserTurnEndFrame(speech_end=3.5, reason="silence"))
    assert engine.state is State.THINKING
    await asyncio.sleep(0.1)
    assert engine.state is State.LISTENING and engine.empty_turns == 1
    call.cancel()


def feed_audio(call: Call, start: float, seconds: float, pcm: bytes = SPEECH_20MS) -> None:
    t = start
    while t < start + seconds - 1e-9:
        call.feed(AudioFrame(pcm, 8000, timestamp=t))
        t += 0.02


async def test_barge_in_after_min_duration_interrupts_and_rewrites_heard() -> None:
    brain = ScriptedBrain("one two three four five six seven eight nine ten.")
    lookups: list[tuple[int, float]] = []

    def heard(uid: int, played: float) -> str:
        lookups.append((uid, played))
        return "one two three"

    settings = EngineSettings(barge_in=BargeInParams(interrupt_min_s=0.3))
    call, engine, rec = await make(brain, settings, heard)
    play_through(call, 1)
    await caller_turn(call, "count please")
    call.system(AgentStartedSpeakingFrame(utterance_id=2))
    assert engine.state is State.AGENT_SPEAKING
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=20.0))
    feed_audio(call, 20.0, 0.2)
    assert call.generation == gen  # not yet: 0.2 s < 0.3 s
    feed_audio(call, 20.2, 0.2)
    assert call.generation == gen + 1  # interrupted
    assert rec.of(InterruptionFrame)
    assert engine.state is State.USER_SPEAKING and engine.interruptions == 1
    call.system(
        AgentStoppedSpeakingFrame(utterance_id=2, played_s=1.1, interrupted=True, strategy="x")
    )
    assert lookups == [(2, 1.1)]
    assert brain.heard_log[-1] == Heard(brain.heard_log[-1].spoken, "one two three", True)
    # the caller's turn goes on and is answered
    call.system(UserStoppedSpeakingFrame(timestamp=21.0))
    call.system(UserTurnEndFrame(speech_end=21.0, reason="model"))
    call.feed(TranscriptFrame("stop counting", final=True))
    await settle()
    assert brain.texts[-1] == "stop counting"
    call.cancel()


async def test_backchannel_does_not_interrupt_however_long() -> None:
    brain = ScriptedBrain()
    settings = EngineSettings(barge_in=BargeInParams(interrupt_min_s=0.3))
    call, engine, _ = await make(brain, settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    call.feed(TranscriptFrame("uh-huh yeah", final=False))
    feed_audio(call, 2.0, 1.0)
    call.system(UserStoppedSpeakingFrame(timestamp=3.0))
    call.system(UserTurnEndFrame(speech_end=3.0, reason="model"))
    call.feed(TranscriptFrame("Uh-huh, yeah.", final=True))
    await settle()
    assert call.generation == gen and engine.state is State.AGENT_SPEAKING
    assert engine.backchannels == 1 and engine.interruptions == 0
    call.cancel()


def test_hums_are_backchannels_however_they_are_spelt() -> None:
    """tiny.en on 8 kHz writes a caller's "Mm-hmm." as "MMMM." and "Mhm." as "M-H-M."."""
    for text in ("MMMM.", "M-H-M.", "Mmhmm, okay.", "Hmmm.", "Uhh, uh-huh.", "mm hm"):
        assert BargeIn.only_backchannel(text), text
    for text in ("Huh?", "Hm, stop.", "Mum.", "Ohm.", "Mm-hmm, Thursday."):
        assert not BargeIn.only_backchannel(text), text


async def test_short_speech_over_the_agent_waits_for_its_words() -> None:
    """ "Yeah." is over before the time threshold: its words decide, and they are a backchannel;
    "Stop." is as short but interrupts; no words at all resume the agent after a while."""
    settings = EngineSettings(barge_in=BargeInParams(interrupt_min_s=0.5), barge_words_s=0.1)
    for words, interrupts in (("Yeah.", False), ("Stop.", True), ("Uh-huh, okay.", False)):
        brain = ScriptedBrain()
        call, engine, rec = await make(brain, settings)
        call.system(AgentStartedSpeakingFrame(utterance_id=1))
        gen = call.generation
        call.system(UserStartedSpeakingFrame(timestamp=2.0))
        assert rec.of(PausePlaybackFrame)  # held at once
        feed_audio(call, 2.0, 0.3)
        feed_audio(call, 2.3, 0.4, SILENCE_20MS)  # past the threshold, but quiet: not yet
        assert call.generation == gen
        call.system(UserStoppedSpeakingFrame(timestamp=2.3))
        assert not rec.of(ResumePlaybackFrame)  # held a moment: a comma pause, or its words
        assert engine.backchannels == 0
        call.feed(TranscriptFrame(words, final=False, speculative=True))
        assert call.generation == (gen + 1 if interrupts else gen), words
        assert engine.interruptions == int(interrupts)
        assert engine.backchannels == int(not interrupts)
        assert bool(rec.of(ResumePlaybackFrame)) is not interrupts  # a backchannel: resumed
        call.cancel()

    brain = ScriptedBrain()
    call, engine, rec = await make(brain, settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    feed_audio(call, 2.0, 0.3)
    call.system(UserStoppedSpeakingFrame(timestamp=2.3))
    await asyncio.sleep(0.2)  # no transcript comes
    assert engine.backchannels == 1 and rec.of(ResumePlaybackFrame)
    call.cancel()

    # the words are slow: the audio resumes after barge_resume_s, and they still decide
    slow = EngineSettings(barge_in=BargeInParams(interrupt_min_s=0.5), barge_words_s=1.0)
    call, engine, rec = await make(ScriptedBrain(), slow)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    feed_audio(call, 2.0, 0.3)
    call.system(UserStoppedSpeakingFrame(timestamp=2.3))
    await asyncio.sleep(0.3)
    assert rec.of(ResumePlaybackFrame) and engine.backchannels == 0
    call.feed(TranscriptFrame("No.", final=False, speculative=True))
    assert call.generation == gen + 1 and engine.interruptions == 1
    call.cancel()


async def test_a_short_candidate_stays_held_while_the_caller_sounds_again() -> None:
    """ "No wait, | make it five": the VAD's stop came in the comma pause and the caller is
    already talking again (not yet confirmed by the VAD): the audio must not resume into it."""
    settings = EngineSettings(
        barge_in=BargeInParams(interrupt_min_s=0.5), barge_words_s=0.2, barge_resume_s=0.05
    )
    call, engine, rec = await make(ScriptedBrain(), settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    feed_audio(call, 2.0, 0.3)
    call.system(UserStoppedSpeakingFrame(timestamp=2.3))
    t = 2.3
    for _ in range(15):  # 0.3 s of wall time with the caller sounding, frame by frame
        feed_audio(call, t, 0.02)
        t += 0.02
        await asyncio.sleep(0.02)
    assert not rec.of(ResumePlaybackFrame)  # past barge_resume_s and barge_words_s: still held
    call.system(UserStartedSpeakingFrame(timestamp=2.35))  # the VAD confirms it
    feed_audio(call, t, 0.4)
    call.feed(TranscriptFrame("No wait, make it five", final=False))
    assert call.generation == gen + 1 and engine.interruptions == 1
    call.cancel()
    # once the caller is quiet, the held audio goes on as before
    call, engine, rec = await make(ScriptedBrain(), settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    feed_audio(call, 2.0, 0.3)
    call.system(UserStoppedSpeakingFrame(timestamp=2.3))
    feed_audio(call, 2.3, 0.3, SILENCE_20MS)
    await asyncio.sleep(0.3)
    assert rec.of(ResumePlaybackFrame) and engine.backchannels == 1
    call.cancel()


async def test_speech_still_sounding_at_the_threshold_interrupts() -> None:
    settings = EngineSettings(barge_in=BargeInParams(interrupt_min_s=0.5))
    call, _engine, _ = await make(ScriptedBrain(), settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    feed_audio(call, 2.0, 0.3)
    feed_audio(call, 2.3, 0.3, SILENCE_20MS)  # a pause inside the sentence
    assert call.generation == gen
    feed_audio(call, 2.6, 0.02)  # the caller goes on
    assert call.generation == gen + 1
    call.cancel()


async def test_words_interrupt_before_min_duration() -> None:
    brain = ScriptedBrain()
    call, _engine, _ = await make(brain, EngineSettings(barge_in=BargeInParams(interrupt_min_s=5)))
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    call.feed(TranscriptFrame("okay", final=False))
    assert call.generation == gen
    call.feed(TranscriptFrame("okay wait no", final=False))
    assert call.generation == gen + 1
    call.cancel()


async def test_interrupt_while_thinking_discards_reply_and_tells_brain_nothing_heard() -> None:
    brain = ScriptedBrain("a long answer that takes a while to generate.")
    brain.delay = 0.05
    settings = EngineSettings(barge_in=BargeInParams(interrupt_min_s=0.1))
    call, engine, rec = await make(brain, settings)
    await asyncio.sleep(0.5)  # greeting generated
    play_through(call, 1)
    await caller_turn(call, "hello")
    assert engine.state is State.THINKING
    await asyncio.sleep(0.12)  # a couple of words generated, none played
    call.system(UserStartedSpeakingFrame(timestamp=30.0))
    feed_audio(call, 30.0, 0.2)
    assert engine.state is State.USER_SPEAKING
    assert brain.heard_log[-1].heard == "" and brain.heard_log[-1].interrupted
    n = len(texts(rec))
    await asyncio.sleep(0.3)
    assert len(texts(rec)) == n  # the cancelled reply produced nothing more
    call.cancel()


async def test_late_real_turn_while_agent_speaks_replaces_reply() -> None:
    brain = ScriptedBrain()
    call, _engine, _ = await make(brain)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    gen = call.generation
    call.system(UserStartedSpeakingFrame(timestamp=2.0))
    call.system(UserStoppedSpeakingFrame(timestamp=2.3))  # short: not a barge-in by duration
    call.system(UserTurnEndFrame(speech_end=2.3, reason="model"))
    call.feed(TranscriptFrame("No.", final=True))
    await settle()
    assert call.generation == gen + 1 and brain.texts == ["No."]
    call.cancel()


async def test_idle_prompts_then_goodbye_and_hangup() -> None:
    brain = ScriptedBrain()
    settings = EngineSettings(idle_s=0.05, idle_prompts=2, idle_goodbye="Bye now.")
    call, engine, rec = await make(brain, settings)
    uid = 1
    play_through(call, uid)
    for _ in range(2):
        await asyncio.sleep(0.08)
        uid += 1
        play_through(call, uid)
    await asyncio.sleep(0.08)
    await settle()
    assert brain.idles == [1, 2]
    assert "Bye now." in " ".join(texts(rec))
    assert rec.of(HangupFrame) and engine.state is State.ENDING
    call.cancel()


async def test_user_speech_resets_idle() -> None:
    brain = ScriptedBrain()
    call, _engine, _ = await make(brain, EngineSettings(idle_s=0.1))
    play_through(call, 1)
    await asyncio.sleep(0.05)
    call.system(UserStartedSpeakingFrame(timestamp=1.0))
    await asyncio.sleep(0.1)
    assert brain.idles == []
    call.cancel()


async def test_dtmf_digits_gathered_until_hash() -> None:
    brain = ScriptedBrain()
    call, _engine, rec = await make(brain, EngineSettings(dtmf_timeout_s=5))
    play_through(call, 1)
    for d in "555#":
        call.system(DTMFFrame(d))
    await settle()
    assert brain.digits == ["555"]
    assert "You pressed 555." in " ".join(texts(rec))
    call.cancel()


async def test_time_limit_closes_the_call() -> None:
    brain = ScriptedBrain()
    settings = EngineSettings(max_duration_s=0.05, max_duration_message="Time is up.")
    call, _engine, rec = await make(brain, settings)
    await asyncio.sleep(0.1)
    await settle()
    assert "Time is up." in " ".join(texts(rec)) and rec.of(HangupFrame)
    call.cancel()


async def test_brain_hangup_goes_after_the_words() -> None:
    brain = ScriptedBrain()
    brain.hangup_after = "done"
    call, engine, rec = await make(brain)
    kinds = [type(f).__name__ for f in rec.down]
    assert kinds[-2:] == ["LLMResponseEndFrame", "HangupFrame"]
    assert engine.state is State.ENDING
    call.cancel()


async def test_speech_begun_over_the_agents_last_words_is_answered() -> None:
    brain = ScriptedBrain()
    settings = EngineSettings(barge_in=BargeInParams(interrupt_min_s=5), idle_s=0.05)
    call, engine, _ = await make(brain, settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    call.system(UserStartedSpeakingFrame(timestamp=2.0))  # over the greeting's last words
    call.system(
        AgentStoppedSpeakingFrame(utterance_id=1, played_s=1, interrupted=False, strategy="mark")
    )
    assert engine.state is State.USER_SPEAKING
    await asyncio.sleep(0.1)
    assert brain.idles == []  # no idle prompt while the caller talks
    call.system(UserStoppedSpeakingFrame(timestamp=3.0))
    call.system(UserTurnEndFrame(speech_end=3.0, reason="model"))
    call.feed(TranscriptFrame("at six pm", final=True))
    await settle()
    assert brain.texts == ["at six pm"]
    call.cancel()


async def test_dtmf_answered_at_once_when_the_brain_says_the_entry_is_whole() -> None:
    class KeypadBrain(ScriptedBrain):
        def dtmf_complete(self, digits: str) -> bool:
            return digits == "0"

    brain = KeypadBrain()
    call, _engine, _rec = await make(brain, EngineSettings(dtmf_timeout_s=5))
    play_through(call, 1)
    call.system(DTMFFrame("0"))
    await settle()
    assert brain.digits == ["0"]  # not after the 5 s gather timeout
    call.system(DTMFFrame("5"))
    await settle()
    assert brain.digits == ["0"]  # "5" is not whole: it waits for more keys
    call.cancel()


async def test_caller_sound_holds_the_agent_before_the_vad_confirms() -> None:
    settings = EngineSettings(early_hold_ms=60, early_hold_s=0.1)
    call, engine, rec = await make(ScriptedBrain(), settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    feed_audio(call, 2.0, 0.04)
    assert not rec.of(PausePlaybackFrame)  # 40 ms: not yet
    feed_audio(call, 2.04, 0.02)
    assert len(rec.of(PausePlaybackFrame)) == 1  # 60 ms of sound: held
    await asyncio.sleep(0.2)  # the VAD never confirmed: a noise
    assert len(rec.of(ResumePlaybackFrame)) == 1 and engine.holds.stats == {
        "held": 1,
        "released": 1,
    }
    # the next time the VAD confirms: the hold stays and the candidate takes over
    feed_audio(call, 3.0, 0.06)
    call.system(UserStartedSpeakingFrame(timestamp=3.0))
    await asyncio.sleep(0.2)
    assert len(rec.of(PausePlaybackFrame)) == 2 and len(rec.of(ResumePlaybackFrame)) == 1
    assert engine.barge.active and engine.holds.stats["released"] == 1
    call.cancel()


async def test_the_energy_hold_stays_while_the_caller_still_sounds() -> None:
    """The VAD's start comes ~0.35 s after the onset, about when the energy hold runs out:
    letting go then played a blip of the agent into "Actually, | is there parking?"."""
    settings = EngineSettings(early_hold_ms=60, early_hold_s=0.1)
    call, engine, rec = await make(ScriptedBrain(), settings)
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    feed_audio(call, 2.0, 0.06)
    assert len(rec.of(PausePlaybackFrame)) == 1
    for k in range(6):  # the caller sounds on past early_hold_s
        await asyncio.sleep(0.03)
        feed_audio(call, 2.06 + 0.02 * k, 0.02)
    assert not rec.of(ResumePlaybackFrame)
    call.system(UserStartedSpeakingFrame(timestamp=2.0))  # the VAD confirms: still held
    await asyncio.sleep(0.2)
    assert not rec.of(ResumePlaybackFrame) and engine.barge.active
    assert engine.holds.stats == {"held": 1, "released": 0}
    call.cancel()
    # a sound that goes on and never becomes speech is let go after early_max_s
    call, engine, rec = await make(ScriptedBrain(), settings)
    engine.holds.early_max_s = 0.2
    call.system(AgentStartedSpeakingFrame(utterance_id=1))
    feed_audio(call, 2.0, 0.06)
    for k in range(15):
        await asyncio.sleep(0.03)
        feed_audio(call, 2.06 + 0.02 * k, 0.02)
    assert len(rec.of(ResumePlaybackFrame)) == 1 and engine.holds.stats["released"] == 1
    call.cancel()
