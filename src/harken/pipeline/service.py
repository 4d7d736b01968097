"""Service stages: work that waits on a network or a model runs in its own task behind a lane.

A :class:`Lane` is the bounded queue in front of a :class:`ServiceStage`. Its policy depends on
the frame:

* **audio** frames: at most ``audio_capacity`` wait; when full, the *oldest* queued audio frame is
  dropped (stale audio is worthless) and counted in ``Lane.dropped_audio``;
* **other** frames (text, control): never dropped. Past ``data_capacity`` the lane reports itself
  full to the call, and the producer that overfilled it waits (``Call.relieve``) until the
  worker has drained it back to capacity: backpressure, all the way to the transport's socket.

Every entry records the call's generation when it was queued. An interruption discards queued
interruptible frames at once, cancels the handler in flight if it is working on one, and any
entry of an older generation still met at dequeue is dropped. Frames a handler emits while the
generation it started under is stale are dropped too (``ServiceStage.stale_dropped``): late TTS
audio or LLM tokens of an abandoned reply never reach the transport.

The worker task is started on the first frame and exits after ``linger`` seconds with nothing to
do, so an idle call holds no service tasks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import ClassVar

from harken.frames import Frame
from harken.pipeline.stage import Push, Stage

_NO_GEN = -1


class Lane:
    """The bounded queue in front of one service stage."""

    __slots__ = (
        "_audio",
        "_data",
        "_full",
        "_q",
        "_space",
        "audio_capacity",
        "data_capacity",
        "dropped_audio",
        "dropped_stale",
        "stage",
    )

    def __init__(self, stage: ServiceStage, audio_capacity: int, data_capacity: int) -> None:
        self.stage = stage
        self.audio_capacity = audio_capacity
        self.data_capacity = data_capacity
        # created on the first frame: an idle call's lanes hold no deque (~0.7 KB each)
        self._q: deque[tuple[int, Frame]] | None = None
        self._audio = 0
        self._data = 0
        self._full = False
        self._space: asyncio.Future[None] | None = None
        self.dropped_audio = 0
        self.dropped_stale = 0

    def __len__(self) -> int:
        return len(self._q) if self._q is not None else 0

    @property
    def full(self) -> bool:
        """True while more than ``data_capacity`` non-audio frames wait."""
        return self._full

    def put(self, frame: Frame) -> None:
        """Queue a frame (synchronous; this is what the stage above calls)."""
        stage = self.stage
        call = stage.call
        if call is None or call.closed:
            return
        q = self._q
        if q is None:
            q = self._q = deque()
        q.append((call.generation, frame))
        if frame.is_audio:
            self._audio += 1
            if self._audio > self.audio_capacity:
                self._drop_oldest_audio()
        else:
            self._data += 1
            if self._data > self.data_capacity and not self._full:
                self._full = True
                call._overfull.append(self)
        stage._wake()

    def _drop_oldest_audio(self) -> None:
        q = self._q
        assert q is not None
        for i, (_, queued) in enumerate(q):
            if queued.is_audio:
                del q[i]
                self._audio -= 1
                self.dropped_audio += 1
                return

    def pop(self) -> tuple[int, Frame] | None:
        if not self._q:
            return None
        gen, frame = self._q.popleft()
        if frame.is_audio:
            self._audio -= 1
        else:
            self._data -= 1
            if self._full and self._data <= self.data_capacity:
                self._release()
        return gen, frame

    def discard_interruptible(self) -> int:
        """Drop queued frames that an interruption may discard; returns how many."""
        if not self._q:
            return 0
        kept = deque(entry for entry in self._q if not entry[1].interruptible)
        dropped = len(self._q) - len(kept)
        self._q = kept
        self._audio = sum(1 for _, f in kept if f.is_audio)
        self._data = len(kept) - self._audio
        if self._full and self._data <= self.data_capacity:
            self._release()
        return dropped

    def clear(self) -> None:
        self._q = None
        self._audio = self._data = 0
        if self._full:
            self._release()

    def wait_space(self) -> asyncio.Future[None]:
        """A future resolved once the lane is back within ``data_capacity``."""
        if self._space is None:
            self._space = asyncio.get_running_loop().create_future()
            if not self._full:
                self._space.set_result(None)
        return self._space

    def _release(self) -> None:
        self._full = False
        space, self._space = self._space, None
        if space is not None and not space.done():
            space.set_result(None)


class ServiceStage(Stage):
    """A stage whose :meth:`handle` may await (network, model). Runs in its own task.

    Subclasses override :meth:`handle`; frames they pass on with ``self.push_down`` continue
    inline through the CPU stages below until the next lane or the transport. Upstream frames
    pass through service stages inline (``on_up``), so lanes only ever carry downstream traffic
    and backpressure cannot deadlock.
    """

    __slots__ = (
        "_busy",
        "_interrupting",
        "_last_active",
        "_linger_timer",
        "_next_down",
        "_wakeup",
        "_work_gen",
        "_worker",
        "lane",
        "linger",
        "stale_dropped",
    )

    audio_capacity: ClassVar[int] = 50  # one second of 20 ms frames
    data_capacity: ClassVar[int] = 64

    def __init__(
        self,
        name: str | None = None,
        *,
        audio_capacity: int | None = None,
        data_capacity: int | None = None,
        linger: float = 2.0,
    ) -> None:
        super().__init__(name)
        self.lane = Lane(
            self,
            type(self).audio_capacity if audio_capacity is None else audio_capacity,
            type(self).data_capacity if data_capacity is None else data_capacity,
        )
        self.linger = linger
        self._worker: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[bool] | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._last_active = 0.0
        self._busy: Frame | None = None
        self._interrupting = False
        self._work_gen = _NO_GEN
        self._next_down: Push = self.push_down
        self.stale_dropped = 0

    async def handle(self, frame: Frame) -> None:
        """Process one downstream frame; the default passes it on."""
        self.push_down(frame)

    def on_interrupt(self) -> None:
        """Called synchronously on an interruption, before the handler in flight is cancelled."""

    # --- wiring ------------------------------------------------------------------------------

    def entry_down(self) -> Push:
        return self.lane.put

    def link_down(self, target: Push) -> None:
        self._next_down = target
        self.push_down = self._emit

    def _emit(self, frame: Frame) -> None:
        call = self.call
        if call is None or call.closed:
            return
        gen = self._work_gen
        if gen != _NO_GEN and gen != call.generation and frame.interruptible:
            self.stale_dropped += 1
            return
        self._next_down(frame)

    # --- worker ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while this stage's worker task exists."""
        return self._worker is not None

    def _wake(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"harken:{self.name}"
            )
            return
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _linger_check(self) -> None:
        """One timer per linger period, not per frame: re-armed while the worker keeps busy."""
        self._linger_timer = None
        waiter = self._wakeup
        if waiter is None or waiter.done():
            return  # busy: _idle arms a new timer when the worker next waits
        loop = asyncio.get_running_loop()
        deadline = self._last_active + self.linger
        if loop.time() >= deadline:
            waiter.set_result(False)
        else:
            self._linger_timer = loop.call_at(deadline, self._linger_check)

    async def _idle(self) -> bool:
        """Wait for the next frame; False when ``linger`` passed with none."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._wakeup = waiter
        if self._linger_timer is None:
            self._linger_timer = loop.call_at(self._last_active + self.linger, self._linger_check)
        try:
            return await waiter
        finally:
            self._wakeup = None

    async def _run(self) -> None:
        call = self.call
        assert call is not None
        lane = self.lane
        task = asyncio.current_task()
        loop_time = asyncio.get_running_loop().time
        self._last_active = loop_time()
        try:
            while True:
                try:
                    entry = lane.pop()
                    if entry is None:
                        if not await self._idle():
                            return
                        continue
                    gen, frame = entry
                    self._last_active = loop_time()
                    if gen != call.generation and frame.interruptible:
                        lane.dropped_stale += 1
                        continue
                    self._busy = frame
                    self._work_gen = call.generation
                    try:
                        await self.handle(frame)
                    except asyncio.CancelledError:
                        raise
                    except Exception as exc:  # noqa: BLE001 - reported as this stage's error
                        call._stage_failed(self, exc)
                    finally:
                        self._busy = None
                        self._work_gen = _NO_GEN
                    if call._overfull:
                        await call.relieve()
                except asyncio.CancelledError:
                    if self._interrupting and task is not None:
                        self._interrupting = False
                        task.uncancel()
                        continue
                    raise
        finally:
            self._worker = None
            if self._linger_timer is not None:
                self._linger_timer.cancel()
                self._linger_timer = None

    def interrupt(self) -> None:
        """Discard queued interruptible frames and abandon interruptible work in flight."""
        self.lane.discard_interruptible()
        self.on_interrupt()
        busy = self._busy
        worker = self._worker
        if busy is not None and busy.interruptible and worker is not None:
            self._interrupting = True
            worker.cancel()

    def stop(self) -> None:
        """Cancel the worker and drop everything queued (call cancel / teardown)."""
        self.lane.clear()
        if self._worker is not None:
            self._interrupting = False
            self._worker.cancel()
