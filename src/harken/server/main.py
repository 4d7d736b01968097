"""``harken serve``: one worker in-process, or a supervisor over N worker processes.

With ``--workers N`` (N > 1) the supervisor starts N processes that bind the same two ports
with SO_REUSEPORT (the kernel spreads connections across them), forwards SIGTERM/SIGINT to them
(each drains its live calls), and exits once all have stopped. Metrics are aggregated across
workers through prometheus_client's multiprocess directory.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import signal
import sys
import tempfile
from types import FrameType

from harken.errors import ConfigError
from harken.server import config as config_mod
from harken.server.config import Config


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    server: dict[str, object] = {}
    for key in ("host", "port", "workers", "loop"):
        value = getattr(args, key, None)
        if value is not None:
            server[key] = value
    media_port = getattr(args, "media_port", None)
    if media_port is not None:
        server["media_port"] = media_port
    max_calls = getattr(args, "max_calls", None)
    if max_calls is not None:
        server["max_calls"] = max_calls
    out: dict[str, dict[str, object]] = {"server": server}
    agent = getattr(args, "agent", None)
    if agent is not None:
        out["agent"] = {"kind": agent}
    return out


def _worker_entry(config: Config, reuse_port: bool) -> None:  # pragma: no cover - subprocess
    from harken.server.worker import run_worker

    run_worker(config, reuse_port)


def supervise(config: Config) -> int:
    n = config.server.workers
    if config.server.port == 0 or config.server.media_port == 0:
        raise ConfigError("several workers need fixed ports (port and media_port not 0)")
    metrics_dir = tempfile.mkdtemp(prefix="harken-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_entry, args=(config, True), name=f"harken-worker-{i}")
        for i in range(n)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.start()
    print(f"harken: supervisor started {n} workers", flush=True)
    try:
        for p in procs:
            p.join()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    print("harken: all workers stopped", flush=True)
    return max((p.exitcode or 0) for p in procs)


def serve(args: argparse.Namespace) -> int:
    try:
        config = config_mod.load(getattr(args, "config", None), _overrides(args))
    except ConfigError as exc:
        print(f"harken: {exc}", file=sys.stderr)
        return 2
    if config.server.workers > 1:
        return supervise(config)
    from harken.server.worker import run_worker

    run_worker(config, reuse_port=False)
    return 0
