"""The embedded default, end to end: a synthetic caller books a table over the Twilio protocol.

Everything is real and offline: the caller's voice is synthesised (Piper when installed, else
espeak-ng), sent as paced µ-law media; the agent hears it with Silero VAD, Whisper and Smart
Turn, the flow agent answers, espeak-ng speaks, the booking tool runs, and the agent hangs up.
The caller answers what the agent last said, as a person would.
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from harken.agent.flow.demo_tools import check_availability
from harken.conversation import ConversationEngine
from harken.testing.caller import agent_quiet, caller_voice, connect, engine_of

MakeWorker = Any

# (what the agent's last words contain, what the caller says: phrasings tried in turn when the
# agent did not catch the previous one, text or keypad digits "#...")
SCRIPT: list[tuple[str, tuple[str, ...]]] = [
    ("how can i help", ("Hi, I'd like to book a table please.", "I want to make a reservation.")),
    ("how many", ("Four people, on DAY at seven pm.", "A table for four people.")),
    ("what day", ("On DAY please.", "DAY.")),
    ("what time", ("At seven pm.", "Seven o'clock in the evening.")),
    ("what name", ("My name is Anna Smith.", "Anna Smith.")),
    ("phone", ("#5551234567",)),
    ("is that right", ("Yes, that's right.", "Yes.")),
    ("anything else", ("No thanks, that's all.", "No, goodbye.")),
]


def free_day() -> str:
    """A weekday within the next week when Luigi's is open and a table for four is free at 7 pm
    (the demo is closed on Mondays and some slots are deterministically full)."""
    today = datetime.date.today()
    for ahead in range(1, 7):
        day = today + datetime.timedelta(days=ahead)
        if day.weekday() == 0:
            continue
        if check_availability(4, day.isoformat(), "19:00")["available"]:
            return day.strftime("%A")
    raise AssertionError("no free day in the coming week")


def answer_for(said: str, script: list[tuple[str, tuple[str, ...]]]) -> tuple[str, ...] | None:
    said = said.lower()
    for cue, lines in script:
        if cue in said:
            return lines
    return None


async def test_demo_booking_completes_and_agent_hangs_up(conversation_worker: MakeWorker) -> None:
    worker = await conversation_worker({"tts": {"engine": "espeak"}, "idle": {"after_s": 0}})
    day = free_day()
    script = [(cue, tuple(x.replace("DAY", day) for x in ls)) for cue, ls in SCRIPT]
    voices = {line: caller_voice(line) for _, ls in script for line in ls if line[0] != "#"}
    async with connect(worker) as em:
        await agent_quiet(em)
        engine: ConversationEngine = engine_of(worker)
        lines, tries = script[0][1], 0
        for _ in range(16):
            said = engine.replies[-1].spoken
            cue = answer_for(said, script)
            if cue is not None and cue != lines:
                lines, tries = cue, 0
            else:  # the agent did not catch us: say it another way
                tries += 1
            line = lines[tries % len(lines)]
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
    assert len(booked) == 1 and booked[0].ok, [(r.user_text, r.spoken) for r in engine.replies]
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
