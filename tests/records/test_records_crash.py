"""Crash safety: a process SIGKILLed mid-call leaves readable records and a readable WAV."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from harken.records.cli import format_call
from harken.records.sqlite import SqliteCallStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

CALL_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from harken.records import CallEvent, CallInfo, CallRecorder, TurnRecord
    from harken.records.sqlite import SqliteCallStore

    async def main():
        rec = CallRecorder(SqliteCallStore(sys.argv[1]))
        await rec.open()
        rec.start(CallInfo("CRASH", "twilio", time.time(), "+15550001", "+15550002", "echo"))
        for i in range(3):
            rec.turn(TurnRecord("CRASH", i, "turn", f"user {i}", f"agent {i}", at=time.time()))
        print("enqueued", flush=True)
        n = 0
        while True:  # the call goes on: events keep coming until the kill
            rec.event(CallEvent("CRASH", time.time(), "tick", {"n": n}))
            n += 1
            await asyncio.sleep(0.002)

    asyncio.run(main())
    """
)

WAV_CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from harken.records.wav import StereoWavWriter

    w = StereoWavWriter(sys.argv[1], 8000)
    start = time.monotonic()
    i = 0
    while True:  # 20 ms chunks at real-time pace; chunk i holds the value i + 1
        v = i % 30000 + 1
        w.write_caller(np.full(160, v, dtype="<i2").tobytes(), i * 0.02)
        w.write_agent(np.full(160, -v, dtype="<i2").tobytes(), i * 0.02)
        i += 1
        if i % 5 == 0:
            print(f"{i * 0.02:.2f}", flush=True)
        delay = start + i * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    """
)


def _spawn(script: str, arg: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, str(arg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


async def test_sqlite_records_survive_sigkill_mid_call(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    proc = _spawn(CALL_CHILD, db)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "enqueued", proc.stderr.read() if proc.stderr else line
        time.sleep(0.1)
    finally:
        _kill(proc)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SqliteCallStore(db, readonly=True)
    await store.open()
    try:
        detail = await store.get_call("CRASH")
    finally:
        await store.close()
    assert detail is not None
    assert detail.info.carrier == "twilio" and detail.info.from_number == "+15550001"
    assert [(t.index, t.user_text, t.assistant_spoken) for t in detail.turns] == [
        (i, f"user {i}", f"agent {i}") for i in range(3)
    ]
    assert detail.end is None  # it never ended
    ticks = [e.data["n"] for e in detail.events]
    assert len(ticks) > 10 and ticks == list(range(len(ticks)))  # a prefix, in order
    assert "no end record" in format_call(detail)


def test_wav_is_readable_after_sigkill_up_to_the_last_second(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    proc = _spawn(WAV_CHILD, path)
    reached = 0.0
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while reached < 2.5 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else "child exited"
            reached = float(line)
    finally:
        _kill(proc)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.getnframes()
        data = np.frombuffer(w.readframes(frames), dtype="<i2").reshape(-1, 2)
    assert len(data) == frames
    # synced every second of wall time: at most ~1 s (plus scheduling slack) is missing
    assert reached - 1.0 - 0.3 <= frames / 8000 <= reached + 0.5
    expected = (np.arange(frames) // 160 % 30000 + 1).astype(np.int16)
    assert np.array_equal(data[:, 0], expected)
    assert np.array_equal(data[:, 1], -expected)
