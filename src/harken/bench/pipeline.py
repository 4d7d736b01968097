"""``harken bench pipeline``: what the runtime itself costs.

* **Inline routing**: frames through a 7-stage CPU pipeline whose stages only pass the frame on;
  the cost of an empty call is subtracted, so the figure is the runtime's routing cost per stage.
* **Service lane**: the same 7 stages with the middle one a :class:`ServiceStage` (its own task
  behind a lane). The producer yields to the loop after every frame, as a network reader does;
  the same producer loop over the all-inline pipeline is the reference, so ``service_hop_us`` is
  what the lane and its task switch add per frame.
* **Idle calls**: N calls with a realistic agent pipeline (transport in, resampler, VAD, turn
  detector, STT/LLM/TTS service stages, resampler, transport out) are started and left idle, each
  with one reader task as a transport gives it. Memory per call is measured with ``tracemalloc``
  (Python allocations) and from RSS; tasks per call from ``asyncio.all_tasks()``.
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
import soxr

from harken.frames import AudioFrame, Frame, SystemFrame
from harken.pipeline import Call, Pipeline, ServiceStage, Stage

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


class _TransportIn(Stage):
    """Holds what a carrier transport's input side holds per call."""

    __slots__ = ("frames_in", "stream_id")

    def __init__(self) -> None:
        super().__init__("transport-in")
        self.stream_id = "MZ" + "0" * 32
        self.frames_in = 0


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


class _TransportOut(Stage):
    __slots__ = ("marks", "pending")

    def __init__(self) -> None:
        super().__init__("transport-out")
        self.pending = bytearray()
        self.marks: list[str] = []


def realistic_pipeline() -> Pipeline:
    return Pipeline(
        [
            _TransportIn(),
            _Resample("resample-in", 8000, 16000),
            _Vad(),
            _Turn(),
            ServiceStage("stt"),
            ServiceStage("llm"),
            ServiceStage("tts"),
            _Resample("resample-out", 24000, 8000),
            _TransportOut(),
        ]
    )


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") // 1024


async def _open_idle(n: int) -> tuple[list[Call], list[asyncio.Task[None]], asyncio.Future[None]]:
    async def reader(stop: asyncio.Future[None]) -> None:
        await stop  # a transport's reader waiting for the next message

    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    calls, readers = [], []
    for i in range(n):
        call = Call(realistic_pipeline(), call_id=f"c{i}")
        await call.start()
        calls.append(call)
        readers.append(loop.create_task(reader(stop)))
    await asyncio.sleep(0)
    gc.collect()
    return calls, readers, stop


async def _close_idle(
    calls: list[Call], readers: list[asyncio.Task[None]], stop: asyncio.Future[None]
) -> None:
    stop.set_result(None)
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers, *(c.wait() for c in calls))


def bench_idle(n: int) -> dict[str, float]:
    async def main() -> dict[str, float]:
        warm = Call(realistic_pipeline())  # warm allocator, imports and caches
        await warm.start()
        gc.collect()
        # Pass 1, RSS (no tracing): what the process really grows by per idle call.
        tasks_before = len(asyncio.all_tasks())
        rss_before = _rss_kb()
        calls, readers, stop = await _open_idle(n)
        rss = (_rss_kb() - rss_before) / n
        tasks = (len(asyncio.all_tasks()) - tasks_before) / n
        stages = len(calls[0].stages)
        await _close_idle(calls, readers, stop)
        del calls, readers
        gc.collect()
        # Pass 2, tracemalloc: Python-heap bytes per idle call.
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        calls, readers, stop = await _open_idle(n)
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        heap = sum(s.size_diff for s in after.compare_to(before, "filename")) / n / 1024
        await _close_idle(calls, readers, stop)
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
