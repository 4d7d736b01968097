"""Call records in PostgreSQL, through psycopg 3's asyncio API (``pip install 'harken[postgres]'``).

Same tables and API as the SQLite store (:mod:`harken.records.store`); dicts are ``JSONB``. The
store holds two connections in autocommit mode: one for writes, one for reads, each used by one
coroutine at a time (an ``asyncio.Lock``), so a long read never delays a write.

A write batch is one transaction; statements are grouped per kind and sent with ``executemany``
(pipelined by psycopg), which keeps a batch to a few round trips. Grouping keeps the order within
each kind (turns by write order, events by write order) and every statement is an upsert whose
result does not depend on the order of different kinds, so the outcome equals writing the
records one by one. If the write connection has dropped, a batch reconnects once and retries;
after that the error is a :class:`~harken.errors.RecordsError` (the recorder retries later).

Schema creation runs under a transaction-scoped advisory lock, so workers starting together do
not race on ``CREATE TABLE IF NOT EXISTS``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresCallStore"]

_SQL = Sql("postgres")
_LOCK_ID = 0x4841524B454E  # "HARKEN": the advisory lock held while creating the schema


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise RecordsError(
            "PostgreSQL call records need psycopg 3: pip install 'harken[postgres]'"
        ) from exc
    return psycopg


class PostgresCallStore(RecordWriter):
    """A :class:`~harken.records.store.CallStore` in the PostgreSQL database at ``dsn``."""

    def __init__(self, dsn: str, *, connect_timeout_s: float = 10.0) -> None:
        self.dsn = dsn
        self.connect_timeout_s = connect_timeout_s
        self._writer: psycopg.AsyncConnection[Any] | None = None
        self._reader: psycopg.AsyncConnection[Any] | None = None
        self._write_lock = asyncio.Lock()
        self._read_lock = asyncio.Lock()

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            return
        pg = _psycopg()
        try:
            writer = await self._connect()
            try:
                async with writer.transaction():
                    await writer.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
                    for statement in _SQL.ddl:
                        await writer.execute(statement)
                    cur = await writer.execute(_SQL.get_version)
                    row = await cur.fetchone()
                    if row is None:
                        await writer.execute(_SQL.set_version, (SCHEMA_VERSION,))
                    elif int(row[0]) > SCHEMA_VERSION:
                        raise RecordsError(
                            f"call records schema version {row[0]} is newer than this "
                            f"harken's ({SCHEMA_VERSION})"
                        )
                self._reader = await self._connect()
            except BaseException:
                await writer.close()
                raise
        except pg.Error as exc:
            raise RecordsError(f"PostgreSQL call store: open failed: {exc}") from exc
        self._writer = writer

    async def close(self) -> None:
        async with self._write_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                await writer.close()
        async with self._read_lock:
            reader, self._reader = self._reader, None
            if reader is not None:
                await reader.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        pg = _psycopg()
        conn: psycopg.AsyncConnection[Any] = await pg.AsyncConnection.connect(
            self.dsn, autocommit=True, connect_timeout=max(1, round(self.connect_timeout_s))
        )
        return conn

    # --- writes ---------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> None:
        pg = _psycopg()
        groups: dict[str, list[tuple[Any, ...]]] = {}
        for rec in records:
            for statement, params in _SQL.statements(rec):
                groups.setdefault(statement, []).append(params)
        async with self._write_lock:
            if self._writer is None:
                raise RecordsError("PostgreSQL call store is not open")
            for attempt in (1, 2):
                try:
                    await self._write_groups(self._writer, groups)
                    return
                except pg.OperationalError as exc:
                    if attempt == 2 or not self._writer.broken:
                        raise RecordsError(f"PostgreSQL call store: write failed: {exc}") from exc
                    await self._writer.close()
                    try:
                        self._writer = await self._connect()
                    except pg.Error as again:
                        raise RecordsError(
                            f"PostgreSQL call store: reconnect failed: {again}"
                        ) from again
                except pg.Error as exc:
                    raise RecordsError(f"PostgreSQL call store: write failed: {exc}") from exc

    @staticmethod
    async def _write_groups(
        conn: psycopg.AsyncConnection[Any], groups: dict[str, list[tuple[Any, ...]]]
    ) -> None:
        async with conn.transaction(), conn.cursor() as cur:
            for statement, params in groups.items():
                await cur.executemany(statement, params)

    # --- reads ----------------------------------------------------------------------------

    async def list_calls(self, limit: int = 50, offset: int = 0) -> list[CallSummary]:
        pg = _psycopg()
        async with self._read_lock:
            conn = await self._reader_conn()
            try:
                cur = await conn.execute(_SQL.list_calls, (limit, offset))
                rows = await cur.fetchall()
            except pg.Error as exc:
                raise RecordsError(f"PostgreSQL call store: {exc}") from exc
        return [summary_from_row(r) for r in rows]

    async def get_call(self, call_id: str) -> CallDetail | None:
        pg = _psycopg()
        async with self._read_lock:
            conn = await self._reader_conn()
            try:
                async with conn.transaction():
                    cur = await conn.execute(_SQL.get_call, (call_id,))
                    call = await cur.fetchone()
                    if call is None:
                        return None
                    cur = await conn.execute(_SQL.get_turns, (call_id,))
                    turns = await cur.fetchall()
                    cur = await conn.execute(_SQL.get_events, (call_id,))
                    events = await cur.fetchall()
            except pg.Error as exc:
                raise RecordsError(f"PostgreSQL call store: {exc}") from exc
        return detail_from_rows(call, turns, events)

    async def _reader_conn(self) -> psycopg.AsyncConnection[Any]:
        """The read connection, reconnected if it has dropped (call with the read lock held)."""
        if self._reader is None:
            raise RecordsError("PostgreSQL call store is not open")
        if self._reader.broken:
            pg = _psycopg()
            await self._reader.close()
            try:
                self._reader = await self._connect()
            except pg.Error as exc:
                raise RecordsError(f"PostgreSQL call store: reconnect failed: {exc}") from exc
        return self._reader
