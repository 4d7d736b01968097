"""Call records in a SQLite file, written by one background thread per process.

Writes never touch the event loop: :meth:`SqliteCallStore.write` puts the records on the queue of
the process's single writer thread (:class:`_Writer`, started on first use, restarted in a forked
child) and awaits a future that the thread resolves once they are committed. The thread takes
whatever is queued when it wakes (up to :data:`_MAX_JOBS` jobs; it does not wait for more) and
commits a store's consecutive writes in one transaction, so records are batched under load and
committed within a millisecond or so when idle.

Durability: the file is in WAL mode with ``synchronous=NORMAL``. A commit is a write into the
WAL without ``fsync``: it survives the process being killed (``SIGKILL``, OOM, a crash), because
the data is in the OS already, but the last commits may be lost if the *machine* loses power.
What is lost on a kill is what had not been handed to the writer thread yet (the recorder's
queue) and the batch in flight: at most the last few milliseconds.

Several worker processes may share one file: each has its own writer thread and SQLite's lock
serialises their transactions (``busy_timeout`` 5 s). Reads (:meth:`list_calls`,
:meth:`get_call`) use a separate connection in a worker thread (``asyncio.to_thread``); in WAL
mode they never wait for the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from harken.errors import RecordsError
from harken.records.model import (
    CallDetail,
    CallSummary,
    Record,
)
from harken.records.store import (
    SCHEMA_VERSION,
    RecordWriter,
    Sql,
    detail_from_rows,
    summary_from_row,
)

__all__ = ["SqliteCallStore"]

T = TypeVar("T")

_SQL = Sql("sqlite")
_MAX_JOBS = 256  # jobs taken per wake-up
_BUSY_TIMEOUT_MS = 5000

Done = Callable[[BaseException | None], None]


class _Job:
    __slots__ = ("done", "key", "op", "path", "records")

    def __init__(
        self, op: str, key: int, done: Done, path: str = "", records: Sequence[Record] = ()
    ) -> None:
        self.op = op  # open | write | close
        self.key = key
        self.done = done
        self.path = path
        self.records = records


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
    )
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SQL.ddl:
            conn.execute(statement)
        row = conn.execute(_SQL.get_version).fetchone()
        if row is None:
            conn.execute(_SQL.set_version, (SCHEMA_VERSION,))
        elif int(row[0]) > SCHEMA_VERSION:
            raise RecordsError(
                f"call records schema version {row[0]} is newer than this harken's "
                f"({SCHEMA_VERSION})"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class _Writer:
    """The process's one SQLite writer thread; connections are keyed by store."""

    _lock = threading.Lock()
    _instance: _Writer | None = None

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._conns: dict[int, sqlite3.Connection] = {}
        self._thread = threading.Thread(target=self._run, name="harken-records-sqlite", daemon=True)
        self._thread.start()

    @classmethod
    def get(cls) -> _Writer:
        with cls._lock:
            inst = cls._instance
            if inst is None or inst.pid != os.getpid() or not inst._thread.is_alive():
                inst = cls._instance = cls()
            return inst

    def submit(self, job: _Job) -> None:
        self._queue.put(job)

    # --- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < _MAX_JOBS:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            i = 0
            while i < len(jobs):
                job = jobs[i]
                j = i + 1
                if job.op == "write":
                    while j < len(jobs) and jobs[j].op == "write" and jobs[j].key == job.key:
                        j += 1
                    self._write(jobs[i:j])
                else:
                    self._control(job)
                i = j

    def _control(self, job: _Job) -> None:
        try:
            if job.op == "open":
                conn = _connect(job.path)
                try:
                    _create_schema(conn)
                except BaseException:
                    conn.close()
                    raise
                self._conns[job.key] = conn
            else:
                conn = self._conns.pop(job.key)
                conn.close()
        except Exception as exc:  # noqa: BLE001 - handed to the waiting coroutine
            job.done(exc)
        else:
            job.done(None)

    def _write(self, jobs: list[_Job]) -> None:
        conn = self._conns.get(jobs[0].key)
        if conn is None:
            for job in jobs:
                job.done(RecordsError("SQLite call store is not open"))
            return
        try:
            self._commit(conn, jobs)
        except Exception as exc:  # noqa: BLE001 - retried one by one, then reported
            if len(jobs) == 1:
                jobs[0].done(exc)
                return
            for job in jobs:  # one bad record must not sink the others
                try:
                    self._commit(conn, [job])
                except Exception as one:  # noqa: BLE001
                    job.done(one)
                else:
                    job.done(None)
            return
        for job in jobs:
            job.done(None)

    @staticmethod
    def _commit(conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for job in jobs:
                for rec in job.records:
                    for statement, params in _SQL.statements(rec):
                        conn.execute(statement, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


_keys = itertools.count(1)


class SqliteCallStore(RecordWriter):
    """A :class:`~harken.records.store.CallStore` in the SQLite file at ``path``.

    With ``readonly=True`` (the CLI) it opens an existing file for reading only: no writer, no
    schema changes, and a missing or foreign file is a :class:`RecordsError`.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = str(path)
        self.readonly = readonly
        self._key = next(_keys)
        self._writer: _Writer | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self.readonly:
            if not Path(self.path).is_file():
                raise RecordsError(f"no call records at {self.path}")
            await self._read(self._check_schema)
            return
        if self._writer is not None:
            return
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        writer = _Writer.get()
        await self._submit(writer, "open")
        self._writer = writer

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await self._submit(writer, "close")
        with self._read_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # --- writes ---------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        if self._writer is None:
            raise RecordsError(
                f"SQLite call store {self.path} is "
                + ("read-only" if self.readonly else "not open")
            )
        await self._submit(self._writer, "write", list(records))

    async def _submit(self, writer: _Writer, op: str, records: Sequence[Record] = ()) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        def resolve(exc: BaseException | None) -> None:
            if not fut.done():
                if exc is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)

        def done(exc: BaseException | None) -> None:  # on the writer thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(resolve, exc)

        writer.submit(_Job(op, self._key, done, self.path, records))
        try:
            await fut
        except sqlite3.Error as exc:
            raise RecordsError(f"SQLite call store {self.path}: {op} failed: {exc}") from exc

    # --- reads ----------------------------------------------------------------------------

    async def list_calls(self, limit: int = 50, offset: int = 0) -> list[CallSummary]:
        def query(conn: sqlite3.Connection) -> list[CallSummary]:
            rows = conn.execute(_SQL.list_calls, (limit, offset)).fetchall()
            return [summary_from_row(r) for r in rows]

        return await self._read(query)

    async def get_call(self, call_id: str) -> CallDetail | None:
        def query(conn: sqlite3.Connection) -> CallDetail | None:
            conn.execute("BEGIN")  # one snapshot for the three queries
            try:
                call = conn.execute(_SQL.get_call, (call_id,)).fetchone()
                if call is None:
                    return None
                turns = conn.execute(_SQL.get_turns, (call_id,)).fetchall()
                events = conn.execute(_SQL.get_events, (call_id,)).fetchall()
            finally:
                conn.execute("COMMIT")
            return detail_from_rows(call, turns, events)

        return await self._read(query)

    @staticmethod
    def _check_schema(conn: sqlite3.Connection) -> None:
        try:
            row = conn.execute(_SQL.get_version).fetchone()
        except sqlite3.DatabaseError as exc:
            raise RecordsError(f"not a harken call-record database: {exc}") from exc
        if row is None or int(row[0]) > SCHEMA_VERSION:
            raise RecordsError(f"unsupported call-record schema version: {row}")

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with self._read_lock:
                if self._reader is None:
                    self._reader = _connect(self.path)
                try:
                    return fn(self._reader)
                except sqlite3.Error as exc:
                    raise RecordsError(f"SQLite call store {self.path}: {exc}") from exc

        return await asyncio.to_thread(run)
