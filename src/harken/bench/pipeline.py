"""``harken bench pipeline``: what the runtime itself costs.

* **Inline routing**: frames through a 7-stage CPU pipeline whose stages only pass the frame on;
  the cost of an empty call is subtracted, so the figure is the runtime's routing cost per stage.
* **Service lane**: the same 7 stages with the middle one a :class:`ServiceStage` (its own task
  behind a lane). The producer yields to the loop after every frame, as a network reader does;
  the same producer loop over the all-inline pipeline is the reference, so ``service_hop_us`` is
  what the lane and its task switch add per frame.
* **Idle calls**: N real Twilio carrier sessions (codec, call, paced output with playback
  tracking) whose agent has a speaking agent's shape (resampler, per-call VAD state, turn
  detector, STT/LLM/TTS service stages, resampler) are started and left idle. The socket is a null
  link (picows delivers frames by callback, so a real call adds no reader task; its socket
  buffers are counted by the echo bench's RSS figures, not here). Memory per call is measured with
  ``tracemalloc`` (Python allocations) and from RSS; tasks per call from ``asyncio.all_tasks()``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np
import orjson
import soxr

from harken.frames import AudioFrame, Frame, SystemFrame
from harken.pipeline import Call, Pipeline, ServiceStage, Stage
from harken.protocols.twilio import TwilioCodec
from harken.transports.carrier import CallManager, CarrierSession

_PCM_20MS_8K = bytes(320)


class _Pass(Stage):
    __slots__ = ()

    def on_down(self, frame: Frame) -> None:
        self.push_down(frame)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=200_000, help="frames per routing run")
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (median taken)")
    parser.add_argument("--calls", type=int, default=2000, help="idle calls to open")


def _inline_run(stages: int, frames: int) -> float:
    """Seconds to feed ``frames`` frames through ``stages`` pass-through stages."""
    call = Call(Pipeline([_Pass() for _ in range(stages)]))
    feed = call.feed
    frame = AudioFrame(_PCM_20MS_8K, 8000)
    t0 = time.perf_counter()
    for _ in range(frames):
        feed(frame)
    return time.perf_counter() - t0


def bench_inline(frames: int, repeats: int, stages: int = 7) -> dict[str, float]:
    full = statistics.median(_inline_run(stages, frames) for _ in range(repeats))
    empty = statistics.median(_inline_run(0, frames) for _ in range(repeats))
    return {
        "us_per_frame_per_stage_inline": (full - empty) / frames / stages * 1e6,
        "us_per_frame_7_stages_inline": full / frames * 1e6,
        "us_per_frame_call_entry": empty / frames * 1e6,
    }


async def _producer_run(pipeline: Stage, frames: int) -> float:
    call = Call(pipeline)
    await call.start()
    frame = AudioFrame(_PCM_20MS_8K, 8000)
    feed = call.feed
    sleep = asyncio.sleep
    t0 = time.perf_counter()
    for _ in range(frames):
        feed(frame)
        await sleep(0)
    elapsed = time.perf_counter() - t0
    call.cancel()
    await call.wait()
    return elapsed


def _service_pipeline(stages: int) -> Stage:
    middle = stages // 2
    parts: list[Stage] = [ServiceStage("svc") if i == middle else _Pass() for i in range(stages)]
    return Pipeline(parts)


def bench_service(frames: int, repeats: int, stages: int = 7) -> dict[str, float]:
    async def main() -> tuple[float, float]:
        svc = statistics.median(
            [await _producer_run(_service_pipeline(stages), frames) for _ in range(repeats)]
        )
        ref = statistics.median(
            [
                await _producer_run(Pipeline([_Pass() for _ in range(stages)]), frames)
                for _ in range(repeats)
            ]
        )
        return svc, ref

    svc, ref = asyncio.run(main())
    return {
        "us_per_frame_per_stage_service": svc / frames / stages * 1e6,
        "us_per_frame_7_stages_service": svc / frames * 1e6,
        "us_per_frame_7_stages_inline_same_producer": ref / frames * 1e6,
        "service_hop_us": (svc - ref) / frames * 1e6,
    }


# --- a realistic idle call --------------------------------------------------------------------


class _Resample(Stage):
    """A streaming resampler; its native soxr state (34-49 KB) is created on the first audio."""

    __slots__ = ("rate_in", "rate_out", "stream")

    def __init__(self, name: str, rate_in: int, rate_out: int) -> None:
        super().__init__(name)
        self.rate_in = rate_in
        self.rate_out = rate_out
        self.stream: soxr.ResampleStream | None = None

    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            if self.stream is None:
                self.stream = soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="int16")
            pcm = self.stream.resample_chunk(np.frombuffer(frame.pcm, dtype=np.int16))
            frame = AudioFrame(pcm.tobytes(), self.rate_out, timestamp=frame.timestamp)
        self.push_down(frame)


class _Vad(Stage):
    """Per-call VAD state as a batched Silero session keeps it (state tensor + context)."""

    __slots__ = ("context", "speaking", "state")

    def __init__(self) -> None:
        super().__init__("vad")
        self.state = np.zeros((2, 1, 128), dtype=np.float32)
        self.context = np.zeros(64, dtype=np.float32)
        self.speaking = False


class _Turn(Stage):
    __slots__ = ("silence_ms", "utterance")

    def __init__(self) -> None:
        super().__init__("turn")
        self.silence_ms = 0
        self.utterance = bytearray()

    def on_system(self, frame: SystemFrame) -> None:
        self.silence_ms = 0


def agent_stages() -> list[Stage]:
    """What a speaking agent puts between the transport's input and output."""
    return [
        _Resample("resample-in", 8000, 16000),
        _Vad(),
        _Turn(),
        ServiceStage("stt"),
        ServiceStage("llm"),
        ServiceStage("tts"),
        _Resample("resample-out", 24000, 8000),
    ]


