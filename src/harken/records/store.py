"""The call-record store protocol, the schema both stores share, and :func:`open_store`.

A store keeps calls in four tables (prefixed ``harken_`` so they can live in a shared database):

``harken_schema``
    one row: the schema version (:data:`SCHEMA_VERSION`). Opening a store creates the tables if
    they are missing (idempotent) and refuses a database written by a newer harken.
``harken_calls``
    one row per call: the :class:`~harken.records.model.CallInfo` columns and, once the call
    ended, ``ended_at``, ``outcome``, ``duration_s``.
``harken_turns``
    one row per reply, keyed ``(call_id, idx)``; ``timings`` and ``tools`` are JSON.
``harken_events``
    one row per event with an increasing ``id`` (the write order breaks ties in ``at``).

Every write is an upsert, so the records of a call may be written again (a turn whose
``assistant_heard`` became known later replaces the earlier row) and a call whose start record
was lost (dropped under load) still appears: a turn, event or end creates a placeholder call row
(empty carrier, ``started_at`` from the record) that a later start record fills in. Dicts are
stored as JSON text in SQLite and as ``JSONB`` in PostgreSQL.

The store API is asynchronous and never blocks the event loop. A write returns once its records
are committed. The hot path does not call stores directly: it goes through
:class:`~harken.records.recorder.CallRecorder`, whose methods only enqueue.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from harken.records.model import (
    CallDetail,
    CallEnd,
    CallEvent,
    CallInfo,
    CallSummary,
    Record,
    TurnRecord,
)

if TYPE_CHECKING:
    from harken.records.postgres import PostgresCallStore
    from harken.records.sqlite import SqliteCallStore

__all__ = [
    "SCHEMA_VERSION",
    "CallStore",
    "Dialect",
    "RecordWriter",
    "Sql",
    "open_store",
]

SCHEMA_VERSION = 1

Dialect = Literal["sqlite", "postgres"]


class CallStore(Protocol):
    """Where call records go. Each write method returns once its records are committed."""

    async def open(self) -> None:
        """Connect and create the schema if it is missing (idempotent)."""

    async def call_started(self, info: CallInfo) -> None: ...

    async def turn(self, rec: TurnRecord) -> None: ...

    async def event(self, ev: CallEvent) -> None: ...

    async def call_ended(self, end: CallEnd) -> None: ...

    async def write(self, records: Sequence[Record]) -> None:
        """Commit ``records`` in order, in one transaction."""

    async def list_calls(self, limit: int = 50, offset: int = 0) -> list[CallSummary]:
        """The most recently started calls first."""
        ...

    async def get_call(self, call_id: str) -> CallDetail | None: ...

    async def close(self) -> None:
        """Commit what was written and disconnect."""


class RecordWriter:
    """The one-record write methods of :class:`CallStore`, through ``write`` (both stores)."""

    __slots__ = ()

    async def write(self, records: Sequence[Record]) -> None:
        raise NotImplementedError

    async def call_started(self, info: CallInfo) -> None:
        await self.write([info])

    async def turn(self, rec: TurnRecord) -> None:
        await self.write([rec])

    async def event(self, ev: CallEvent) -> None:
        await self.write([ev])

    async def call_ended(self, end: CallEnd) -> None:
        await self.write([end])


def open_store(
    *, sqlite_path: str = "harken-calls.db", postgres_dsn: str = ""
) -> SqliteCallStore | PostgresCallStore:
    """The configured store, not yet opened: PostgreSQL when a DSN is given, else SQLite."""
    if postgres_dsn:
        from harken.records.postgres import PostgresCallStore

        return PostgresCallStore(postgres_dsn)
    from harken.records.sqlite import SqliteCallStore

    return SqliteCallStore(sqlite_path)


# --- the shared schema and statements -------------------------------------------------------


def dumps(value: Any) -> str:
    """JSON text for a dict/list column (non-JSON values are stringified, never rejected)."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(value: Any) -> Any:
    # SQLite hands back text; psycopg has already decoded JSONB
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


