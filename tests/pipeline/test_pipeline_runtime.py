"""Behaviour of the frame pipeline runtime (ordering, lanes, interruptions, lifecycle, errors)."""

from __future__ import annotations

import asyncio

import pytest

from harken.errors import CallClosedError, PipelineError
from harken.frames import (
    AudioFrame,
    DTMFFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    LLMTokenFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
    ToolResultFrame,
)
from harken.pipeline import Call, CallState, Pipeline, ServiceStage, Stage

PCM = b"\x00\x00" * 160


def audio(i: int) -> AudioFrame:
    return AudioFrame(PCM, 8000, timestamp=i * 0.02)


class Tag(Stage):
    """Appends its name to a text frame going either way, and logs system frames."""

    def __init__(self, name: str, log: list[str] | None = None) -> None:
        super().__init__(name)
        self.seen: list[SystemFrame] = []
        self.log = log

    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            frame = TextFrame(frame.text + self.name)
        self.push_down(frame)

    def on_up(self, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            frame = TextFrame(frame.text + self.name)
        self.push_up(frame)

    def on_system(self, frame: SystemFrame) -> None:
        self.seen.append(frame)
        if self.log is not None:
            self.log.append(self.name)


class Gate(ServiceStage):
    """A service that holds each frame until released (simulates a slow model or network)."""

    def __init__(self, name: str = "gate", **kw: int) -> None:
        super().__init__(name, **kw)
        self.release = asyncio.Event()
        self.handled: list[Frame] = []

    async def handle(self, frame: Frame) -> None:
        await self.release.wait()
        self.handled.append(frame)
        self.push_down(frame)


class Emitter(ServiceStage):
    """A service that, for each text frame, emits tokens with a delay between them (an LLM)."""

    def __init__(self, tokens: int = 5, delay: float = 0.01) -> None:
        super().__init__("llm")
        self.tokens = tokens
        self.delay = delay

    async def handle(self, frame: Frame) -> None:
        if not isinstance(frame, TextFrame):
            self.push_down(frame)
            return
        for i in range(self.tokens):
            await asyncio.sleep(self.delay)
            self.push_down(LLMTokenFrame(f"{frame.text}:{i}"))


class Boom(Stage):
    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, TextFrame) and frame.text.startswith("boom"):
            raise ValueError("kaput")
        self.push_down(frame)


def collect() -> tuple[list[Frame], list[Frame]]:
    return [], []


async def started(pipeline: Stage, **kw: object) -> tuple[Call, list[Frame], list[Frame]]:
    down: list[Frame] = []
    up: list[Frame] = []
    call = Call(pipeline, call_id="t", on_down=down.append, on_up=up.append, **kw)  # type: ignore[arg-type]
    await call.start()
    return call, down, up


