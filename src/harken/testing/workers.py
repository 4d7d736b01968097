"""In-process harken workers for tests and benches: start one from config data, stop it cleanly.

TEST AND BENCH TOOL ONLY.
"""

from __future__ import annotations

import asyncio
from typing import Any

from harken.server import config as config_mod
from harken.server.worker import Worker
from harken.transports.carrier import AgentFactory

__all__ = ["start_worker", "stop_worker"]


async def start_worker(data: dict[str, Any], agent: AgentFactory | None = None) -> Worker:
    """A started worker on free ports; ``data`` is config as a dict (sections of mappings)."""
    merged: dict[str, Any] = {"server": {"port": 0, "media_port": 0}}
    for section, values in data.items():
        merged[section] = {**merged.get(section, {}), **values}
    cfg = config_mod.validate(config_mod._build(config_mod.Config, merged, "config"))
    worker = Worker(cfg, agent=agent)
    await worker.start()
    return worker


async def stop_worker(worker: Worker) -> None:
    """Refuse new calls, end the live ones, and close the servers."""
    worker.manager.draining = True
    for session in list(worker.manager.sessions):
        session.fail("test over", 1001, "test over")
    await asyncio.sleep(0.05)
    await worker.close()
    if worker._media is not None:
        worker._media.close()