_DDL = """
CREATE TABLE IF NOT EXISTS harken_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS harken_calls (
    call_id TEXT PRIMARY KEY,
    carrier TEXT NOT NULL DEFAULT '',
    started_at {real} NOT NULL,
    from_number TEXT NOT NULL DEFAULT '',
    to_number TEXT NOT NULL DEFAULT '',
    agent TEXT NOT NULL DEFAULT '',
    metadata {json} NOT NULL,
    ended_at {real},
    outcome TEXT,
    duration_s {real}
);
CREATE INDEX IF NOT EXISTS harken_calls_started ON harken_calls (started_at);
CREATE TABLE IF NOT EXISTS harken_turns (
    call_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    user_text TEXT NOT NULL,
    assistant_spoken TEXT NOT NULL,
    assistant_heard TEXT,
    interrupted {bool} NOT NULL,
    timings {json} NOT NULL,
    tools {json} NOT NULL,
    at {real} NOT NULL,
    PRIMARY KEY (call_id, idx)
);
CREATE TABLE IF NOT EXISTS harken_events (
    id {serial},
    call_id TEXT NOT NULL,
    at {real} NOT NULL,
    kind TEXT NOT NULL,
    data {json} NOT NULL
);
CREATE INDEX IF NOT EXISTS harken_events_call ON harken_events (call_id, at, id)
"""

_TYPES: dict[str, dict[str, str]] = {
    "sqlite": {
        "real": "REAL",
        "json": "TEXT",
        "bool": "INTEGER",
        "serial": "INTEGER PRIMARY KEY",
    },
    "postgres": {
        "real": "DOUBLE PRECISION",
        "json": "JSONB",
        "bool": "BOOLEAN",
        "serial": "BIGSERIAL PRIMARY KEY",
    },
}

_CALL_COLS = "call_id, carrier, started_at, from_number, to_number, agent, metadata"
_END_COLS = "ended_at, outcome, duration_s"
_TURN_COLS = (
    "call_id, idx, kind, user_text, assistant_spoken, assistant_heard, interrupted, timings, "
    "tools, at"
)
_EVENT_COLS = "call_id, at, kind, data"


