"""Killing a worker mid-call leaves a readable call record up to that moment."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from harken.records import open_store
from harken.testing.caller import agent_quiet, caller_voice
from harken.testing.twilio import TwilioEmulator

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigkill_mid_call_leaves_the_turns_so_far(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    config = tmp_path / "agent.yaml"
    config.write_text(
        "agent:\n  tts: {engine: espeak}\n  idle: {after_s: 0}\n"
        f"records:\n  sqlite_path: {db}\n"
    )
    http, media = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "harken.cli", "serve", "--config", str(config),
         "--port", str(http), "--media-port", str(media)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    ready = threading.Event()
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "worker ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert await asyncio.to_thread(ready.wait, 120), "".join(lines)
        question = caller_voice("Where are you located?")
        em = TwilioEmulator(f"ws://127.0.0.1:{media}/stream/twilio", background_silence=True)
        await em.connect()
        await agent_quiet(em)
        await em.play(question)
        await agent_quiet(em)
        await asyncio.sleep(0.2)  # the writer thread commits within a few ms of each record
        proc.send_signal(signal.SIGKILL)  # mid-call: the caller is still on the line
        proc.wait(10)
        await em.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

    store = open_store(sqlite_path=str(db))
    await store.open()
    try:
        detail = await store.get_call(em.call_sid)
    finally:
        await store.close()
    assert detail is not None, "".join(lines)
    assert [t.kind for t in detail.turns] == ["greeting", "turn"]
    assert detail.turns[1].assistant_spoken
    assert detail.end is None  # the call never ended: the worker died under it
