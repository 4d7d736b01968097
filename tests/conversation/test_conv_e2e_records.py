"""A real call leaves a call record that matches what happened, and moves /metrics histograms."""

from __future__ import annotations

import asyncio
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from harken.records import open_store
from harken.testing.caller import agent_quiet, caller_voice, connect, engine_of

MakeWorker = Any


async def scrape(port: int) -> dict[tuple[str, str], float]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        text = await resp.text()
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):  # the Prometheus text parser
        for sample in family.samples:  # summed over the labels other than the stage
            key = (sample.name, sample.labels.get("stage", ""))
            out[key] = out.get(key, 0.0) + sample.value
    return out


async def test_call_record_and_metrics_follow_the_call(
    conversation_worker: MakeWorker, tmp_path: Path
) -> None:
    db = tmp_path / "calls.db"
    worker = await conversation_worker(
        {"tts": {"engine": "espeak"}, "idle": {"after_s": 0}},
        {"sqlite_path": str(db), "wav_dir": str(tmp_path / "wav")},
    )
    before = await scrape(worker.http_port)
    question = caller_voice("What are your opening hours?")
    async with connect(worker) as em:
        await agent_quiet(em)
        engine = engine_of(worker)
        call_id = em.call_sid
        await em.play(question)
        await agent_quiet(em)
        spoken = [r.spoken for r in engine.replies]
    await asyncio.sleep(0.3)  # the stop reaches the server; the call ends; records flushed
    assert worker._recorder is not None
    assert await worker._recorder.flush(5)
    after = await scrape(worker.http_port)

    store = open_store(sqlite_path=str(db))
    await store.open()
    try:
        detail = await store.get_call(call_id)
    finally:
        await store.close()
    assert detail is not None and detail.info.carrier == "twilio"
    assert [t.kind for t in detail.turns] == ["greeting", "turn"]
    assert [t.assistant_spoken for t in detail.turns] == spoken
    assert [t.index for t in detail.turns] == [0, 1]
    turn = detail.turns[1]
    assert "hour" in turn.user_text.lower()
    assert turn.assistant_heard == turn.assistant_spoken and not turn.interrupted
    timings = turn.timings
    order = ["speech_end", "endpoint", "stt_final", "tts_request", "first_audio_out"]
    values = [timings[k] for k in order]
    assert all(v is not None for v in values) and values == sorted(values)  # type: ignore[type-var]
    assert timings["endpoint_rule"] in ("model", "text", "silence")
    assert timings["playback_strategy"] == "mark"
    assert detail.end is not None

    async with aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{worker.http_port}"
        async with http.get(f"{base}/calls") as resp:
            assert resp.status == 200 and call_id in await resp.text()
        async with http.get(f"{base}/calls/{call_id}") as resp:
            page = await resp.text()
            assert resp.status == 200 and "<svg" in page and "endpoint wait" in page
            assert turn.user_text.split()[0] in page
        async with http.get(f"{base}/api/calls/{call_id}") as resp:
            data = await resp.json()
            assert [t["kind"] for t in data["turns"]] == ["greeting", "turn"]
        async with http.get(f"{base}/calls/nope") as resp:
            assert resp.status == 404

    # the stereo recording: the caller on the left, the agent (as sent) on the right
    with wave.open(str(tmp_path / "wav" / f"{call_id}.wav")) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        audio = np.frombuffer(w.readframes(w.getnframes()), np.int16).reshape(-1, 2)
    loud = np.abs(audio.astype(np.int32)) > 500
    assert loud[:, 0].sum() > 8000 * 0.5 and loud[:, 1].sum() > 8000 * 1.0
    # the caller spoke after the greeting: left-channel speech starts after right-channel speech
    assert np.argmax(loud[:, 0]) > np.argmax(loud[:, 1])

    def grew(name: str, stage: str = "") -> bool:
        return after.get((name, stage), 0) > before.get((name, stage), 0)

    for stage in ("endpoint_wait", "stt_final", "engine", "voice_to_voice", "tts_first_audio"):
        assert grew("harken_turn_stage_seconds_count", stage), stage
    assert grew("harken_calls_total")
