"""The LLM agent through the engine, against a local OpenAI-compatible SSE server."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from harken.conversation import (
    ConversationEngine,
    EngineSettings,
    Tool,
    ToolBox,
    ToolContext,
    builtin_tools,
)
from harken.conversation.llm_brain import LLMBrain
from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    HangupFrame,
    StartFrame,
    TextFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.llm import LLMClient
from harken.pipeline import Call, Pipeline
from harken.testing.llm_server import FakeLLMServer, Reply, Stall, Token, last_user_text
from harken.testing.llm_server import Tool as ToolStep
from harken.testing.stages import Recorder

# caller speech stand-in over the agent (the barge-in needs sound, not digital silence)
SPEECH_20MS = (np.sin(2 * np.pi * 440 * np.arange(160) / 8000) * 8000).astype(np.int16).tobytes()

booked: list[dict[str, Any]] = []


def book_table(party_size: int, time: str) -> dict[str, Any]:
    booked.append({"party_size": party_size, "time": time})
    return {"code": "LU-42"}


async def slow_lookup(item: str) -> str:
    await asyncio.sleep(10)
    return "never"


def toolbox() -> ToolBox:
    return ToolBox(
        [
            *builtin_tools(),
            Tool(
                "book_table",
                "Book a table",
                {
                    "type": "object",
                    "properties": {"party_size": {"type": "integer"}, "time": {"type": "string"}},
                    "required": ["party_size", "time"],
                },
                book_table,
            ),
            Tool(
                "slow_lookup",
                "Slow",
                {"type": "object", "properties": {"item": {"type": "string"}}},
                slow_lookup,
            ),
        ]
    )


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


async def ended(srv: FakeLLMServer, index: int) -> Any:
    """Wait for request ``index`` to exist and finish."""
    async with asyncio.timeout(5):
        while len(srv.exchanges) <= index:
            await asyncio.sleep(0.01)
    return await srv.wait_ended(index)


async def setup(
    srv: FakeLLMServer, heard: object = None
) -> tuple[Call, ConversationEngine, Recorder, LLMBrain]:
    client = LLMClient(srv.url, "test-model", first_token_timeout_s=2, max_retries=0)
    brain = LLMBrain(
        client, toolbox(), ToolContext("c1"), system_prompt="Be brief.", greeting="Hi there."
    )
    engine = ConversationEngine(brain, EngineSettings(idle_s=0), heard=heard)  # type: ignore[arg-type]
    rec = Recorder()
    call = Call(Pipeline([engine, rec]), call_id="c1")
    await call.start(StartFrame(call_id="c1", sample_rate_in=8000, sample_rate_out=8000))
    await settle()
    return call, engine, rec, brain


def finish_playback(call: Call, uid: int) -> None:
    call.system(AgentStartedSpeakingFrame(utterance_id=uid))
    call.system(
        AgentStoppedSpeakingFrame(utterance_id=uid, played_s=9, interrupted=False, strategy="mark")
    )


def turn(call: Call, text: str, t: float = 1.0) -> None:
    call.system(UserStartedSpeakingFrame(timestamp=t))
    call.system(UserStoppedSpeakingFrame(timestamp=t + 0.5))
    call.system(UserTurnEndFrame(speech_end=t + 0.5, reason="model"))
    call.feed(TranscriptFrame(text, final=True))


def spoken(rec: Recorder) -> str:
    return " ".join(f.text for f in rec.of(TextFrame))


async def test_tool_call_runs_and_its_result_is_spoken() -> None:
    booked.clear()
    async with FakeLLMServer() as srv:
        srv.script(
            Reply(
                steps=[
                    Token("Let me book that. "),
                    ToolStep("book_table", '{"party_size": 4, "time": "19:00"}', pieces=3),
                ]
            ),
            Reply.text("You're booked, confirmation LU-42."),
        )
        call, engine, rec, brain = await setup(srv)
        finish_playback(call, 1)
        turn(call, "A table for four at seven")
        await ended(srv, 1)
        await settle(0.1)
        assert booked == [{"party_size": 4, "time": "19:00"}]
        assert "Let me book that." in spoken(rec) and "LU-42" in spoken(rec)
        second = srv.requests[1]["messages"]
        assert [m["role"] for m in second] == ["system", "assistant", "user", "assistant", "tool"]
        assert second[-1]["tool_call_id"] == second[-2]["tool_calls"][0]["id"]
        assert engine.replies[-1].tools[0].result == {"code": "LU-42"}
        call.cancel()
        await brain.client.close()


async def test_end_call_tool_hangs_up_after_the_goodbye() -> None:
    async with FakeLLMServer() as srv:
        srv.script(Reply(steps=[Token("Goodbye!"), ToolStep("end_call", "{}")]))
        call, _engine, rec, brain = await setup(srv)
        finish_playback(call, 1)
        turn(call, "that's all, bye")
        await ended(srv, 0)
        await settle(0.1)
        kinds = [type(f).__name__ for f in rec.down]
        assert kinds[-2:] == ["LLMResponseEndFrame", "HangupFrame"]
        assert "Goodbye!" in spoken(rec)
        assert rec.of(HangupFrame)[0].reason
        call.cancel()
        await brain.client.close()


async def test_barge_in_cancels_the_stream_and_keeps_only_heard_words() -> None:
    async with FakeLLMServer() as srv:
        srv.script(
            Reply(steps=[Token("One two three, "), Token("four five six. "), Stall()]),
        )
        call, engine, _rec, brain = await setup(srv, heard=lambda uid, s: "One two")
        finish_playback(call, 1)
        turn(call, "count")
        await settle(0.2)
        call.system(AgentStartedSpeakingFrame(utterance_id=2))
        call.system(UserStartedSpeakingFrame(timestamp=10.0))
        for i in range(30):
            call.feed(AudioFrame(SPEECH_20MS, 8000, timestamp=10.0 + i * 0.02))
        assert engine.interruptions == 1
        exchange = await ended(srv, 0)
        assert exchange.closed_early  # the HTTP stream was closed on the barge-in
        call.system(
            AgentStoppedSpeakingFrame(utterance_id=2, played_s=0.7, interrupted=True, strategy="m")
        )
        assistant = [m for m in brain.context.messages if m["role"] == "assistant"]
        assert assistant[-1]["content"] == "One two"
        call.cancel()
        await brain.client.close()


async def test_tool_cancelled_by_barge_in_gets_a_cancelled_result() -> None:
    async with FakeLLMServer() as srv:
        srv.script(Reply(steps=[Token("Checking. "), ToolStep("slow_lookup", '{"item": "x"}')]))
        call, _engine, _rec, brain = await setup(srv)
        finish_playback(call, 1)
        turn(call, "look it up")
        await ended(srv, 0)
        await settle(0.1)
        call.system(UserStartedSpeakingFrame(timestamp=10.0))
        for i in range(30):
            call.feed(AudioFrame(SPEECH_20MS, 8000, timestamp=10.0 + i * 0.02))
        await settle()
        tool_msgs = [m for m in brain.context.messages if m["role"] == "tool"]
        assert len(tool_msgs) == 1 and "cancelled" in tool_msgs[0]["content"]
        call.cancel()
        await brain.client.close()


async def test_model_failure_is_spoken_not_fatal() -> None:
    async with FakeLLMServer() as srv:
        srv.script(Reply.http_error(500))
        call, _engine, rec, brain = await setup(srv)
        finish_playback(call, 1)
        turn(call, "hello?")
        await ended(srv, 0)
        await settle(0.1)
        assert brain.errors == 1 and brain.error_message in spoken(rec)
        assert not call.closed
        call.cancel()
        await brain.client.close()


async def test_resumed_turn_merges_into_one_user_message() -> None:
    async with FakeLLMServer() as srv:
        srv.script(Reply(steps=[Stall(0.5), Token("Sure.")]), Reply.text("For four, got it."))
        call, _engine, _rec, brain = await setup(srv)
        finish_playback(call, 1)
        turn(call, "I want a table")
        await settle(0.05)
        # the caller goes on before the agent said anything: the endpoint was early
        call.system(UserStartedSpeakingFrame(timestamp=5.0))
        for i in range(30):
            call.feed(AudioFrame(SPEECH_20MS, 8000, timestamp=5.0 + i * 0.02))
        call.system(UserStoppedSpeakingFrame(timestamp=5.6))
        call.system(UserTurnEndFrame(speech_end=5.6, reason="model"))
        call.feed(TranscriptFrame("for four people", final=True))
        await ended(srv, 1)
        users = [m["content"] for m in srv.requests[1]["messages"] if m["role"] == "user"]
        assert users == ["I want a table for four people"]
        call.cancel()
        await brain.client.close()


async def preemptive_setup(
    srv: FakeLLMServer,
) -> tuple[Call, ConversationEngine, Recorder, LLMBrain]:
    client = LLMClient(srv.url, "test-model", max_retries=0)
    brain = LLMBrain(client, toolbox(), ToolContext("c2"), greeting="Hi.")
    settings = EngineSettings(idle_s=0, preemptive=True)
    engine = ConversationEngine(brain, settings)
    rec = Recorder()
    call = Call(Pipeline([engine, rec]), call_id="c2")
    await call.start(StartFrame(call_id="c2"))
    await settle()
    finish_playback(call, 1)
    return call, engine, rec, brain


async def test_preemptive_generation_is_used_when_the_final_matches() -> None:
    async with FakeLLMServer() as srv:
        srv.responder = lambda body: Reply.text(
            f"Heard {last_user_text(body)}", initial_delay_s=0.1
        )
        call, engine, rec, brain = await preemptive_setup(srv)
        call.system(UserStartedSpeakingFrame(timestamp=1.0))
        call.feed(TranscriptFrame("a table for four", final=False))
        call.system(UserStoppedSpeakingFrame(timestamp=2.0))
        await settle(0.05)  # the request is already out while the turn detector decides
        assert len(srv.exchanges) == 1
        call.system(UserTurnEndFrame(speech_end=2.0, reason="model"))
        call.feed(TranscriptFrame("A table for four.", final=True))
        await ended(srv, 0)
        await settle(0.1)
        assert engine.preemptive == {"started": 1, "used": 1, "wasted": 0}
        assert len(srv.requests) == 1 and "Heard a table for four" in spoken(rec)
        users = [m["content"] for m in brain.context.messages if m["role"] == "user"]
        assert users == ["A table for four."]
        call.cancel()
        await brain.client.close()


async def test_preemptive_generation_is_wasted_and_counted_when_the_final_differs() -> None:
    async with FakeLLMServer() as srv:
        srv.responder = lambda body: Reply.text(f"Heard {last_user_text(body)}")
        call, engine, rec, brain = await preemptive_setup(srv)
        call.system(UserStartedSpeakingFrame(timestamp=1.0))
        call.feed(TranscriptFrame("a table for", final=False))
        call.system(UserStoppedSpeakingFrame(timestamp=2.0))
        call.system(UserTurnEndFrame(speech_end=2.0, reason="model"))
        call.feed(TranscriptFrame("A table for six.", final=True))
        async with asyncio.timeout(5):
            while "six" not in spoken(rec):
                await asyncio.sleep(0.02)
        assert engine.preemptive == {"started": 1, "used": 0, "wasted": 1}
        assert "Heard A table for six." in spoken(rec)
        assert "Heard a table for " not in spoken(rec).replace("six", "")
        call.cancel()
        await brain.client.close()


async def test_preemptive_generation_restarts_on_the_speculative_transcript() -> None:
    """The interim at the stop missed the last words; the STT's speculative reading of the whole
    turn replaces the preemptive request, and that one is used."""
    async with FakeLLMServer() as srv:
        srv.responder = lambda body: Reply.text(
            f"Heard {last_user_text(body)}", initial_delay_s=0.1
        )
        call, engine, rec, brain = await preemptive_setup(srv)
        call.system(UserStartedSpeakingFrame(timestamp=1.0))
        call.feed(TranscriptFrame("a table for", final=False))
        call.system(UserStoppedSpeakingFrame(timestamp=2.0))
        call.feed(TranscriptFrame("A table for six.", final=False, speculative=True))
        call.feed(TranscriptFrame("A table for six.", final=False, speculative=True))  # again
        await settle(0.05)
        call.system(UserTurnEndFrame(speech_end=2.0, reason="model"))
        call.feed(TranscriptFrame("A table for six.", final=True))
        async with asyncio.timeout(5):
            while "six" not in spoken(rec):
                await asyncio.sleep(0.02)
        assert engine.preemptive == {"started": 2, "used": 1, "wasted": 1}
        assert "Heard A table for six." in spoken(rec)
        call.cancel()
        await brain.client.close()
