"""The hot-path face of call records: :class:`CallRecorder` methods only enqueue.

One recorder per process (worker) serves every call. ``start``/``turn``/``event``/``end`` are
plain synchronous methods that append the record to a bounded queue and return at once (no I/O,
no allocation beyond the record; about a microsecond), so the conversation engine and the
transport may call them on the event loop between frames. One drain task takes what is queued (at
most ``max_batch`` records at a time) and awaits ``store.write`` for it; records that arrive
while a batch is being committed make up the next batch, so batches grow with load and a record
waits at most one commit when the store keeps up.

Nothing grows without bound: once ``max_pending`` records are queued (the store has fallen far
behind or is down), new records are dropped and counted (``dropped``) instead of buffered. A
batch the store rejects is retried after ``retry_delays_s`` (0.2, 1, 5 s by default) and then
counted as ``failed``. A dead store therefore costs at most ``max_pending`` records of memory
and never slows a call.

Call the methods from the event loop's thread (they are not thread-safe).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from harken.errors import HarkenError, RecordsError
from harken.records.model import CallEnd, CallEvent, CallInfo, Record, TurnRecord
from harken.records.store import CallStore

__all__ = ["CallRecorder", "RecorderStats"]

log = logging.getLogger("harken.records")

_DROP_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """Counters since the recorder was made: ``accepted`` = ``written`` + ``failed`` + ``pending``
    (once a batch in flight settles); ``dropped`` records were never queued."""

    accepted: int
    written: int
    dropped: int
    failed: int
    pending: int
    batches: int


class CallRecorder:
    """Queue call records for ``store`` without blocking; see the module docstring.

    ``await open()`` opens the store and starts the drain task; ``await close()`` writes what is
    queued (waiting at most ``timeout`` s) and closes the store. Records may be queued before
    ``open``; they are written once it runs.
    """

    def __init__(
        self,
        store: CallStore,
        *,
        max_pending: int = 10_000,
        max_batch: int = 500,
        retry_delays_s: Sequence[float] = (0.2, 1.0, 5.0),
    ) -> None:
        if max_pending < 1 or max_batch < 1:
            raise RecordsError("max_pending and max_batch must be at least 1")
        self.store = store
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.retry_delays_s = tuple(retry_delays_s)
        self._pending: collections.deque[Record] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._accepted = 0
        self._written = 0
        self._dropped = 0
        self._failed = 0
        self._batches = 0
        self._last_drop_log = -_DROP_LOG_EVERY_S

    # --- the hot path ---------------------------------------------------------------------

    def start(self, info: CallInfo) -> bool:
        """Queue a call's start; ``False`` if it was dropped (queue full or recorder closed)."""
        return self._put(info)

    def turn(self, rec: TurnRecord) -> bool:
        """Queue one reply; writing the same ``(call_id, index)`` again replaces it."""
        return self._put(rec)

    def event(self, ev: CallEvent) -> bool:
        """Queue one call event."""
        return self._put(ev)

    def end(self, end: CallEnd) -> bool:
        """Queue a call's end."""
        return self._put(end)

    def _put(self, rec: Record) -> bool:
        if self._closing or len(self._pending) >= self.max_pending:
            self._dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
                self._last_drop_log = now
                log.warning(
                    "call records: dropping records (%d dropped so far, %d queued%s)",
                    self._dropped,
                    len(self._pending),
                    ", recorder closed" if self._closing else "",
                )
            return False
        self._pending.append(rec)
        self._accepted += 1
        if not self._wake.is_set():
            self._wake.set()
        return True

    # --- counters -------------------------------------------------------------------------

    @property
    def stats(self) -> RecorderStats:
        return RecorderStats(
            accepted=self._accepted,
            written=self._written,
            dropped=self._dropped,
            failed=self._failed,
            pending=len(self._pending),
            batches=self._batches,
        )

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._task is not None:
            return
        await self.store.open()
        self._task = asyncio.get_running_loop().create_task(
            self._drain(), name="harken-records-drain"
        )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is written (or failed); ``False`` on timeout."""
        if self._task is None:
            raise RecordsError("the call recorder is not open")
        target = self._accepted
        if self._settled >= target:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting records, write what is queued (at most ``timeout`` s), close the store.

        Records still queued after ``timeout`` are counted as failed.
        """
        if self._closing:
            return
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._failed += len(self._pending)
            self._pending.clear()
            self._settle()
            await self.store.close()

    # --- the drain task -------------------------------------------------------------------

    @property
    def _settled(self) -> int:
        return self._written + self._failed

    async def _drain(self) -> None:
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            n = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            try:
                ok = await self._write(batch)
            except asyncio.CancelledError:  # close() gave up waiting
                self._failed += n
                raise
            if ok:
                self._written += n
            else:
                self._failed += n
            self._batches += 1
            self._settle()

    async def _write(self, batch: list[Record]) -> bool:
        delays = (0.0, *self.retry_delays_s)
        for attempt, delay in enumerate(delays, 1):
            if delay:
                if self._closing:
                    return False
                await asyncio.sleep(delay)
            try:
                await self.store.write(batch)
                return True
            except (HarkenError, OSError) as exc:
                log.warning(
                    "call records: writing %d records failed (attempt %d of %d): %s",
                    len(batch),
                    attempt,
                    len(delays),
                    exc,
                )
        return False

    def _settle(self) -> None:
        settled = self._settled
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for target, fut in self._waiters:
            if settled >= target or self._task is None:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._waiters = keep