class Sql:
    """The statements of one dialect (``{p}`` is a parameter, ``{j}`` a JSON parameter)."""

    def __init__(self, dialect: Dialect) -> None:
        p = "?" if dialect == "sqlite" else "%s"
        j = "?" if dialect == "sqlite" else "%s::jsonb"
        self.dialect = dialect
        self.ddl = [s.strip() for s in _DDL.format(**_TYPES[dialect]).split(";") if s.strip()]
        self.get_version = "SELECT version FROM harken_schema"
        self.set_version = f"INSERT INTO harken_schema (version) VALUES ({p})"
        self.call_start = (
            f"INSERT INTO harken_calls ({_CALL_COLS}) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {j}) "
            "ON CONFLICT (call_id) DO UPDATE SET carrier = excluded.carrier, "
            "started_at = excluded.started_at, from_number = excluded.from_number, "
            "to_number = excluded.to_number, agent = excluded.agent, metadata = excluded.metadata"
        )
        #: a placeholder call row for a turn/event whose start record never arrived
        self.call_touch = (
            f"INSERT INTO harken_calls (call_id, started_at, metadata) VALUES ({p}, {p}, {j}) "
            "ON CONFLICT (call_id) DO NOTHING"
        )
        self.call_end = (
            f"INSERT INTO harken_calls (call_id, started_at, metadata, {_END_COLS}) "
            f"VALUES ({p}, {p}, {j}, {p}, {p}, {p}) "
            "ON CONFLICT (call_id) DO UPDATE SET ended_at = excluded.ended_at, "
            "outcome = excluded.outcome, duration_s = excluded.duration_s"
        )
        self.turn = (
            f"INSERT INTO harken_turns ({_TURN_COLS}) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {j}, {j}, {p}) "
            "ON CONFLICT (call_id, idx) DO UPDATE SET kind = excluded.kind, "
            "user_text = excluded.user_text, assistant_spoken = excluded.assistant_spoken, "
            "assistant_heard = excluded.assistant_heard, interrupted = excluded.interrupted, "
            "timings = excluded.timings, tools = excluded.tools, at = excluded.at"
        )
        self.event = f"INSERT INTO harken_events ({_EVENT_COLS}) VALUES ({p}, {p}, {p}, {j})"
        self.list_calls = (
            "SELECT c.call_id, c.carrier, c.started_at, c.from_number, c.to_number, c.agent, "
            "(SELECT COUNT(*) FROM harken_turns t WHERE t.call_id = c.call_id), "
            f"c.ended_at, c.outcome, c.duration_s FROM harken_calls c "
            f"ORDER BY c.started_at DESC, c.call_id LIMIT {p} OFFSET {p}"
        )
        self.get_call = f"SELECT {_CALL_COLS}, {_END_COLS} FROM harken_calls WHERE call_id = {p}"
        self.get_turns = f"SELECT {_TURN_COLS} FROM harken_turns WHERE call_id = {p} ORDER BY idx"
        self.get_events = (
            f"SELECT {_EVENT_COLS} FROM harken_events WHERE call_id = {p} ORDER BY at, id"
        )

    def statements(self, rec: Record) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements (with parameters) that write one record."""
        if isinstance(rec, TurnRecord):
            return [
                (self.call_touch, (rec.call_id, rec.at, "{}")),
                (
                    self.turn,
                    (
                        rec.call_id,
                        rec.index,
                        rec.kind,
                        rec.user_text,
                        rec.assistant_spoken,
                        rec.assistant_heard,
                        bool(rec.interrupted),
                        dumps(rec.timings),
                        dumps(rec.tools),
                        rec.at,
                    ),
                ),
            ]
        if isinstance(rec, CallEvent):
            return [
                (self.call_touch, (rec.call_id, rec.at, "{}")),
                (self.event, (rec.call_id, rec.at, rec.kind, dumps(rec.data))),
            ]
        if isinstance(rec, CallInfo):
            return [
                (
                    self.call_start,
                    (
                        rec.call_id,
                        rec.carrier,
                        rec.started_at,
                        rec.from_number,
                        rec.to_number,
                        rec.agent,
                        dumps(rec.metadata),
                    ),
                )
            ]
        return [
            (
                self.call_end,
                (
                    rec.call_id,
                    rec.ended_at - rec.duration_s,
                    "{}",
                    rec.ended_at,
                    rec.outcome,
                    rec.duration_s,
                ),
            )
        ]


def summary_from_row(row: Sequence[Any]) -> CallSummary:
    """A row of :attr:`Sql.list_calls` as a :class:`CallSummary`."""
    return CallSummary(
        call_id=row[0],
        carrier=row[1],
        started_at=float(row[2]),
        from_number=row[3],
        to_number=row[4],
        agent=row[5],
        turns=int(row[6]),
        ended_at=None if row[7] is None else float(row[7]),
        outcome=row[8],
        duration_s=None if row[9] is None else float(row[9]),
    )


def detail_from_rows(
    call: Sequence[Any], turns: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]
) -> CallDetail:
    """Rows of :attr:`Sql.get_call`, :attr:`Sql.get_turns`, :attr:`Sql.get_events` as a detail."""
    call_id = call[0]
    info = CallInfo(
        call_id=call_id,
        carrier=call[1],
        started_at=float(call[2]),
        from_number=call[3],
        to_number=call[4],
        agent=call[5],
        metadata=_loads(call[6]),
    )
    end = None
    if call[7] is not None:
        end = CallEnd(
            call_id=call_id,
            ended_at=float(call[7]),
            outcome=call[8] or "",
            duration_s=float(call[9]) if call[9] is not None else 0.0,
        )
    return CallDetail(
        info=info,
        turns=[
            TurnRecord(
                call_id=r[0],
                index=int(r[1]),
                kind=r[2],
                user_text=r[3],
                assistant_spoken=r[4],
                assistant_heard=r[5],
                interrupted=bool(r[6]),
                timings=_loads(r[7]),
                tools=_loads(r[8]),
                at=float(r[9]),
            )
            for r in turns
        ],
        events=[
            CallEvent(call_id=r[0], at=float(r[1]), kind=r[2], data=_loads(r[3])) for r in events
        ],
        end=end,
    )
