"""The demo restaurant's tools: plain, deterministic Python functions plus their JSON schemas.

The built-in ``restaurant`` flow calls ``book_table``; an LLM agent can use the same functions
through :data:`TOOL_SCHEMAS` (the OpenAI ``tools`` shape). Nothing is stored and nothing is
random: availability and confirmation codes derive from a hash of the request, so a test or a
demo gets the same answer every time. Luigi's opens Tuesday to Sunday; the first table is at
5 pm and the last at 9:30 pm; parties of 1 to 12 book by phone.

Invalid arguments and unavailable tables raise :class:`~harken.errors.ToolError` with a message
meant to be spoken ("we're fully booked at 7 pm, but 7:30 pm or 8 pm are free").
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import date
from typing import Any

from harken.agent.flow.slots_time import WEEKDAY_NAMES, minutes_of, spoken_date, spoken_time
from harken.errors import ToolError

__all__ = ["DEMO_TOOLS", "TOOL_SCHEMAS", "book_table", "call_tool", "check_availability"]

FIRST_TABLE = "17:00"
LAST_TABLE = "21:30"
CLOSED_WEEKDAYS = frozenset({0})  # Monday
MAX_PARTY = 12
_CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I to mishear


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()


def _party(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or isinstance(value, bool):
        raise ToolError(f"party_size must be a whole number, got {value!r}")
    if not 1 <= value <= MAX_PARTY:
        raise ToolError(f"we can book tables for 1 to {MAX_PARTY} people by phone, not {value}")
    return value


def _day(value: object) -> date:
    try:
        day = date.fromisoformat(str(value))
    except ValueError:
        raise ToolError(f"date must be YYYY-MM-DD, got {value!r}") from None
    if day.weekday() in CLOSED_WEEKDAYS:
        raise ToolError(f"we're closed on {WEEKDAY_NAMES[day.weekday()]}s")
    return day


def _clock(value: object) -> str:
    try:
        minutes = minutes_of(str(value))
    except ValueError:
        raise ToolError(f"time must be HH:MM (24 hour), got {value!r}") from None
    if not minutes_of(FIRST_TABLE) <= minutes <= minutes_of(LAST_TABLE):
        raise ToolError(
            f"we seat from {spoken_time(FIRST_TABLE)} to {spoken_time(LAST_TABLE)}, "
            f"not {spoken_time(str(value))}"
        )
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _free(party_size: int, day: date, hhmm: str) -> bool:
    full = _digest("slot", day.isoformat(), hhmm)[0] % 7 == 0
    big = party_size >= 9 and _digest("big", day.isoformat(), hhmm)[0] % 3 == 0
    return not (full or big)


def _alternatives(party_size: int, day: date, hhmm: str) -> list[str]:
    start, end = minutes_of(FIRST_TABLE), minutes_of(LAST_TABLE)
    wanted = minutes_of(hhmm)
    times = [f"{m // 60:02d}:{m % 60:02d}" for m in range(start, end + 1, 30)]
    free = [t for t in times if t != hhmm and _free(party_size, day, t)]
    return sorted(free, key=lambda t: abs(minutes_of(t) - wanted))[:2]


def check_availability(party_size: int, date: str, time: str) -> dict[str, Any]:
    """Whether a table for ``party_size`` is free on ``date`` (YYYY-MM-DD) at ``time`` (HH:MM).

    Answers ``{"available": bool, "party_size", "date", "time", "alternatives": [HH:MM, ...]}``
    (the nearest free times the same day when it is not). Raises ``ToolError`` for invalid
    arguments, a closed day or a time outside the seating hours.
    """
    size, day, hhmm = _party(party_size), _day(date), _clock(time)
    free = _free(size, day, hhmm)
    return {
        "available": free,
        "party_size": size,
        "date": day.isoformat(),
        "time": hhmm,
        "alternatives": [] if free else _alternatives(size, day, hhmm),
    }


def book_table(
    party_size: int, date: str, time: str, name: str, phone: str | None = None
) -> dict[str, Any]:
    """Book a table; answers ``{"code", "party_size", "date", "time", "name", "phone", "summary"}``.

    ``code`` is six letters and digits derived from the booking, so the same booking always gets
    the same code. Raises ``ToolError`` (a message to speak) for invalid arguments or when the
    table is not free, naming the nearest free times.
    """
    size, day, hhmm = _party(party_size), _day(date), _clock(time)
    who = str(name).strip()
    if not who or len(who) > 60:
        raise ToolError("the booking needs a name")
    digits = None
    if phone is not None and str(phone).strip():
        digits = "".join(c for c in str(phone) if c.isdigit() or c == "+")
        if not 7 <= sum(c.isdigit() for c in digits) <= 15:
            raise ToolError(f"{phone!r} does not look like a phone number")
    if not _free(size, day, hhmm):
        alternatives = _alternatives(size, day, hhmm)
        offer = " or ".join(spoken_time(t) for t in alternatives)
        tail = f", but {offer} {'is' if len(alternatives) == 1 else 'are'} free" if offer else ""
        raise ToolError(f"we're fully booked at {spoken_time(hhmm)}{tail}")
    raw = _digest("book", size, day.isoformat(), hhmm, who.lower(), digits or "")
    code = "".join(_CODE_ALPHABET[b % len(_CODE_ALPHABET)] for b in raw[:6])
    return {
        "code": code,
        "party_size": size,
        "date": day.isoformat(),
        "time": hhmm,
        "name": who,
        "phone": digits,
        "summary": f"{size} on {spoken_date(day.isoformat())} at {spoken_time(hhmm)}",
    }


DEMO_TOOLS: dict[str, Callable[..., dict[str, Any]]] = {
    "book_table": book_table,
    "check_availability": check_availability,
}

_WHEN = {
    "party_size": {"type": "integer", "minimum": 1, "maximum": MAX_PARTY},
    "date": {"type": "string", "description": "The day, as YYYY-MM-DD."},
    "time": {"type": "string", "description": "The time, as HH:MM in 24-hour time."},
}

TOOL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": (
                "Book a table at Luigi's. Seating is Tuesday to Sunday, 17:00 to 21:30, for 1 to "
                "12 people. Returns a confirmation code to read to the caller; fails with a "
                "message (and free times nearby) when the table is not available."
            ),
            "parameters": {
                "type": "object",
                "properties": {
                    **_WHEN,
                    "name": {"type": "string", "description": "The name for the booking."},
                    "phone": {
                        "type": "string",
                        "description": "A contact phone number (digits), if the caller gave one.",
                    },
                },
                "required": ["party_size", "date", "time", "name"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "check_availability",
            "description": (
                "Check whether a table is free at Luigi's, without booking it. Returns "
                "'available' and, when it is not, the nearest free times that day."
            ),
            "parameters": {
                "type": "object",
                "properties": dict(_WHEN),
                "required": ["party_size", "date", "time"],
                "additionalProperties": False,
            },
        },
    },
]


def call_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run demo tool ``name`` with ``args``; unknown tools and arguments raise ``ToolError``."""
    fn = DEMO_TOOLS.get(name)
    if fn is None:
        raise ToolError(f"no demo tool named {name!r}; tools: {sorted(DEMO_TOOLS)}")
    try:
        return fn(**args)
    except TypeError as exc:
        raise ToolError(f"{name}: bad arguments: {exc}") from None
