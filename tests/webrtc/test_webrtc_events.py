"""The playground's event taps: what the page is told about a call, from frames and from the
engine's reply records (the engine itself is a stand-in here)."""

from __future__ import annotations

from typing import Any

import pytest

from harken.conversation import ConversationEngine
from harken.conversation.record import ReplyRecord
from harken.conversation.states import State
from harken.frames import (
    AudioFrame,
    TextFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from harken.pipeline import Call, Pipeline, Stage
from harken.server.playground_events import CallEvents, breakdown, decorate


class StubEngine:
    """What the taps read of a ConversationEngine."""

    def __init__(self) -> None:
        self.state = State.LISTENING
        self.replies: list[ReplyRecord] = []
        self.t0 = 10.0


class Clock:
    def __init__(self) -> None:
        self.t = 10.0

    def __call__(self) -> float:
        return self.t


async def wired() -> tuple[Call, CallEvents, StubEngine, Clock, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []
    engine = StubEngine()
    clock = Clock()
    events = CallEvents(sent.append, engine, clock=clock, poll_s=60)  # type: ignore[arg-type]
    call = Call(Pipeline([events.inlet, events.outlet]), call_id="c1")
    await call.start()
    return call, events, engine, clock, sent


def of(sent: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in sent if e["type"] == kind]


async def test_the_call_start_and_state_changes_are_reported() -> None:
    call, events, engine, _clock, sent = await wired()
    assert sent[0]["type"] == "call" and sent[0]["call_id"] == "c1"
    assert of(sent, "state") == [{"type": "state", "state": "listening"}]
    engine.state = State.USER_SPEAKING
    events.sync()
    events.sync()  # unchanged: nothing new
    assert [e["state"] for e in of(sent, "state")] == ["listening", "user_speaking"]
    call.end("bye")
    await call.wait()
    assert sent[-1] == {"type": "end", "reason": "bye"}
    assert sent[-2] == {"type": "state", "state": "ended"}


async def test_caller_transcripts_are_grouped_by_turn() -> None:
    call, _events, _engine, _clock, sent = await wired()
    call.feed(TranscriptFrame("I would", final=False))
    call.feed(TranscriptFrame("I would like a table", final=False))
    call.feed(TranscriptFrame("I would like a table.", final=True))
    call.feed(TranscriptFrame("For four", final=False))
    caller = of(sent, "caller")
    turns = [(e["turn"], e["final"]) for e in caller]
    assert turns == [(1, False), (1, False), (1, True), (2, False)]
    assert caller[2]["text"] == "I would like a table."


async def test_a_reply_is_reported_as_spoken_then_heard_with_its_latency() -> None:
    call, events, engine, clock, sent = await wired()
    # the caller's audio arrives in real time; the last speech sample is at media 1.50 s
    for i in range(100):
        clock.t = 10.0 + i * 0.02
        call.feed(AudioFrame(bytes(640), 16000, timestamp=i * 0.02))
    # the newest frame ended at media 2.00 s and arrived at clock 11.98: 1.50 s arrived 11.48
    call.system(UserStoppedSpeakingFrame(timestamp=1.5))
    assert of(sent, "vad")[-1]["speaking"] is False
    vad_seen = clock.t
    record = ReplyRecord("turn", "a table please", t_trigger=12.2)
    record.t_speech_end = vad_seen
    record.t_endpoint = 12.1
    record.t_first_text = 12.25
    record.spoken = "Great, for how many?"
    engine.replies.append(record)
    call.feed(TextFrame("Great, for how many?"))  # the outlet sees the clause going to TTS
    (first,) = of(sent, "agent")
    assert first["text"] == "Great, for how many?" and not first["audible"] and not first["done"]
    assert of(sent, "latency") == []
    record.tts_first_audio_ms = 30.0
    record.t_first_audio = 12.3
    events.sync()
    (latency,) = of(sent, "latency")
    assert latency["voice_to_voice_ms"] == pytest.approx((12.3 - vad_seen) * 1000, abs=0.1)
    assert latency["caller_end_to_audio_ms"] == pytest.approx(820.0, abs=0.1)
    parts = latency["breakdown"]
    assert parts["silence"] == pytest.approx(500.0, abs=0.1)
    assert parts["tts"] == 30.0 and parts["send"] == pytest.approx(20.0, abs=0.1)
    assert sum(v for v in parts.values() if v) == pytest.approx(820.0, abs=1.0)
    # cut off: the page learns what was heard
    record.heard = "Great,"
    record.interrupted = True
    record.t_played = 12.6
    events.sync()
    last = of(sent, "agent")[-1]
    assert last["done"] and last["interrupted"] and last["heard"] == "Great,"
    assert len(of(sent, "latency")) == 2  # updated with the playback outcome


async def test_replies_with_nothing_said_are_not_shown() -> None:
    call, events, engine, _clock, sent = await wired()
    record = ReplyRecord("idle", t_trigger=11.0)
    record.reported = True
    engine.replies.append(record)
    events.sync()
    assert of(sent, "agent") == []
    call.system(UserStartedSpeakingFrame(timestamp=0.5))
    assert of(sent, "vad") == [{"type": "vad", "speaking": True, "media_s": 0.5}]


def test_breakdown_of_a_record_without_a_turn_has_gaps() -> None:
    record = ReplyRecord("greeting", t_trigger=1.0)
    record.t_first_text = 1.001
    record.t_first_audio = 1.03
    parts = breakdown(record)
    assert parts["silence"] is None and parts["endpoint"] is None
    assert parts["brain"] == pytest.approx(1.0)


def test_decorate_wraps_the_conversation_engine() -> None:
    engine = ConversationEngine(brain=None)  # type: ignore[arg-type]
    before, after = Stage("vad"), Stage("tts")

    class Session:
        def send_event(self, event: dict[str, Any]) -> None:
            pass

    stages = decorate([before, engine, after], Session())  # type: ignore[arg-type]
    names = [s.name for s in stages]
    assert names == ["vad", "playground-in", "conversation", "playground-out", "tts"]
    echo = decorate([before], Session())  # type: ignore[arg-type]
    assert [s.name for s in echo] == ["playground-in", "vad", "playground-out"]
