"""SQLite specifics: WAL, one writer thread, read-only opening, schema versions."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harken.errors import RecordsError
from harken.records import CallInfo, CallRecorder, TurnRecord
from harken.records.sqlite import SqliteCallStore

T0 = 1_700_000_000.0


async def test_wal_and_one_writer_thread_for_all_stores(tmp_path: Path) -> None:
    a, b = SqliteCallStore(tmp_path / "a.db"), SqliteCallStore(tmp_path / "sub" / "b.db")
    await a.open()
    await b.open()
    try:
        await a.call_started(CallInfo("A", "twilio", T0))
        await b.call_started(CallInfo("B", "twilio", T0))
        writers = [t for t in threading.enumerate() if t.name == "harken-records-sqlite"]
        assert len(writers) == 1
        with sqlite3.connect(tmp_path / "a.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT version FROM harken_schema").fetchall() == [(1,)]
        assert [c.call_id for c in await b.list_calls()] == ["B"]
    finally:
        await a.close()
        await b.close()


async def test_committed_records_are_visible_to_another_connection(tmp_path: Path) -> None:
    """A write returns once committed: a separate reader sees it at once, without a close."""
    store = SqliteCallStore(tmp_path / "c.db")
    await store.open()
    try:
        await store.call_started(CallInfo("X", "twilio", T0))
        await store.turn(TurnRecord("X", 0, "greeting", "", "hi", at=T0))
        with sqlite3.connect(tmp_path / "c.db") as conn:
            assert conn.execute("SELECT COUNT(*) FROM harken_turns").fetchone() == (1,)
    finally:
        await store.close()


async def test_reads_do_not_wait_for_a_busy_writer(tmp_path: Path) -> None:
    store = SqliteCallStore(tmp_path / "d.db")
    recorder = CallRecorder(store, max_pending=100_000)
    await recorder.open()
    for i in range(20_000):
        recorder.turn(TurnRecord(f"C{i // 100}", i % 100, "turn", "u", "a", at=T0 + i))
    calls = await asyncio.wait_for(store.list_calls(5), 5)  # while the writer is busy
    assert len(calls) <= 5
    assert await recorder.flush(timeout=60)
    assert recorder.stats.written == 20_000
    assert len(await store.list_calls(1000)) == 200
    await recorder.close()


async def test_readonly_store(tmp_path: Path) -> None:
    with pytest.raises(RecordsError, match="no call records"):
        await SqliteCallStore(tmp_path / "missing.db", readonly=True).open()
    (tmp_path / "junk.db").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(RecordsError, match="not a harken call-record database"):
        await SqliteCallStore(tmp_path / "junk.db", readonly=True).open()

    writer = SqliteCallStore(tmp_path / "e.db")
    await writer.open()
    await writer.call_started(CallInfo("R", "twilio", T0))
    reader = SqliteCallStore(tmp_path / "e.db", readonly=True)
    await reader.open()
    try:
        assert [c.call_id for c in await reader.list_calls()] == ["R"]
        with pytest.raises(RecordsError, match="read-only"):
            await reader.call_started(CallInfo("S", "twilio", T0))
    finally:
        await reader.close()
        await writer.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = SqliteCallStore(tmp_path / "f.db")
    await store.open()
    await store.close()
    with sqlite3.connect(tmp_path / "f.db") as conn:
        conn.execute("UPDATE harken_schema SET version = 99")
    with pytest.raises(RecordsError, match="newer"):
        await SqliteCallStore(tmp_path / "f.db").open()


async def test_a_bad_record_does_not_sink_its_batch(tmp_path: Path) -> None:
    store = SqliteCallStore(tmp_path / "g.db")
    await store.open()
    try:
        bad = TurnRecord("B", 0, "turn", user_text=object(), at=T0)  # type: ignore[arg-type]
        results = await asyncio.gather(
            store.turn(TurnRecord("B", 1, "turn", "fine", at=T0)),
            store.turn(bad),
            store.turn(TurnRecord("B", 2, "turn", "also fine", at=T0)),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], RecordsError)
        detail = await store.get_call("B")
        assert detail is not None and [t.index for t in detail.turns] == [1, 2]
    finally:
        await store.close()


WORKER = """
import asyncio, sys
from harken.records import CallInfo, CallRecorder, TurnRecord
from harken.records.sqlite import SqliteCallStore

async def main():
    rec = CallRecorder(SqliteCallStore(sys.argv[1]))
    await rec.open()
    for c in range(20):
        call = f"{sys.argv[2]}-{c}"
        rec.start(CallInfo(call, "twilio", 1.0 + c))
        for i in range(25):
            rec.turn(TurnRecord(call, i, "turn", "u", "a", at=2.0))
            await asyncio.sleep(0)
    await rec.close(timeout=30)
    assert rec.stats.written == 20 * 26, rec.stats

asyncio.run(main())
"""


def test_worker_processes_share_one_file(tmp_path: Path) -> None:
    """Each worker process has its own writer thread; SQLite's lock serialises them."""
    db = tmp_path / "shared.db"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(db), f"w{n}"], stderr=subprocess.PIPE)
        for n in range(3)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM harken_calls").fetchone() == (60,)
        assert conn.execute("SELECT COUNT(*) FROM harken_turns").fetchone() == (1500,)
