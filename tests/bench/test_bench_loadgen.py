"""The lean load generator against a real in-process harken worker, and the bench_vad agent."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from harken.audio.g711 import ulaw_encode
from harken.bench._measure import summarize
from harken.bench.agents import ReplyInPlaceAgent, load_reply
from harken.bench.callers import echo_script, reply_ulaw, speechlike, tone_reply
from harken.bench.loadgen import (
    FRAME_BYTES,
    CallerScript,
    LeanCall,
    LoadGen,
    Scheduler,
    _client_frame,
)
from harken.frames import (
    AudioFrame,
    Frame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Call, Pipeline, Stage
from harken.protocols.events import StreamStarted
from harken.server import config as config_mod
from harken.server.worker import Worker
from harken.testing.stages import Recorder
from harken.testing.workers import start_worker, stop_worker


async def _worker(agent: object = None) -> Worker:
    return await start_worker({"agent": {"kind": "echo"}}, agent)  # type: ignore[arg-type]


async def _stop(worker: Worker) -> None:
    await stop_worker(worker)


@pytest.fixture
async def echo_worker() -> AsyncIterator[Worker]:
    worker = await _worker()
    yield worker
    await _stop(worker)


async def _measure(gen: LoadGen, calls: int, seconds: float) -> None:
    await gen.ramp(calls, 50.0)
    await asyncio.sleep(0.3)
    gen.totals.w0 = time.monotonic()
    gen.totals.w1 = gen.totals.w0 + seconds
    await asyncio.sleep(seconds + 0.5)
    await gen.hang_up_all()


async def test_three_echo_calls_full_throughput(echo_worker: Worker) -> None:
    url = f"ws://127.0.0.1:{echo_worker.media_port}/stream/twilio"
    gen = LoadGen(url, echo_script())
    await _measure(gen, 3, 2.0)
    tot = gen.totals
    assert tot.connected == 3 and tot.connect_failed == 0 and tot.dropped == 0
    assert tot.window_frames >= 3 * 2.0 * 50 * 0.8  # ~300 frames, whatever the scheduler's lag
    assert tot.echoed_bytes == tot.window_frames * FRAME_BYTES  # 100 % throughput
    assert tot.unmatched_bytes == 0 and tot.bad_messages == 0
    assert tot.marks_echoed > 0  # the echo agent's marks came back as played
    s = summarize(tot.rtts, "rtt")
    assert s["rtt_p50_ms"] is not None and 0 <= s["rtt_p50_ms"] < 250  # sane, not a timing test
    assert min(tot.rtts) >= 0
    assert len(tot.rtts) >= tot.window_frames  # one sample per echoed chunk
    await asyncio.sleep(0.1)
    assert echo_worker.manager.active == 0  # every call hung up with stop + close


async def test_refused_calls_are_counted_as_failed() -> None:
    cfg = config_mod._build(
        config_mod.Config, {"server": {"port": 0, "media_port": 0, "max_calls": 2}}, "c"
    )
    worker = Worker(config_mod.validate(cfg))
    await worker.start()
    try:
        gen = LoadGen(f"ws://127.0.0.1:{worker.media_port}/stream/twilio", echo_script())
        await gen.ramp(2, 100.0)
        await asyncio.sleep(0.2)
        await gen.ramp(1, 100.0)
        await asyncio.sleep(0.3)
        assert gen.totals.connected == 2
        assert gen.totals.connect_failed == 1  # HTTP 503 at the upgrade
        await gen.hang_up_all()
    finally:
        await _stop(worker)


def test_scheduler_spreads_calls_over_the_period() -> None:
    class _Call:
        slot = -1

    async def go() -> list[int]:
        sched = Scheduler(slots=10)
        calls = [_Call() for _ in range(25)]
        for c in calls:
            sched.add(c)  # type: ignore[arg-type]
        sched.stop()
        return [len(s) for s in sched.slots]

    sizes = asyncio.run(go())
    assert sum(sizes) == 25 and max(sizes) - min(sizes) <= 1


# --- the vad path without models: a stand-in turn detector + the real reply agent -------------


class _TurnAtQuiet(Stage):
    """Ends the caller's turn on the first quiet frame after loud ones (a stand-in for VAD +
    turn detection, which the vad scenario runs for real)."""

    def __init__(self) -> None:
        super().__init__("turn-at-quiet")
        self._loud = False

    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            level = np.abs(np.frombuffer(frame.pcm, np.int16)).mean()
            if level > 300:
                self._loud = True
            elif self._loud:
                self._loud = False
                self.push_down(frame)
                self.broadcast(UserTurnEndFrame(reason="test"))
                return
        self.push_down(frame)


def _vad_script() -> tuple[CallerScript, bytes]:
    speech = speechlike(0.4)  # 20 frames
    silence = np.zeros(8000, np.int16)  # 50 frames
    ulaw = ulaw_encode(np.concatenate([speech, silence]).tobytes())
    frames = tuple(ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES))
    reply = tone_reply(0.3)
    script = CallerScript(frames, frozenset({19}), reply_ulaw(reply), frozenset({0}))
    return script, reply.tobytes()


async def test_reply_latency_is_measured_and_the_byte_count_kept() -> None:
    script, reply_pcm = _vad_script()

    def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        return [_TurnAtQuiet(), ReplyInPlaceAgent(rate_in, reply_pcm)]

    worker = await _worker(agent)
    try:
        gen = LoadGen(f"ws://127.0.0.1:{worker.media_port}/stream/twilio", script)
        await _measure(gen, 2, 3.0)
    finally:
        await _stop(worker)
    tot = gen.totals
    assert tot.turns >= 2  # 1.4 s loop, 3 s window, 2 calls
    assert tot.replied_turns >= tot.turns - 2  # edge turns may answer after the window
    assert tot.replies >= tot.replied_turns
    assert tot.early_replies == 0  # the stand-in only ends turns after the speech
    lat = summarize(tot.reply_latencies, "reply")
    assert lat["reply_p50_ms"] is not None and 0 < lat["reply_p50_ms"] < 500
    # the reply replaced echo one frame for one frame: every byte still matches
    assert tot.echoed_bytes == tot.window_frames * FRAME_BYTES
    assert tot.unmatched_bytes == 0


def test_reply_in_place_agent_keeps_the_stream_length() -> None:
    reply = bytes(range(256)) * 5  # 1280 bytes = 4 frames of 20 ms PCM at 8 kHz
    agent = ReplyInPlaceAgent(8000, reply, utterance_s=0.1)
    rec = Recorder()
    call = Call(Pipeline([agent, rec]))
    frame = AudioFrame(b"\x01\x00" * 160, 8000)

    async def go() -> None:
        await call.start()
        for _ in range(3):
            call.feed(frame)
        call.system(UserTurnEndFrame(reason="test"))
        for _ in range(6):
            call.feed(frame)

    asyncio.run(go())
    audio = rec.of(AudioFrame)
    assert [len(a.pcm) for a in audio] == [320] * 9  # one frame out per frame in
    assert b"".join(a.pcm for a in audio[3:7]) == reply
    assert audio[7].pcm == frame.pcm  # echo again after the reply
    kinds = [type(f) for f in rec.down if isinstance(f, TTSStartedFrame | TTSStoppedFrame)]
    assert kinds == [
        TTSStartedFrame,  # echo
        TTSStoppedFrame,  # closed by the turn end
        TTSStartedFrame,  # reply
        TTSStoppedFrame,
        TTSStartedFrame,  # echo again
    ]
    assert agent.turn_ends == 1


def test_load_reply_from_a_file_or_synthetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.pcm"
    path.write_bytes(b"\x00\x01" * 500)  # 1000 bytes -> 960 (whole 20 ms frames)
    assert len(load_reply(path)) == 960
    monkeypatch.delenv("HARKEN_BENCH_REPLY", raising=False)
    synthetic = load_reply()
    assert len(synthetic) % 320 == 0 and len(synthetic) > 0


def _media(payload: bytes) -> tuple[bytes, int, int]:
    data = b'{"event":"media","streamSid":"MZ1","media":{"payload":"' + payload + b'"}}'
    start = data.index(payload)
    return data, start, start + len(payload)


def test_an_echo_whose_server_dropped_frames_is_realigned_by_content() -> None:
    script = echo_script()
    assert script.verbatim and all(0x7F not in f for f in script.frames)  # echoed byte for byte
    gen = LoadGen("ws://unused", script)
    gen.totals.w0, gen.totals.w1 = 0.0, 100.0
    call = _lean_call(gen)
    for k in range(10):  # frames 0..9 sent at 1.00, 1.02, ...
        call.matcher.sent(1.0 + 0.02 * k)
    call.matcher.recv_bytes = 0
    # frames 0 and 1 come back; 2, 3 and 4 were dropped (a stall); 5 and 6 come back
    for k, now in ((0, 1.005), (1, 1.025), (5, 1.105), (6, 1.125)):
        call._media(*_media(script.b64_run(call.offset + k, 1)), now)
    rtts = [round(x * 1000, 1) for x in gen.totals.rtts]
    assert rtts == [5.0, 5.0, 5.0, 5.0]  # without realignment: 5, 5, 65, 65
    assert gen.totals.skipped_frames == 3
    # a 40 ms chunk (frames 7 and 8) is recognised too
    call._media(*_media(script.b64_run(call.offset + 7, 2)), 1.165)
    assert round(gen.totals.rtts[-1] * 1000, 1) == 5.0


def test_a_non_verbatim_echo_is_matched_by_byte_count_alone() -> None:
    script = echo_script()
    gen = LoadGen("ws://unused", script)
    gen.totals.w0, gen.totals.w1 = 0.0, 100.0
    call = _lean_call(gen)
    for k in range(40):
        call.matcher.sent(1.0 + 0.02 * k)
    other = base64.b64encode(b"\x01" * FRAME_BYTES)  # re-encoded: no script frame has it
    for k in range(30):
        call._media(*_media(other), 1.0 + 0.02 * k + 0.005)
    assert gen.totals.skipped_frames == 0 and not call.resync  # gave up after a few misses
    assert max(gen.totals.rtts) < 0.0051


def _lean_call(gen: LoadGen) -> LeanCall:
    return LeanCall(gen, offset=7)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_client_frames_carry_the_payload_with_a_zero_mask(size: int) -> None:
    payload = b"x" * size
    frame = _client_frame(payload)
    assert frame[0] == 0x81 and frame[1] & 0x80  # final text frame, masked
    length = frame[1] & 0x7F
    header = 2
    if length == 126:
        length, header = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, header = int.from_bytes(frame[2:10], "big"), 10
    assert length == size
    assert frame[header : header + 4] == b"\0\0\0\0"  # the masking key: the payload as it is
    assert frame[header + 4 :] == payload
