"""The embedded default, end to end: a synthetic caller books a table over the Twilio protocol.

Everything is real and offline: the caller's voice is synthesised (Piper when installed, else
espeak-ng), sent as paced µ-law media; the agent hears it with Silero VAD, Whisper and Smart
Turn, the flow agent answers, espeak-ng speaks, the booking tool runs, and the agent hangs up.
The caller answers what the agent last said, as a person would.
"""

from __future__ import annotations

import asyncio
from typing import Any

from harken.conversation import ConversationEngine
from harken.testing.caller import agent_quiet, caller_voice, connect, engine_of

MakeWorker = Any

# (what the agent's last words contain, what the caller says: text or keypad digits "#...")
SCRIPT: list[tuple[str, str]] = [
    ("how can i help", "Hi, I'd like to book a table please."),
    ("how many", "Four people, tomorrow at seven pm."),
    ("what day", "Tomorrow please."),
    ("what time", "At seven pm."),
    ("what name", "My name is Anna Smith."),
    ("phone", "#5551234567"),
    ("is that right", "Yes, that's right."),
    ("anything else", "No thanks, that's all."),
]


def answer_for(said: str) -> str | None:
    said = said.lower()
    for cue, line in SCRIPT:
        if cue in said:
            return line
    return None


async def test_demo_booking_completes_and_agent_hangs_up(conversation_worker: MakeWorker) -> None:
    worker = await conversation_worker({"tts": {"engine": "espeak"}, "idle": {"after_s": 0}})
    voices = {line: caller_voice(line) for _, line in SCRIPT if not line.startswith("#")}
    async with connect(worker) as em:
        await agent_quiet(em)
        engine: ConversationEngine = engine_of(worker)
        line = SCRIPT[0][1]
        for _ in range(14):
            said = engine.replies[-1].spoken
            # a cue the agent gave, else (it did not catch us) the caller says it again
            line = answer_for(said) or line
            if line.startswith("#"):
                for digit in line[1:] + "#":
                    await em.dtmf(digit)
                    await asyncio.sleep(0.05)
            else:
                await em.play(voices[line])
            try:
                await agent_quiet(em)
            except (TimeoutError, ConnectionResetError):
                break
            if em.closed:
                break
        await em.wait_closed(30)  # the agent says goodbye and hangs up
    booked = [t for r in engine.replies for t in r.tools if t.name == "book_table"]
    assert len(booked) == 1 and booked[0].ok, booked
    result = booked[0].result
    assert result["party_size"] == 4 and result["time"] == "19:00"
    assert result["phone"] == "5551234567"
    assert any(result["code"] in r.spoken for r in engine.replies)
    assert "goodbye" in engine.replies[-1].spoken.lower()
    assert engine.replies[-1].ending == "HangupFrame"


async def test_caller_silence_gets_a_prompt_then_a_polite_hang_up(
    conversation_worker: MakeWorker,
) -> None:
    worker = await conversation_worker(
        {"tts": {"engine": "espeak"}, "idle": {"after_s": 1.0, "prompts": 1}}
    )
    async with connect(worker) as em:
        await agent_quiet(em, quiet_s=0.3)  # the greeting
        engine = engine_of(worker)
        await em.wait_closed(20)  # nobody speaks: one prompt, then goodbye and hang-up
    kinds = [r.kind for r in engine.replies]
    assert kinds == ["greeting", "idle", "idle"]
    assert "goodbye" in engine.replies[-1].spoken.lower()
    assert engine.replies[-1].ending == "HangupFrame"
