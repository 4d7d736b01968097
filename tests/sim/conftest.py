"""A worker running the conversation agent in this process, its call records in a temp dir."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from harken.server import config as config_mod
from harken.server.worker import Worker

MakeWorker = Callable[..., Any]


@pytest.fixture
async def sim_worker(tmp_path: Path) -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    async def make(agent: dict[str, Any]) -> Worker:
        data: dict[str, Any] = {
            "server": {"port": 0, "media_port": 0},
            "agent": {"kind": "conversation", **agent},
            "records": {"sqlite_path": str(tmp_path / "calls.db")},
        }
        cfg = config_mod.validate(config_mod._build(config_mod.Config, data, "config"))
        worker = Worker(cfg)
        await worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.manager.draining = True
        for session in list(worker.manager.sessions):
            session.fail("test over", 1001, "test over")
        await asyncio.sleep(0.05)
        await worker.close()
        if worker._media is not None:
            worker._media.close()