async def settle(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# ------------------------------------------------------------------------------------------


async def test_ordering_downstream_and_upstream_through_nested_pipelines() -> None:
    inner = Pipeline([Tag("b"), Tag("c")])
    call, down, up = await started(Pipeline([Tag("a"), inner, Pipeline([]), Tag("d")]))
    for i in range(3):
        call.feed(TextFrame(str(i)))
    assert [f.text for f in down if isinstance(f, TextFrame)] == ["0abcd", "1abcd", "2abcd"]
    # upstream: the last stage pushes up; the frame visits stages in reverse order
    last = call.stages[-1]
    last.push_up(TextFrame("u"))
    assert [f.text for f in up if isinstance(f, TextFrame)] == ["ucba"]


async def test_ordering_is_kept_through_a_service_lane() -> None:
    gate = Gate()
    call, down, _ = await started(Pipeline([Tag("a"), gate, Tag("z")]))
    frames: list[Frame] = [audio(0), TextFrame("x"), audio(1), TextFrame("y")]
    for f in frames:
        call.feed(f)
    gate.release.set()
    await settle(10)
    kinds = [type(f).__name__ + (f.text if isinstance(f, TextFrame) else "") for f in down]
    assert kinds == ["AudioFrame", "TextFramexaz", "AudioFrame", "TextFrameyaz"]


async def test_system_frames_reach_every_stage_synchronously_in_order() -> None:
    log: list[str] = []
    gate = Gate()
    call, _, _ = await started(Pipeline([Tag("a", log), gate, Pipeline([Tag("b", log)])]))
    log.clear()
    call.feed(TextFrame("queued"))  # waits in the lane; the DTMF must not wait behind it
    call.feed(DTMFFrame("5"))
    assert log == ["a", "b"]
    assert isinstance(call.stages[0], Tag) and isinstance(call.stages[0].seen[-1], DTMFFrame)


async def test_text_lane_applies_backpressure_to_its_producer() -> None:
    gate = Gate(data_capacity=3)
    call, down, _ = await started(Pipeline([gate]))
    produced = 0

    async def producer() -> None:
        nonlocal produced
        for i in range(10):
            call.feed(TextFrame(str(i)))
            produced += 1
            if call.congested:
                await call.relieve()

    task = asyncio.create_task(producer())
    await settle(10)
    # The producer stopped once the lane held more than its capacity (the worker holds frame 0,
    # frames 1-4 wait), and nothing was dropped.
    assert produced == 5
    assert len(gate.lane) == 4
    assert gate.lane.full
    gate.release.set()
    await asyncio.wait_for(task, 1)
    await settle(10)
    assert [f.text for f in down if isinstance(f, TextFrame)] == [str(i) for i in range(10)]
    assert gate.lane.dropped_audio == 0


async def test_audio_lane_drops_the_oldest_frame_and_counts_it() -> None:
    gate = Gate(audio_capacity=5)
    call, down, _ = await started(Pipeline([gate]))
    for i in range(12):
        call.feed(audio(i))
    call.feed(TextFrame("marker"))
    assert not call.congested  # audio never applies backpressure
    assert gate.lane.dropped_audio == 7
    assert call.dropped_audio == 7
    gate.release.set()
    await settle(20)
    stamps = [round(f.timestamp / 0.02) for f in down if isinstance(f, AudioFrame)]
    # The worker took frame 0 before the flood; the newest 5 survived.
    assert stamps == [0, 8, 9, 10, 11] or stamps == [7, 8, 9, 10, 11]
    assert isinstance(down[-1], TextFrame)


async def test_interruption_overtakes_a_backlog_of_queued_audio() -> None:
    gate = Gate(audio_capacity=100)
    out = Tag("out")
    call, down, _ = await started(Pipeline([gate, out]))
    for i in range(50):
        call.feed(audio(i))
    call.feed(ToolResultFrame("c1", "lookup", {"ok": True}))
    call.feed(audio(99))
    await settle()
    assert len(gate.lane) >= 50
    call.interrupt()
    # the interruption reached the output stage at once, ahead of 50 queued frames
    assert isinstance(out.seen[-1], InterruptionFrame)
    assert out.seen[-1].generation == 1
    # queued audio was discarded; the uninterruptible tool result was kept
    assert [type(f) for _, f in gate.lane._q] == [ToolResultFrame]
    gate.release.set()
    await settle(10)
    assert not any(isinstance(f, AudioFrame) for f in down)
    assert any(isinstance(f, ToolResultFrame) for f in down)


async def test_no_stale_frame_of_an_old_generation_reaches_the_output() -> None:
    llm = Emitter(tokens=5, delay=0.01)
    call, down, _ = await started(Pipeline([llm, Tag("tts")]))
    call.feed(TextFrame("old"))
    await asyncio.sleep(0.025)  # a couple of tokens out
    call.interrupt()
    call.feed(TextFrame("new"))
    await asyncio.sleep(0.15)
    tokens = [f.text for f in down if isinstance(f, LLMTokenFrame)]
    first_new = tokens.index("new:0")
    assert all(t.startswith("new") for t in tokens[first_new:])
    assert tokens[first_new:] == [f"new:{i}" for i in range(5)]
    assert 1 <= first_new < 5  # some old tokens made it out before the interruption, not after


async def test_service_that_ignores_cancellation_still_cannot_emit_stale_frames() -> None:
    class Stubborn(ServiceStage):
        async def handle(self, frame: Frame) -> None:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                await asyncio.sleep(0.01)  # keeps going regardless (a badly written provider)
            self.push_down(LLMTokenFrame("late"))

    svc = Stubborn()
    call, down, _ = await started(Pipeline([svc]))
    call.feed(TextFrame("x"))
    await settle()
    call.interrupt()
    await asyncio.sleep(0.1)
    assert not any(isinstance(f, LLMTokenFrame) for f in down)
    assert svc.stale_dropped == 1


async def test_end_drains_queued_frames_first() -> None:
    gate = Gate(audio_capacity=100)
    call, down, _ = await started(Pipeline([Tag("a"), gate, Tag("b")]))
    for i in range(20):
        call.feed(audio(i))
    call.end()
    assert call.state is CallState.ENDING
    assert not call.done
    gate.release.set()
    await asyncio.wait_for(call.wait(), 1)
    assert call.state is CallState.ENDED
    assert sum(isinstance(f, AudioFrame) for f in down) == 20
    assert isinstance(down[-1], EndFrame)


async def test_cancel_aborts_at_once_and_tears_down() -> None:
    torn: list[str] = []

    class Svc(Gate):
        async def teardown(self) -> None:
            torn.append(self.name)

    gate = Svc(audio_capacity=100)
    call, down, _ = await started(Pipeline([gate, Tag("b")]))
    for i in range(20):
        call.feed(audio(i))
    await settle()
    call.cancel()
    await asyncio.wait_for(call.wait(), 1)
    assert call.state is CallState.CANCELLED
    assert torn == ["gate"]
    assert not down  # nothing queued came out
    assert not gate.running
    with pytest.raises(CallClosedError):
        call.feed(audio(0))


async def test_stage_error_is_reported_upstream_and_the_call_goes_on() -> None:
    errors: list[ErrorFrame] = []
    head = Tag("head")
    call, down, up = await started(Pipeline([head, Boom("boom"), Tag("c")]), on_error=errors.append)
    call.feed(TextFrame("boom"))
    call.feed(TextFrame("fine"))
    assert [e.stage for e in errors] == ["boom"]
    assert isinstance(errors[0].error, ValueError) and not errors[0].fatal
    assert any(isinstance(f, ErrorFrame) for f in up)  # travelled upstream through `head`
    assert [f.text for f in down if isinstance(f, TextFrame)] == ["fineheadc"]
    assert call.state is CallState.RUNNING


async def test_errors_past_the_budget_end_the_call() -> None:
    call, _, _ = await started(Pipeline([Boom("boom")]), max_errors=3)
    for _ in range(3):
        call.feed(TextFrame("boom"))
    await asyncio.wait_for(call.wait(), 1)
    assert call.state is CallState.CANCELLED
    assert "boom" in call.end_reason


async def test_a_stage_raising_in_one_of_100_calls_leaves_the_other_99_intact() -> None:
    calls = []
    for i in range(100):
        stages: list[Stage] = [Tag("a"), Boom("boom") if i == 42 else Tag("x"), Gate(), Tag("z")]
        call, down, _ = await started(Pipeline(stages), max_errors=1)
        calls.append((call, down, stages[2]))
    for call, _, gate in calls:
        assert isinstance(gate, Gate)
        gate.release.set()
        call.feed(TextFrame("boom"))
        if not call.closed:  # call 42 was cancelled by its stage's error
            call.feed(audio(0))
    await settle(20)
    for i, (call, down, _) in enumerate(calls):
        if i == 42:
            assert call.state is CallState.CANCELLED
            continue
        assert call.state is CallState.RUNNING, i
        texts = [f for f in down if isinstance(f, TextFrame)]
        assert len(texts) == 1 and texts[0].text == "boomaxz"
        assert sum(isinstance(f, AudioFrame) for f in down) == 1
    for call, _, _ in calls:
        call.end()
    await asyncio.wait_for(asyncio.gather(*(c.wait() for c, _, _ in calls)), 2)
    assert sum(c.state is CallState.ENDED for c, _, _ in calls) == 99
    assert sum(c.state is CallState.ENDED for c, _, _ in calls) == 99


async def test_service_error_is_attributed_to_the_service() -> None:
    class Fails(ServiceStage):
        async def handle(self, frame: Frame) -> None:
            raise RuntimeError("provider down")

    errors: list[ErrorFrame] = []
    call, _, _ = await started(Pipeline([Tag("a"), Fails("stt")]), on_error=errors.append)
    call.feed(TextFrame("x"))
    await settle()
    assert [e.stage for e in errors] == ["stt"]
    call.feed(TextFrame("y"))  # the worker survived its handler's error
    await settle()
    assert len(errors) == 2


async def test_idle_call_holds_no_service_task_after_linger() -> None:
    gate = Gate()
    gate.linger = 0.02
    gate.release.set()
    call, _, _ = await started(Pipeline([gate]))
    assert not gate.running
    call.feed(TextFrame("x"))
    assert gate.running
    await asyncio.sleep(0.06)
    assert not gate.running
    call.feed(TextFrame("y"))  # and it comes back on demand
    assert gate.running


async def test_start_frame_and_misuse() -> None:
    a = Tag("a")
    call, _, _ = await started(Pipeline([a]))
    assert isinstance(a.seen[0], StartFrame)
    with pytest.raises(PipelineError):
        await call.start()
    with pytest.raises(PipelineError):
        Pipeline([a, a])
    with pytest.raises(PipelineError):
        Call(Pipeline([a]))  # a stage belongs to one call only
    with pytest.raises(PipelineError):
        Tag("loose").push_down(TextFrame("x"))


async def test_an_error_below_a_service_is_blamed_on_the_stage_that_raised() -> None:
    errors: list[ErrorFrame] = []
    call, _, _ = await started(Pipeline([Gate(), Boom("below")]), on_error=errors.append)
    gate = call.stages[0]
    assert isinstance(gate, Gate)
    gate.release.set()
    call.feed(TextFrame("boom"))
    await settle(10)
    assert [e.stage for e in errors] == ["below"]
