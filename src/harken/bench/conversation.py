"""``harken bench conversation``: the conversation engine's own overhead per caller turn.

Goal (issue #7): from the final transcript to the first TTS request, the engine adds ≤ 5 ms.
Two brains are measured, each through a real :class:`~harken.conversation.ConversationEngine`
in a real :class:`~harken.pipeline.Call` (no models: the caller's turn arrives as frames, and
the TTS request is the first ``TextFrame`` the engine pushes downstream):

* ``flow`` — the built-in restaurant flow (intent and slot matching, templates, the chunker);
* ``llm`` — the LLM agent against a local OpenAI-compatible server that answers at once, so
  the figure is the engine plus one localhost HTTP exchange. ``llm_request_ms`` is the engine's
  part alone: final transcript to the request leaving (the server's receive time).

Figures are percentiles over ``--turns`` turns, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    StartFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)

_FLOW_LINES = (
    "I'd like to book a table",
    "for four people",
    "tomorrow at seven pm",
    "what are your opening hours",
    "my name is Anna Smith",
    "do you have parking",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--turns", type=int, default=200, help="caller turns per brain (200)")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _turns(make_brain: Any, turns: int, texts: tuple[str, ...]) -> list[float]:
    from harken.conversation import ConversationEngine, EngineSettings
    from harken.pipeline import Call, Pipeline
    from harken.testing.stages import Recorder

    out: list[float] = []
    call: Call | None = None
    engine: ConversationEngine | None = None
    for i in range(turns):
        if i % 20 == 0:  # a fresh call now and then (a flow ends when its booking is done)
            if call is not None:
                call.cancel()
            engine = ConversationEngine(make_brain(), EngineSettings(greeting=False, idle_s=0))
            call = Call(Pipeline([engine, Recorder()]), call_id=f"b{i}")
            await call.start(StartFrame(call_id=call.call_id))
        assert call is not None and engine is not None
        t = float(i)
        call.system(UserStartedSpeakingFrame(timestamp=t))
        call.system(UserStoppedSpeakingFrame(timestamp=t + 0.5))
        call.system(UserTurnEndFrame(speech_end=t + 0.5, reason="model"))
        call.feed(TranscriptFrame(texts[i % len(texts)], final=True))
        record = engine.replies[-1] if engine.replies else None
        for _ in range(400):  # wait for the first clause (a few loop turns; HTTP for the LLM)
            if record is not None and (record.t_first_text is not None or engine._task is None):
                break
            await asyncio.sleep(0.0005)
        while engine._task is not None:
            await asyncio.sleep(0.0005)
        if record is not None and record.engine_ms is not None:
            out.append(record.engine_ms)
        uid = i + 1
        call.system(AgentStartedSpeakingFrame(utterance_id=uid))
        call.system(
            AgentStoppedSpeakingFrame(utterance_id=uid, played_s=1, interrupted=False, strategy="x")
        )
    if call is not None:
        call.cancel()
    return out


async def _run(turns: int) -> dict[str, Any]:
    from harken.agent.conversation import demo_toolbox, load_flow
    from harken.conversation import FlowBrain, ToolContext
    from harken.conversation.llm_brain import LLMBrain
    from harken.llm import LLMClient
    from harken.testing.llm_server import FakeLLMServer, Reply

    flow = load_flow("restaurant")
    tools = demo_toolbox([])
    flow_ms = await _turns(
        lambda: FlowBrain.for_call(flow, tools, ToolContext()), turns, _FLOW_LINES
    )
    arrivals: list[float] = []

    def respond(body: dict[str, Any]) -> Reply:
        arrivals.append(time.perf_counter())
        return Reply.text("Sure, I can help with that. What time would you like?")

    async with FakeLLMServer() as srv:
        srv.responder = respond
        client = LLMClient(srv.url, "bench", max_retries=0)
        try:
            brains: list[LLMBrain] = []

            def make() -> LLMBrain:
                brain = LLMBrain(client, tools, ToolContext())
                brains.append(brain)
                return brain

            llm_ms = await _turns(make, turns, _FLOW_LINES)
        finally:
            await client.close()
    return {
        "turns": turns,
        "flow_engine_ms_p50": statistics.median(flow_ms),
        "flow_engine_ms_p99": _pct(flow_ms, 0.99),
        "llm_engine_ms_p50": statistics.median(llm_ms),
        "llm_engine_ms_p99": _pct(llm_ms, 0.99),
        "llm_requests": len(arrivals),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    return asyncio.run(_run(args.turns))


def report(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"conversation engine overhead over {result['turns']} turns "
            "(final transcript -> first TTS request)",
            f"  flow agent: p50 {result['flow_engine_ms_p50']:.2f} ms, "
            f"p99 {result['flow_engine_ms_p99']:.2f} ms",
            f"  LLM agent (instant local server, incl. one localhost HTTP exchange): "
            f"p50 {result['llm_engine_ms_p50']:.2f} ms, p99 {result['llm_engine_ms_p99']:.2f} ms",
        ]
    )
