"""Smart Turn for a whole process: one worker thread, batching, a deadline and a CPU budget.

:class:`TurnPool` is what :class:`~harken.speech.turn.TurnStage` asks for verdicts; see its
docstring for the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import numpy.typing as npt

from harken.audio import resample
from harken.errors import ConfigError
from harken.speech.models import background_thread
from harken.speech.smart_turn import SAMPLE_RATE, SmartTurn, default_smart_turn

__all__ = ["Done", "TurnPool", "default_turn_pool"]

log = logging.getLogger("harken.speech.turn")

Done = Callable[[float | None], None]


class TurnPool:
    """Smart Turn for a whole process: one worker thread, batching the requests waiting.

    ``submit`` is called on an event loop and never blocks; ``done(probability)`` is called back
    on that loop (``None`` when the model failed, or the request was skipped: the queue was over
    ``max_waiting``, its ``deadline`` passed before its turn came, or the model had used more
    than ``max_busy`` of a core over the last ``window_s`` - the turn then falls back to its
    silence timer). The budget keeps a burst of turn ends from starving the event loop of the
    core it shares: on one core, every millisecond of inference is a millisecond the calls'
    audio waits. Counters: ``runs``, ``predictions``, ``skipped``, ``expired``, ``over_budget``,
    ``failed``, ``busy_s``.
    """

    def __init__(
        self,
        model: SmartTurn | None = None,
        *,
        max_batch: int = 4,
        max_waiting: int = 64,
        max_busy: float = 0.25,
        window_s: float = 2.0,
    ) -> None:
        if not 0.0 < max_busy <= 1.0 or window_s <= 0:
            raise ConfigError("TurnPool: max_busy must be in (0, 1] and window_s > 0")
        self._model = model
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.max_busy = max_busy
        self.window_s = window_s
        self._queue: deque[_Request] = deque()
        self._lock = threading.Lock()
        self._running = False
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="harken-turn", initializer=background_thread
        )
        self._recent: deque[tuple[float, float]] = deque()  # (end, seconds busy) of each run
        self._recent_busy = 0.0
        self.runs = self.predictions = self.skipped = self.failed = 0
        self.expired = self.over_budget = 0
        self.busy_s = 0.0

    @property
    def model(self) -> SmartTurn:
        if self._model is None:
            self._model = default_smart_turn()
        return self._model

    def submit(
        self,
        pcm: npt.NDArray[np.int16],
        rate: int,
        done: Done,
        *,
        deadline: float | None = None,
    ) -> None:
        """Queue one clip (int16 at ``rate``; the worker resamples to 16 kHz). ``deadline``
        (``time.monotonic()``): skip the clip if its turn comes later than this."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if len(self._queue) >= self.max_waiting:
                self.skipped += 1
                loop.call_soon(done, None)
                return
            self._queue.append((pcm, rate, done, loop, math.inf if deadline is None else deadline))
            if self._running:
                return
            self._running = True
        self._executor.submit(self._drain)

    def _take(self) -> tuple[list[_Request], list[_Request]]:
        """Under the lock: (the next batch to run, the requests to answer None)."""
        now = time.monotonic()
        while self._recent and self._recent[0][0] < now - self.window_s:
            self._recent_busy -= self._recent.popleft()[1]
        drop: list[_Request] = []
        batch: list[_Request] = []
        over = self._recent_busy >= self.max_busy * self.window_s
        while self._queue and len(batch) < self.max_batch:
            req = self._queue.popleft()
            if req[4] < now:
                self.expired += 1
                drop.append(req)
            elif over:
                self.over_budget += 1
                drop.append(req)
            else:
                batch.append(req)
        return batch, drop

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                batch, drop = self._take()
            _answer(drop, [None] * len(drop))
            if not batch:
                continue
            t0 = time.perf_counter()
            probs: list[float | None]
            try:
                clips = [_to_model_input(pcm, rate) for pcm, rate, _, _, _ in batch]
                probs = list(self.model.predict_many(clips))
                self.predictions += len(batch)
            except Exception:
                log.exception("Smart Turn inference failed")
                self.failed += len(batch)
                probs = [None] * len(batch)
            busy = time.perf_counter() - t0
            self.busy_s += busy
            self.runs += 1
            with self._lock:
                self._recent.append((time.monotonic(), busy))
                self._recent_busy += busy
            _answer(batch, probs)

    async def predict(self, pcm: npt.NDArray[np.int16], rate: int) -> float | None:
        """Await one verdict (a convenience for tools and tests)."""
        fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()

        def done(p: float | None) -> None:
            if not fut.done():
                fut.set_result(p)

        self.submit(pcm, rate, done)
        return await fut


_Request = tuple[npt.NDArray[np.int16], int, Done, asyncio.AbstractEventLoop, float]


def _answer(requests: list[_Request], probs: list[float | None]) -> None:
    for (_, _, done, loop, _), p in zip(requests, probs, strict=True):
        with contextlib.suppress(RuntimeError):  # that loop has closed
            loop.call_soon_threadsafe(done, p)


def _to_model_input(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float32]:
    if rate != SAMPLE_RATE:
        pcm = np.frombuffer(resample(pcm.tobytes(), rate, SAMPLE_RATE), np.int16)
    out: npt.NDArray[np.float32] = pcm.astype(np.float32) * np.float32(1.0 / 32768.0)
    return out


_POOL: TurnPool | None = None
_POOL_LOCK = threading.Lock()


def default_turn_pool() -> TurnPool:
    """The process-wide :class:`TurnPool`."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = TurnPool()
    return _POOL
