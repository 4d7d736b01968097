"""Fixtures: an in-process worker on free ports, and a server subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from harken.server.worker import Worker
from harken.testing.workers import start_worker, stop_worker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def make_worker() -> AsyncIterator[object]:
    workers: list[Worker] = []

    async def make(
        overrides: dict[str, dict[str, object]] | None = None, agent: object = None
    ) -> Worker:
        data: dict[str, dict[str, object]] = {"agent": {"kind": "echo"}}
        for section, values in (overrides or {}).items():
            data.setdefault(section, {}).update(values)
        worker = await start_worker(data, agent)  # type: ignore[arg-type]
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        await stop_worker(worker)


class ServerProcess:
    def __init__(self, proc: subprocess.Popen[str], http: int, media: int) -> None:
        self.proc = proc
        self.http = http
        self.media = media
        self.lines: list[str] = []


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            return int(r.status) == 200
    except OSError:
        return False


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server_process() -> Iterator[object]:
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str, wait_for: int = 1) -> ServerProcess:
        http, media = free_port(), free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "harken.cli",
                "serve",
                "--agent",
                "echo",
                "--port",
                str(http),
                "--media-port",
                str(media),
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=ROOT,
        )
        procs.append(proc)
        server = ServerProcess(proc, http, media)
        ready = threading.Semaphore(0)

        def pump() -> None:  # read the server's output off the test's thread, never blocking it
            assert proc.stdout is not None
            for line in proc.stdout:
                server.lines.append(line)
                if "worker ready" in line:
                    ready.release()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + 60
        for _ in range(wait_for):
            if not ready.acquire(timeout=max(0.0, deadline - time.monotonic())):
                if proc.poll() is not None:
                    raise RuntimeError("server exited:\n" + "".join(server.lines))
                # Output lost or late: the ports answering is what the tests need.
                if _answers(http) and _answers(media):
                    break
                raise RuntimeError("server not ready in 60 s:\n" + "".join(server.lines))
        return server

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


@pytest.fixture
async def local_http() -> AsyncIterator[object]:
    """Start a local aiohttp app standing in for a carrier's REST API; yields its base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in runners:
        await runner.cleanup()
