"""One real scenario end to end: a simulated caller against an in-process worker.

The offline stack is real (Silero VAD, Whisper, Smart Turn, the flow agent, espeak-ng for the
agent's voice; Piper or espeak-ng for the caller's). The caller asks the opening hours, cuts the
answer with "hold on a second", and hangs up once the agent has answered that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harken.sim.runner import finish, run_call
from harken.sim.script import load_scenario
from harken.sim.transcribe import Transcriber

SCENARIO = """\
name: e2e-barge-in
timeout_s: 35
steps:
  - wait_agent: true
  - expect: {said: "help"}
  - say: "What are your opening hours?"
  - barge_in: "Hold on a second."
    after_s: 1.0
  - wait_agent: true
  - hangup: true
"""


async def test_a_scenario_measures_a_real_call(sim_worker: Any, tmp_path: Path) -> None:
    worker = await sim_worker({"tts": {"engine": "espeak"}, "idle": {"after_s": 0}})
    scenario = load_scenario(SCENARIO, filename="e2e.yaml")
    url = f"ws://127.0.0.1:{worker.media_port}/stream/twilio"
    call = await run_call(scenario, url)
    await finish(call, stt=Transcriber(), records_db=tmp_path / "calls.db")
    assert not call.error and not call.timed_out, call.issues
    assert [a.kind for a in call.acts] == ["say", "barge_in"]
    say, barge = call.metrics.turns
    assert say.latency_ms is not None and 100 < say.latency_ms < 4000, say
    assert not say.false_cutoff
    (b,) = call.metrics.barge_ins
    assert b.applicable and b.interrupted, b
    assert b.stop_played_ms is not None and b.stop_played_ms < 1000
    assert b.clear_ms is not None and b.clear_ms >= b.stop_played_ms
    assert barge.latency_ms is not None or barge.talked_over  # the agent answered it
    assert call.audio.clears
    assert call.replies and "help" in call.replies[0].text.lower()
    assert not [f for f in call.failures if "said" in f], call.failures
    assert call.server is not None and [t.kind for t in call.server][:2] == ["greeting", "turn"]
    assert call.server[1].interrupted
