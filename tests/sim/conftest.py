"""A worker running the conversation agent in this process, its call records in a temp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harken.server.worker import Worker
from harken.testing.workers import start_worker, stop_worker

MakeWorker = Callable[..., Any]


@pytest.fixture
async def sim_worker(tmp_path: Path) -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    async def make(agent: dict[str, Any]) -> Worker:
        data = {
            "agent": {"kind": "conversation", **agent},
            "records": {"sqlite_path": str(tmp_path / "calls.db")},
        }
        worker = await start_worker(data)
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await stop_worker(worker)
