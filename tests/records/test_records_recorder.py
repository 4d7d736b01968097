"""CallRecorder: non-blocking enqueue, bounded memory (drop and count), retries, batching."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from harken.errors import RecordsError
from harken.records import CallDetail, CallEvent, CallRecorder, CallSummary, Record, TurnRecord


class FakeStore:
    """A store whose writes take ``delay`` s and fail while ``failing`` is set."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.failing = 0  # how many writes still fail
        self.batches: list[list[Record]] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    async def write(self, records: Sequence[Record]) -> None:
        await asyncio.sleep(self.delay)
        if self.failing:
            self.failing -= 1
            raise RecordsError("database is down")
        self.batches.append(list(records))

    async def call_started(self, info: object) -> None:  # pragma: no cover - unused
        raise AssertionError

    turn = event = call_ended = call_started

    async def list_calls(self, limit: int = 50, offset: int = 0) -> list[CallSummary]:
        return []  # pragma: no cover

    async def get_call(self, call_id: str) -> CallDetail | None:
        return None  # pragma: no cover


def _turn(i: int) -> TurnRecord:
    return TurnRecord("C", i, "turn", "u", "a", at=1.0)


async def test_enqueue_is_cheap_and_batches_grow_with_load() -> None:
    store = FakeStore(delay=0.02)
    recorder = CallRecorder(store, max_batch=1000)  # type: ignore[arg-type]
    await recorder.open()
    records = [_turn(i) for i in range(5000)]
    t = time.perf_counter()
    for rec in records:
        assert recorder.turn(rec)
    per_record = (time.perf_counter() - t) / len(records)
    assert per_record < 20e-6  # a microsecond or so; generous for slow CI
    assert await recorder.flush(timeout=5)
    assert recorder.stats.written == 5000
    assert len(store.batches) <= 6  # not 5000 round trips
    assert [r for b in store.batches for r in b] == records  # order kept
    await recorder.close()
    assert store.closed


async def test_a_full_queue_drops_and_counts_instead_of_growing() -> None:
    store = FakeStore(delay=0.2)
    recorder = CallRecorder(store, max_pending=100, max_batch=10)  # type: ignore[arg-type]
    await recorder.open()
    accepted = sum(recorder.turn(_turn(i)) for i in range(1000))
    assert accepted == 100
    stats = recorder.stats
    assert (stats.dropped, stats.pending) == (900, 100)
    await recorder.close(timeout=0.05)  # gives up waiting: what is left counts as failed
    stats = recorder.stats
    assert stats.pending == 0
    assert stats.written + stats.failed == 100


async def test_a_failing_store_is_retried_then_counted() -> None:
    store = FakeStore()
    store.failing = 2
    recorder = CallRecorder(store, retry_delays_s=(0.01, 0.01))  # type: ignore[arg-type]
    await recorder.open()
    recorder.event(CallEvent("C", 1.0, "barge_in"))
    assert await recorder.flush(timeout=2)
    assert (recorder.stats.written, recorder.stats.failed) == (1, 0)  # third attempt worked

    store.failing = 10
    recorder.event(CallEvent("C", 2.0, "error"))
    assert await recorder.flush(timeout=2)
    assert (recorder.stats.written, recorder.stats.failed) == (1, 1)
    recorder.event(CallEvent("C", 3.0, "hangup"))  # the store is down: the call goes on
    await recorder.close(timeout=1)
    assert recorder.stats.failed == 2


async def test_flush_times_out_on_a_stuck_store() -> None:
    recorder = CallRecorder(FakeStore(delay=5))  # type: ignore[arg-type]
    await recorder.open()
    recorder.turn(_turn(0))
    assert not await recorder.flush(timeout=0.05)
    await recorder.close(timeout=0.05)
    assert recorder.stats.failed == 1
