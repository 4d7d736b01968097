"""``harken calls``: list recorded calls and show one call's timeline.

::

    harken calls list [--db PATH | --dsn DSN] [--limit N] [--offset N] [--json]
    harken calls show ID [--db PATH | --dsn DSN] [--json]

``--db`` reads a SQLite file (default ``harken-calls.db``, the ``records.sqlite_path``
default); ``--dsn`` a PostgreSQL database. The SQLite file is opened read-only and may be read
while a server writes it. The formatting functions are pure (records in, text out); only
:func:`run` touches the store and stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from harken.errors import RecordsError
from harken.records.model import (
    TIMING_KEYS,
    CallDetail,
    CallEvent,
    CallSummary,
    TurnRecord,
    to_jsonable,
)

__all__ = ["add_arguments", "format_call", "format_list", "run"]

DEFAULT_DB = "harken-calls.db"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``list`` and ``show`` subcommands to the ``calls`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_mutually_exclusive_group()
    where.add_argument(
        "--db", metavar="PATH", default=None, help=f"SQLite call records (default {DEFAULT_DB})"
    )
    where.add_argument("--dsn", metavar="DSN", default=None, help="PostgreSQL call records")
    common.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
    listing = sub.add_parser(
        "list", parents=[common], help="recent calls, newest first", description="Recent calls."
    )
    listing.add_argument("--limit", type=int, default=20, help="calls to show (20)")
    listing.add_argument("--offset", type=int, default=0, help="skip this many newest calls")
    show = sub.add_parser(
        "show",
        parents=[common],
        help="one call: metadata, then a timeline of turns and events",
        description="One call's metadata, then its turns (caller text, what the agent said and "
        "what was heard, latency per stage in ms) and events, in time order.",
    )
    show.add_argument("call_id", metavar="ID", help="the call id")


def run(args: argparse.Namespace) -> int:
    """Run ``harken calls …``: 0 on success, 1 if the call or the records are not found."""
    try:
        out, code = asyncio.run(_query(args))
    except RecordsError as exc:
        sys.stderr.write(f"harken calls: {exc}\n")
        return 1
    sys.stdout.write(out)
    return code


async def _query(args: argparse.Namespace) -> tuple[str, int]:
    if args.dsn:
        from harken.records.postgres import PostgresCallStore

        store: Any = PostgresCallStore(args.dsn)
    else:
        from harken.records.sqlite import SqliteCallStore

        store = SqliteCallStore(args.db or DEFAULT_DB, readonly=True)
    await store.open()
    try:
        if args.calls_command == "list":
            if args.limit < 1 or args.offset < 0:
                raise RecordsError("--limit must be at least 1 and --offset at least 0")
            calls: list[CallSummary] = await store.list_calls(args.limit, args.offset)
            if args.json:
                return _json([to_jsonable(c) for c in calls]), 0
            return format_list(calls), 0
        detail: CallDetail | None = await store.get_call(args.call_id)
        if detail is None:
            if args.json:
                return _json(None), 1
            return f"no call {args.call_id!r}\n", 1
        return (_json(to_jsonable(detail)) if args.json else format_call(detail)), 0
    finally:
        await store.close()


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n"


# --- formatting (pure) ----------------------------------------------------------------------


def _when(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def format_list(calls: Sequence[CallSummary]) -> str:
    """The call list as a table: id, started (UTC), duration, turns, outcome."""
    if not calls:
        return "no calls recorded\n"
    rows = [("ID", "STARTED (UTC)", "DURATION", "TURNS", "OUTCOME")]
    for c in calls:
        outcome = c.outcome if c.outcome is not None else "(no end)"
        rows.append(
            (c.call_id, _when(c.started_at), _duration(c.duration_s), str(c.turns), outcome)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [
            r[i].rjust(widths[i]) if i in (2, 3) else r[i].ljust(widths[i]) for i in range(len(r))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float):
        return f"{value:.0f}"
    return str(value)


def latency_line(timings: dict[str, Any]) -> str:
    """``key value`` pairs (ms) in pipeline order, then any other keys alphabetically; plus
    ``response`` (``first_audio_out - speech_end``: what the caller waited) when both exist."""
    keys = [k for k in TIMING_KEYS if k in timings]
    keys += sorted(k for k in timings if k not in TIMING_KEYS)
    parts = [f"{k} {_ms(timings[k])}" for k in keys]
    start, first = timings.get("speech_end"), timings.get("first_audio_out")
    if isinstance(start, int | float) and isinstance(first, int | float):
        parts.append(f"=> response {first - start:.0f}")
    return "  ".join(parts)


def _turn_lines(t: TurnRecord, offset: float) -> list[str]:
    head = f"[{offset:+8.2f}s] #{t.index} {t.kind}"
    if t.interrupted:
        head += "  INTERRUPTED"
    lines = [head]
    if t.user_text:
        lines.append(f"    caller: {t.user_text}")
    if t.assistant_spoken:
        lines.append(f"    agent:  {t.assistant_spoken}")
    if t.assistant_heard is None:
        heard = "(unknown)"
    elif t.assistant_heard == t.assistant_spoken:
        heard = "(all of it)"
    else:
        heard = t.assistant_heard or "(nothing)"
    if t.assistant_spoken or t.assistant_heard:
        lines.append(f"    heard:  {heard}")
    if t.timings:
        lines.append(f"    ms:     {latency_line(t.timings)}")
    for tool in t.tools:
        lines.append(f"    tool:   {orjson.dumps(tool, default=str).decode()}")
    return lines


def _event_lines(e: CallEvent, offset: float) -> list[str]:
    data = f" {orjson.dumps(e.data, default=str).decode()}" if e.data else ""
    return [f"[{offset:+8.2f}s] event {e.kind}{data}"]


def format_call(detail: CallDetail) -> str:
    """A call's metadata, then its turns and events merged in time order (offsets from start)."""
    info, end = detail.info, detail.end
    lines = [
        f"call      {info.call_id}",
        f"carrier   {info.carrier or '-'}",
        f"from/to   {info.from_number or '-'} -> {info.to_number or '-'}",
        f"agent     {info.agent or '-'}",
        f"started   {_when(info.started_at)} UTC",
    ]
    if end is not None:
        lines.append(f"ended     {_when(end.ended_at)} UTC ({_duration(end.duration_s)})")
        lines.append(f"outcome   {end.outcome}")
    else:
        lines.append("ended     (no end record: still running, or the process died)")
    interrupted = sum(1 for t in detail.turns if t.interrupted)
    lines.append(f"turns     {len(detail.turns)} ({interrupted} interrupted)")
    if info.metadata:
        lines.append(f"metadata  {orjson.dumps(info.metadata, default=str).decode()}")
    lines.append("")
    timeline: list[tuple[float, int, list[str]]] = []
    for t in detail.turns:
        timeline.append((t.at, 0, _turn_lines(t, t.at - info.started_at)))
    for e in detail.events:
        timeline.append((e.at, 1, _event_lines(e, e.at - info.started_at)))
    timeline.sort(key=lambda item: (item[0], item[1]))
    for _, _, block in timeline:
        lines.extend(block)
    if not timeline:
        lines.append("(no turns or events)")
    return "\n".join(lines) + "\n"
