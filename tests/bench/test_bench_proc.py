"""wait_healthy (the one ready-wait the bench and the caller simulator share) and the
bench's instruction counter."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from harken.bench._proc import InstructionCounter, wait_healthy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ready_when_the_url_answers_200() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}/", proc, 20.0, poll_s=0.05) is None
    finally:
        proc.kill()
        proc.wait()


def test_a_process_that_exits_first_is_reported() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    failure = wait_healthy(f"http://127.0.0.1:{_free_port()}/healthz", proc, 5.0)
    assert failure == "exited with code 3 before it was ready"


def test_time_runs_out() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        url = f"http://127.0.0.1:{_free_port()}/healthz"
        assert wait_healthy(url, proc, 0.3, poll_s=0.05) == f"not ready after 0.3 s ({url})"
    finally:
        proc.kill()
        proc.wait()


def test_instruction_counter_counts_the_window_only() -> None:
    counter = InstructionCounter(os.getpid(), tree=False)
    sum(range(200_000))  # before the window: not counted
    counter.start()
    user, kernel = counter.stop()
    if user is None:
        pytest.skip("no hardware counters here (no PMU or no permission)")
    assert kernel is not None
    busy = InstructionCounter(os.getpid(), tree=False)
    busy.start()
    sum(range(200_000))
    busy_user, _ = busy.stop()
    assert busy_user is not None
    assert user < 1_000_000 < busy_user
