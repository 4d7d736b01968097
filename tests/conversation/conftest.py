"""End-to-end fixture: a worker running the conversation agent (in this process)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from harken.server.worker import Worker
from harken.testing.workers import start_worker, stop_worker

MakeWorker = Callable[..., Any]


@pytest.fixture
async def conversation_worker() -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    async def make(agent: dict[str, Any], records: dict[str, Any] | None = None) -> Worker:
        data = {
            "agent": {"kind": "conversation", **agent},
            "records": records or {"enabled": False},
        }
        worker = await start_worker(data)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await stop_worker(worker)