class _NullLink:
    """A socket that accepts everything (the socket's own buffers are not counted here)."""

    def send_text(self, text: str) -> None:
        pass

    def send_bytes(self, data: bytes) -> None:
        pass

    def close(self, code: int = 1000, reason: str = "") -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _start_message(i: int) -> str:
    sid = f"MZ{i:032d}"
    return orjson.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": sid,
            "start": {
                "streamSid": sid,
                "accountSid": "AC" + "0" * 32,
                "callSid": f"CA{i:032d}",
                "tracks": ["inbound"],
                "customParameters": {"From": "+15550000000"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
    ).decode()


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


async def _open_idle(n: int) -> tuple[list[CarrierSession], CallManager]:
    """N real Twilio carrier sessions (codec, call, agent stages, paced output), started."""
    manager = CallManager(max_calls=n + 1)
    sessions = []
    for i in range(n):
        session = CarrierSession(
            TwilioCodec(), _NullLink(), manager, lambda info, rin, rout: agent_stages()
        )
        session.receive_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        session.receive_text(_start_message(i))
        sessions.append(session)
    await asyncio.sleep(0)
    gc.collect()
    return sessions, manager


async def _close_idle(sessions: list[CarrierSession]) -> None:
    for session in sessions:
        session.fail("bench over", 1000, "")
    await asyncio.gather(*(s.task for s in sessions if s.task is not None))


def bench_idle(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        warm, _ = await _open_idle(10)  # warm allocator, imports and caches
        await _close_idle(warm)
        del warm
        gc.collect()
        # Pass 1, RSS (no tracing): what the process really grows by per idle call.
        tasks_before = len(asyncio.all_tasks())
        rss_before = _rss_kb()
        sessions, _ = await _open_idle(n)
        rss = (_rss_kb() - rss_before) / n
        tasks = (len(asyncio.all_tasks()) - tasks_before) / n
        call = sessions[0].call
        stages = len(call.stages) if call is not None else 0
        await _close_idle(sessions)
        del sessions
        gc.collect()
        # Pass 2, tracemalloc: Python-heap bytes per idle call.
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        sessions, _ = await _open_idle(n)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        heap = sum(s.size_diff for s in after.compare_to(before, "filename")) / n / 1024
        await _close_idle(sessions)
        return {
            "idle_calls": n,
            "idle_call_kb": heap,
            "idle_call_rss_kb": rss,
            "tasks_per_idle_call": tasks,
            "stages_per_idle_call": stages,
        }

    return asyncio.run(main())


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {}
    result.update(bench_inline(args.frames, args.repeats))
    result.update(bench_service(max(args.frames // 4, 1000), args.repeats))
    result.update(bench_idle(args.calls))
    return result


def report(result: dict[str, Any]) -> str:
    lines = [
        "pipeline runtime",
        f"  inline routing      {result['us_per_frame_per_stage_inline']:.3f} µs/frame/stage "
        f"({result['us_per_frame_7_stages_inline']:.2f} µs through 7 stages incl. call entry)",
        f"  with a service lane {result['us_per_frame_per_stage_service']:.3f} µs/frame/stage "
        f"(lane + task switch add {result['service_hop_us']:.2f} µs/frame)",
        f"  idle call           {result['idle_call_kb']:.1f} KB (tracemalloc), "
        f"{result['idle_call_rss_kb']:.1f} KB RSS, "
        f"{result['tasks_per_idle_call']:.2f} tasks, {result['stages_per_idle_call']} stages",
    ]
    return "\n".join(lines)
