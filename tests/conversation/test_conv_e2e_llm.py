"""A real call over the Twilio protocol to the conversation agent with an LLM (a local SSE server):
VAD, Whisper, Smart Turn, the engine and TTS all run for real."""

from __future__ import annotations

from typing import Any

from harken.conversation import State
from harken.testing.caller import agent_quiet, caller_voice, connect, engine_of
from harken.testing.llm_server import FakeLLMServer, Reply, last_user_text

MakeWorker = Any

LONG_REPLY = (
    "Of course. Our menu has many dishes. We have soups, salads, pasta, pizza and "
    "a selection of grilled fish and meat, and every evening the chef prepares three specials "
    "that change with the season, so there is always something new to try."
)


def _words(text: str) -> list[str]:
    return [w.strip(".,!?").lower() for w in text.split()]


def agent_config(url: str) -> dict[str, Any]:
    return {
        "llm": {"base_url": url, "model": "local", "greeting": "Hi, this is Luigi's."},
        "tts": {"engine": "espeak"},
        "idle": {"after_s": 0},
    }


async def test_caller_is_heard_and_answered(conversation_worker: MakeWorker) -> None:
    async with FakeLLMServer() as srv:
        srv.responder = lambda body: Reply.text(f"You said: {last_user_text(body)}")
        worker = await conversation_worker(agent_config(srv.url))
        line = caller_voice("I would like to make a reservation for four people.")
        async with connect(worker) as em:
            await agent_quiet(em)  # the greeting
            await em.play(line)
            await agent_quiet(em)
            heard = last_user_text(srv.requests[-1]).lower()
            # Whisper tiny.en on 8 kHz phone audio: most, not always all, words right
            assert sum(w in heard for w in ("reservation", "four", "people")) >= 2
            engine = engine_of(worker)
            record = engine.replies[-1]
            assert record.kind == "turn" and record.heard == record.spoken
            assert record.engine_ms is not None and record.t_first_audio is not None
            assert engine.state is State.LISTENING


async def test_barge_in_stops_agent_audio_and_no_abandoned_frame_follows(
    conversation_worker: MakeWorker,
) -> None:
    async with FakeLLMServer() as srv:
        srv.responder = lambda body: Reply.text(
            LONG_REPLY if "menu" in last_user_text(body).lower() else "Okay, stopping."
        )
        worker = await conversation_worker(agent_config(srv.url))
        question = caller_voice("What is on the menu today?")
        cut_in = caller_voice("Wait, stop, I have a question please.")
        async with connect(worker) as em:
            await agent_quiet(em)
            await em.play(question)
            # the agent starts its long answer; the caller cuts in 1.5 s into it
            n0 = em.received_samples
            await em.wait_for(lambda: em.received_samples > n0 + 8000 * 1.5, 20)
            await em.play(cut_in)
            await em.wait_for(lambda: bool(em.clears), 5)
            clear_at = em.clears[0]
            engine = engine_of(worker)
            cut = next(r for r in engine.replies if r.interrupted)
            assert cut.heard is not None and 0 < len(cut.heard) < len(LONG_REPLY)
            assert LONG_REPLY.startswith(cut.heard.rstrip(".,"))
            # nothing of the abandoned reply after the clear: its marks (named after the
            # utterance) travel behind its audio, and none arrives after the clear
            prefix = f"h{cut.utterance_id}."
            late = [
                m for m in em.marks_echoed if m.name.startswith(prefix) and m.received > clear_at
            ]
            assert late == []
            await agent_quiet(em)
            messages = srv.requests[-1]["messages"]
            users = [m["content"] for m in messages if m["role"] == "user"]
            assert len(users) >= 2  # the caller's words after the cut were answered
            assistant = [m["content"] for m in messages if m["role"] == "assistant"]
            # the context holds what was heard, not more
            assert _words(cut.heard) in [_words(m) for m in assistant if m]
            assert LONG_REPLY not in assistant
