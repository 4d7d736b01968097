"""One call: a wired pipeline, its generation number, its lifecycle and its error boundary.

Rules the runtime keeps (and the tests check):

* **Inline by default.** ``Call.feed`` runs the frame through every CPU stage as direct calls,
  up to the first service lane or the end of the pipeline.
* **System frames overtake everything.** ``Call.system`` delivers a system frame synchronously to
  every stage, in pipeline order. An :class:`InterruptionFrame` first bumps the generation,
  discards every lane's queued interruptible frames and abandons interruptible work in flight;
  uninterruptible frames (end, tool results, hang-up, errors) stay queued.
* **Generations.** ``Call.generation`` rises by one per interruption. Work started under an older
  generation cannot put frames on the wire (see :mod:`harken.pipeline.service`).
* **Lifecycle.** ``start()`` runs every stage's ``setup`` then broadcasts a ``StartFrame``.
  ``end()`` sends an ``EndFrame`` downstream *behind* everything queued, so queued audio drains
  first; the call is done when it comes out of the last stage. ``cancel()`` is immediate.
  ``wait()`` returns once teardown has run.
* **Error boundary.** An exception raised by a stage is caught at the call's edge (``feed``,
  ``system``, the service worker), attributed to the stage that raised it, pushed *upstream* from
  that stage as an :class:`ErrorFrame` and handed to ``on_error``. It never escapes into the
  transport or another call. After ``max_errors`` errors, or an error from a stage whose
  ``fatal_errors`` is true, the call is cancelled.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable, Iterator
from types import TracebackType

from harken.errors import CallClosedError, PipelineError
from harken.frames import (
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    InterruptionFrame,
    StartFrame,
    SystemFrame,
)
from harken.pipeline.service import Lane, ServiceStage
from harken.pipeline.stage import Push, Stage

log = logging.getLogger("harken.pipeline")

FrameHook = Callable[[Frame], None]
ErrorHook = Callable[[ErrorFrame], None]


class CallState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    ENDING = "ending"
    ENDED = "ended"
    CANCELLED = "cancelled"


class Call:
    """Runs one pipeline for one call. Create one per call; stages are not shared between calls."""

    __slots__ = (
        "_done",
        "_entry",
        "_finishing",
        "_overfull",
        "_raised",
        "_services",
        "_stages",
        "call_id",
        "closed",
        "end_reason",
        "errors",
        "generation",
        "max_errors",
        "on_down",
        "on_error",
        "on_up",
        "pipeline",
        "state",
    )

    def __init__(
        self,
        pipeline: Stage,
        *,
        call_id: str = "",
        on_down: FrameHook | None = None,
        on_up: FrameHook | None = None,
        on_error: ErrorHook | None = None,
        max_errors: int = 10,
    ) -> None:
        self.pipeline = pipeline
        self.call_id = call_id
        self.on_down = on_down
        self.on_up = on_up
        self.on_error = on_error
        self.max_errors = max_errors
        self.generation = 0
        self.errors = 0
        self.state = CallState.NEW
        self.closed = False
        self.end_reason = ""
        self._overfull: list[Lane] = []
        self._raised: ErrorFrame | None = None
        self._done: asyncio.Future[None] | None = None
        self._finishing: asyncio.Task[None] | None = None
        pipeline.bind(self)
        pipeline.link_down(self._tail)
        pipeline.link_up(self._head)
        self._entry: Push = pipeline.entry_down()
        self._stages: tuple[Stage, ...] = tuple(pipeline.leaves())
        self._services: tuple[ServiceStage, ...] = tuple(
            s for s in self._stages if isinstance(s, ServiceStage)
        )

    # --- introspection -----------------------------------------------------------------------

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    @property
    def lanes(self) -> Iterator[Lane]:
        return (s.lane for s in self._services)

    @property
    def dropped_audio(self) -> int:
        """Audio frames dropped by full lanes (drop-oldest) in this call."""
        return sum(lane.dropped_audio for lane in self.lanes)

    @property
    def congested(self) -> bool:
        """True while a producer has overfilled a text/control lane and not yet waited."""
        return bool(self._overfull)

    # --- frames in ---------------------------------------------------------------------------

    def feed(self, frame: Frame) -> None:
        """Send a frame into the top of the pipeline (downstream). Synchronous.

        System frames are routed to :meth:`system`. After ``feed`` returns, a producer that can
        wait should ``await call.relieve()`` when :attr:`congested` is true (backpressure).
        """
        if self.closed:
            raise CallClosedError(f"call {self.call_id!r} has finished")
        if frame.kind == 0:  # KIND_SYSTEM
            self.system(frame)  # type: ignore[arg-type]
            return
        try:
            self._entry(frame)
        except Exception as exc:  # noqa: BLE001 - the call's error boundary
            self._failed(exc)

    def system(self, frame: SystemFrame) -> None:
        """Deliver a system frame to every stage at once, overtaking anything queued."""
        if self.closed:
            return
        if isinstance(frame, InterruptionFrame):
            self.generation += 1
            frame.generation = self.generation
            for service in self._services:
                service.interrupt()
        for stage in self._stages:
            try:
                stage.on_system(frame)
            except Exception as exc:  # noqa: BLE001 - attributed to that stage, others go on
                self._stage_failed(stage, exc)
            if self._stopped() and not isinstance(frame, CancelFrame):
                return  # a stage ended the call while handling this frame

    def interrupt(self) -> int:
        """Shorthand for ``system(InterruptionFrame())``; returns the new generation."""
        self.system(InterruptionFrame())
        return self.generation

    async def relieve(self) -> None:
        """Wait until the lanes this producer overfilled are back within capacity."""
        while self._overfull:
            lanes, self._overfull = self._overfull, []
            for lane in lanes:
                if lane.full and not self.closed:
                    await lane.wait_space()

    def take_overfull(self) -> list[Lane]:
        """For callback-driven producers: the lanes just overfilled (pause reading until space)."""
        lanes, self._overfull = self._overfull, []
        return [lane for lane in lanes if lane.full]

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, frame: StartFrame | None = None) -> None:
        """Set up every stage, then broadcast the start frame."""
        if self.state is not CallState.NEW:
            raise PipelineError(f"call {self.call_id!r} already started")
        self._done = asyncio.get_running_loop().create_future()
        for stage in self._stages:
            await stage.setup()
        self.state = CallState.RUNNING
        self.system(frame or StartFrame(call_id=self.call_id))

    def end(self, reason: str = "end") -> None:
        """Graceful end: everything queued before the end frame is delivered first."""
        if self.closed or self.state is CallState.ENDING:
            return
        self.state = CallState.ENDING
        self.feed(EndFrame(reason=reason))

    def cancel(self, reason: str = "cancel") -> None:
        """Immediate stop: queued frames are discarded and service work is cancelled."""
        if self.closed:
            return
        self.system(CancelFrame(reason=reason))
        self._close(CallState.CANCELLED, reason)

    async def wait(self) -> None:
        """Return once the call has ended or been cancelled and its stages torn down."""
        if self._done is None:
            raise PipelineError(f"call {self.call_id!r} was never started")
        await asyncio.shield(self._done)
        if self._finishing is not None:
            await self._finishing

    def _stopped(self) -> bool:
        return self.closed

    @property
    def done(self) -> bool:
        return self._done is not None and self._done.done()

    def _tail(self, frame: Frame) -> None:
        """Downstream end of the pipeline."""
        if self.on_down is not None:
            self.on_down(frame)
        if isinstance(frame, EndFrame):
            self._close(CallState.ENDED, frame.reason)

    def _head(self, frame: Frame) -> None:
        """Upstream end of the pipeline."""
        if isinstance(frame, ErrorFrame) and frame is not self._raised:
            self._report(frame)  # an error a stage pushed up on purpose
        if self.on_up is not None:
            self.on_up(frame)

    def _close(self, state: CallState, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.state = state
        self.end_reason = reason
        self._overfull = []
        for service in self._services:
            service.stop()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # closed outside a loop (tests, shutdown): nothing to tear down
            self._resolve()
            return
        self._finishing = loop.create_task(self._teardown(), name=f"harken:teardown:{self.call_id}")

    async def _teardown(self) -> None:
        for stage in self._stages:
            try:
                await stage.teardown()
            except Exception:
                log.exception("call %s: teardown of %s failed", self.call_id, stage.name)
        self._resolve()

    def _resolve(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    # --- errors ------------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """An exception escaped an inline chain: find the stage that raised it."""
        self._stage_failed(None, exc)

    def _culprit(self, exc: BaseException) -> Stage | None:
        stages = {id(s): s for s in self._stages}
        found: Stage | None = None
        tb: TracebackType | None = exc.__traceback__
        while tb is not None:
            owner = tb.tb_frame.f_locals.get("self")
            if owner is not None and id(owner) in stages:
                found = stages[id(owner)]
            tb = tb.tb_next
        return found

    def _stage_failed(self, stage: Stage | None, exc: Exception) -> None:
        """``stage`` raised (or a stage it called inline did: the deepest one is blamed)."""
        stage = self._culprit(exc) or stage
        self.errors += 1
        name = stage.name if stage is not None else "?"
        fatal = self.errors >= self.max_errors or bool(getattr(stage, "fatal_errors", False))
        log.warning("call %s: stage %s raised %r", self.call_id, name, exc)
        frame = ErrorFrame(error=exc, stage=name, fatal=fatal)
        if stage is not None:
            # Upstream stages see the error in order; the hook and the fatal decision below
            # do not depend on every stage passing it on.
            self._raised = frame
            try:
                stage.push_up(frame)
            except Exception:
                log.exception("call %s: pushing an error upstream failed", self.call_id)
            finally:
                self._raised = None
        self._report(frame)

    def _report(self, frame: ErrorFrame) -> None:
        if self.on_error is not None:
            try:
                self.on_error(frame)
            except Exception:
                log.exception("call %s: on_error hook failed", self.call_id)
        if frame.fatal:
            self.cancel(reason=f"error in {frame.stage}: {frame.error!r}")
