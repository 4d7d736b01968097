"""Date and time slots: spoken dates and clock times to ISO values, and back to speech.

Dates are ``"YYYY-MM-DD"`` strings relative to the session's ``today``:

=============================  ======================================================
``today``, ``tonight``         today (also ``this evening`` / ``this afternoon``)
``tomorrow`` (``tomorrow         today + 1; ``the day after tomorrow`` is today + 2
night``)
``in 3 days``, ``in a week``   today + N days / 7 days
``friday``, ``this friday``,   the next Friday, today included
``on friday``
``next friday``                the Friday of next week (Monday-based weeks)
``march 3rd``, ``3rd of        that day, next year when it has passed this year; an
march``, ``march 3 2026``      explicit year is kept
``the 3rd``                    that day this month, or next month when it has passed
``3/14``, ``2024-03-14``       month/day (day/month when that is the only valid reading); ISO
=============================  ======================================================

A bare ordinal ("third") counts only when the date was just asked for.

Times are ``"HH:MM"`` (24 h) strings. Understood: ``7``, ``7 pm``, ``7pm``, ``seven thirty``,
``7 30``, ``730``, ``seven oh five``, ``19:30``, ``half past six``, ``quarter to eight``, ``ten
past seven``, ``half seven``, ``8 o'clock``, ``noon``, ``midnight``, ``7 in the evening``, ``8
tonight``. A clock time counts without a cue when it has am/pm, o'clock, a colon or a
quarter-hour minute; a bare hour needs ``at``/``around``/``about``/``by`` before it, or the time to
have just been asked for. An hour 1-11 said without am/pm is resolved by the slot's ``assume``
(``pm``: 7 -> 19:00); with ``assume: none`` and an allowed window, the reading inside the window
wins; 12 stays noon.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from harken.agent.flow.text import ParseInput, SlotMatch, SlotSpec, number_at, ordinal_at

__all__ = [
    "WEEKDAYS",
    "find_date",
    "find_time",
    "minutes_of",
    "spoken_date",
    "spoken_time",
]

WEEKDAYS = {
    "monday": 0,
    "tuesday": 1,
    "wednesday": 2,
    "thursday": 3,
    "friday": 4,
    "saturday": 5,
    "sunday": 6,
}
WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = {
    "january": 1,
    "jan": 1,
    "february": 2,
    "feb": 2,
    "march": 3,
    "april": 4,
    "apr": 4,
    "may": 5,
    "june": 6,
    "july": 7,
    "august": 8,
    "aug": 8,
    "september": 9,
    "sept": 9,
    "sep": 9,
    "october": 10,
    "oct": 10,
    "november": 11,
    "nov": 11,
    "december": 12,
    "dec": 12,
}
MONTH_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_TODAY = {"today": 0, "tonight": 0, "tomorrow": 1, "tomorow": 1, "tommorow": 1, "tmrw": 1}
_DAY_CUES = {"this", "on", "coming", "next"}
_TIME_CUES = {"at", "around", "about", "by", "say"}
_PM_HINTS = (
    ("in", "the", "evening"),
    ("in", "the", "afternoon"),
    ("at", "night"),
    ("tonight",),
    ("this", "evening"),
    ("evening",),
    ("night",),
)
_AM_HINTS = (("in", "the", "morning"), ("this", "morning"), ("morning",))


def _safe_date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _month_day(today: date, month: int, day: int, year: int | None) -> date | None:
    if year is not None:
        return _safe_date(year, month, day)
    found = _safe_date(today.year, month, day)
    if found is not None and found >= today:
        return found
    return _safe_date(today.year + 1, month, day)


def _day_of_month(today: date, day: int) -> date | None:
    year, month = today.year, today.month
    for _ in range(13):
        found = _safe_date(year, month, day)
        if found is not None and found >= today:
            return found
        month += 1
        if month > 12:
            year, month = year + 1, 1
    return None


def _year_at(toks: Sequence[str], i: int) -> tuple[int | None, int]:
    if i < len(toks) and toks[i].isdigit() and len(toks[i]) == 4:
        return int(toks[i]), i + 1
    return None, i


def _date_at(toks: Sequence[str], i: int, today: date, lenient: bool) -> SlotMatch | None:
    t = toks[i]
    if t == "day" and tuple(toks[i + 1 : i + 3]) == ("after", "tomorrow"):
        return SlotMatch(today + timedelta(days=2), i, i + 3)
    if t in _TODAY:
        return SlotMatch(today + timedelta(days=_TODAY[t]), i, i + 1)
    if t == "this" and i + 1 < len(toks) and toks[i + 1] in ("evening", "afternoon"):
        return SlotMatch(today, i, i + 2)
    if t == "in" and i + 2 < len(toks):
        if toks[i + 1] in ("a", "one"):
            amount, j = 1, i + 2
        else:
            amount, j = number_at(toks, i + 1, max_digits=2) or (0, i + 1)
        if 0 < amount <= 60 and j < len(toks) and toks[j] in ("day", "days", "week", "weeks"):
            days = amount * (7 if toks[j].startswith("week") else 1)
            return SlotMatch(today + timedelta(days=days), i, j + 1)
    if t in _DAY_CUES and i + 1 < len(toks) and toks[i + 1] in WEEKDAYS:
        wd = WEEKDAYS[toks[i + 1]]
        if t == "next":
            monday_next = today + timedelta(days=7 - today.weekday())
            return SlotMatch(monday_next + timedelta(days=wd), i, i + 2)
        return SlotMatch(today + timedelta(days=(wd - today.weekday()) % 7), i, i + 2)
    if t in WEEKDAYS:
        return SlotMatch(today + timedelta(days=(WEEKDAYS[t] - today.weekday()) % 7), i, i + 1)
    if t in MONTHS and i + 1 < len(toks):  # march 3rd / march the 3rd / march 3 [2026]
        j = i + 2 if toks[i + 1] == "the" else i + 1
        day = ordinal_at(toks, j)
        if day is None and t != "may":  # "may 4" is too often "may I"
            day = number_at(toks, j, max_digits=2)
        if day is not None:
            year, end = _year_at(toks, day[1])
            return SlotMatch(_month_day(today, MONTHS[t], day[0], year), i, end)
    start = i + 1 if t == "the" else i
    day = ordinal_at(toks, start)
    if day is None and t == "the":
        day = number_at(toks, start, max_digits=2)
    if day is None and start == i and t.isdigit() and len(t) <= 2:
        day = number_at(toks, i, max_digits=2)
    if day is not None:
        j = day[1] + 1 if day[1] < len(toks) and toks[day[1]] == "of" else day[1]
        plain = ordinal_at(toks, start) is None
        if j < len(toks) and toks[j] in MONTHS and not (plain and toks[j] == "may" and j == day[1]):
            year, end = _year_at(toks, j + 1)
            return SlotMatch(_month_day(today, MONTHS[toks[j]], day[0], year), i, end)
        bare_ok = lenient and toks[start] != "second"  # "just a second" is not the 2nd
        if not plain and (t == "the" or bare_ok):
            found = _day_of_month(today, day[0])
            return SlotMatch(found, i, day[1]) if found else None
    if "/" in t:
        return _slashed(t, i, today)
    return None


def _slashed(t: str, i: int, today: date) -> SlotMatch | None:
    parts = t.split("/")
    if not all(p.isdigit() for p in parts):
        return None
    nums = [int(p) for p in parts]
    if len(parts) == 3 and len(parts[0]) == 4:
        found = _safe_date(nums[0], nums[1], nums[2])
    elif len(parts) == 3:
        year = nums[2] + 2000 if nums[2] < 100 else nums[2]
        found = _safe_date(year, nums[0], nums[1]) or _safe_date(year, nums[1], nums[0])
    elif len(parts) == 2:
        found = _month_day(today, nums[0], nums[1], None) or _month_day(
            today, nums[1], nums[0], None
        )
    else:
        found = None
    return SlotMatch(found, i, i + 1) if found else None


def find_date(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """The first date in the text, as an ISO string (see the module docstring)."""
    i = 0
    while i < len(inp.toks):
        m = _date_at(inp.toks, i, inp.today, inp.lenient) if inp.toks[i] else None
        if m is not None and isinstance(m.value, date):
            return SlotMatch(m.value.isoformat(), m.start, m.end)
        i = m.end if m is not None else i + 1  # an impossible "feb 30th" is skipped whole
    return None


# -- time ----------------------------------------------------------------------------------------


def minutes_of(hhmm: str) -> int:
    """``"19:30"`` -> 1170 (minutes after midnight). Raises ValueError for anything else."""
    hours, sep, minutes = hhmm.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{hhmm!r} is not a HH:MM time")
    h, m = int(hours), int(minutes)
    if h > 23 or m > 59:
        raise ValueError(f"{hhmm!r} is not a HH:MM time")
    return h * 60 + m


def in_window(minutes: int, window: tuple[int, int]) -> bool:
    """Whether ``minutes`` lies in ``window`` (inclusive; a window may wrap past midnight)."""
    lo, hi = window
    return lo <= minutes <= hi if lo <= hi else minutes >= lo or minutes <= hi


def _minutes_after(toks: Sequence[str], j: int) -> tuple[int, int, bool] | None:
    """Minutes said after an hour: ``thirty``, ``30``, ``oh five``; (minutes, end, strong)."""
    if j >= len(toks):
        return None
    if toks[j] in ("oh", "o") and j + 1 < len(toks):
        unit = number_at(toks, j + 1, max_digits=1)
        if unit is not None and unit[0] < 10:
            return unit[0], unit[1], True
        return None
    if toks[j].isdigit() and len(toks[j]) != 2:
        return None
    found = number_at(toks, j, max_digits=2)
    if found is None or not 10 <= found[0] <= 59:
        return None
    return found[0], found[1], found[0] in (15, 30, 45)


def _clock_at(toks: Sequence[str], i: int) -> tuple[int, int, int, bool] | None:
    """A clock reading at ``i``: (hour, minute, end, strong) before am/pm is considered."""
    t = toks[i]
    if ":" in t:
        try:
            total = minutes_of(t)
        except ValueError:
            return None
        return total // 60, total % 60, i + 1, True
    if t.isdigit() and len(t) in (3, 4):
        h, m = int(t[:-2]), int(t[-2:])
        return (h, m, i + 1, False) if h <= 23 and m <= 59 else None
    if t in ("noon", "midday"):
        return 12, 0, i + 1, True
    if t == "midnight":
        return 0, 0, i + 1, True
    if t in ("half", "quarter") and i + 1 < len(toks):
        minutes = 30 if t == "half" else 15
        rel = toks[i + 1]
        if rel in ("past", "after", "to", "till", "before") and i + 2 < len(toks):
            hour = number_at(toks, i + 2, max_digits=2)
            if hour is None or not 1 <= hour[0] <= 12:
                return None
            if rel in ("past", "after"):
                return hour[0], minutes, hour[1], True
            return (hour[0] - 1) % 12 or 12, 60 - minutes, hour[1], True
        hour = number_at(toks, i + 1, max_digits=2)  # British "half seven"
        if t == "half" and hour is not None and 1 <= hour[0] <= 12:
            return hour[0], 30, hour[1], True
        return None
    first = number_at(toks, i, max_digits=2)
    if first is None or first[0] > 23:
        return None
    value, j = first
    if j + 1 < len(toks) and toks[j] in ("past", "after", "to", "till") and 1 <= value <= 30:
        hour = number_at(toks, j + 1, max_digits=2)
        if hour is not None and 1 <= hour[0] <= 12:
            if toks[j] in ("past", "after"):
                return hour[0], value, hour[1], True
            return (hour[0] - 1) % 12 or 12, 60 - value, hour[1], False
    after = _minutes_after(toks, j)
    if after is not None:
        return value, after[0], after[1], after[2]
    if j < len(toks) and toks[j] == "oclock":
        return value, 0, j + 1, True
    return value, 0, j, False


def _resolve(hour: int, meridiem: str | None, spec: SlotSpec, minute: int) -> int | None:
    if meridiem is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if meridiem == "pm" else 0)
    elif 1 <= hour <= 11:
        if spec.assume == "pm":
            hour += 12
        elif spec.assume == "none" and spec.window is not None:
            pm = (hour + 12) * 60 + minute
            if in_window(pm, spec.window) and not in_window(hour * 60 + minute, spec.window):
                hour += 12
    return hour * 60 + minute if hour <= 23 and minute <= 59 else None


def _meridiem_at(toks: Sequence[str], full: Sequence[str], j: int) -> tuple[str | None, int, bool]:
    """am/pm after a clock reading: (meridiem, end, said explicitly).

    "in the evening", "tonight" and the like also give a meridiem, but not an explicit one: they
    do not make a bare number a time ("a table for 7 tonight" is seven people).
    """
    if j < len(toks) and toks[j] in ("am", "pm"):
        return toks[j], j + 1, True
    for k in range(j, min(j + 2, len(full))):
        for hint in _PM_HINTS:
            if tuple(full[k : k + len(hint)]) == hint:
                return "pm", j, False
        for hint in _AM_HINTS:
            if tuple(full[k : k + len(hint)]) == hint:
                return "am", j, False
    return None, j, False


def find_time(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """The first clock time in the text, as ``"HH:MM"`` (see the module docstring)."""
    toks = inp.toks
    for i, t in enumerate(toks):
        if not t:
            continue
        cued = t in _TIME_CUES and i + 1 < len(toks)
        at = i + 1 if cued else i
        if cued and toks[at] in ("around", "about"):
            at += 1
        if at >= len(toks) or not toks[at]:
            continue
        clock = _clock_at(toks, at)
        if clock is None:
            continue
        hour, minute, end, strong = clock
        meridiem, end, explicit = _meridiem_at(toks, inp.full, end)
        if end < len(toks) and toks[end] == "oclock":
            end, strong = end + 1, True
        if not (strong or explicit or cued or inp.lenient):
            continue
        total = _resolve(hour, meridiem, spec, minute)
        if total is not None:
            return SlotMatch(f"{total // 60:02d}:{total % 60:02d}", i, end)
    return None


# -- speech --------------------------------------------------------------------------------------


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def spoken_date(iso: str) -> str:
    """``"2024-03-08"`` -> ``"Friday, March 8th"`` (the input back when it is not ISO)."""
    try:
        d = date.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{WEEKDAY_NAMES[d.weekday()]}, {MONTH_NAMES[d.month - 1]} {_ordinal(d.day)}"


def spoken_time(hhmm: str) -> str:
    """``"19:30"`` -> ``"7:30 pm"``, ``"12:00"`` -> ``"noon"``, ``"00:00"`` -> ``"midnight"``."""
    try:
        total = minutes_of(hhmm)
    except ValueError:
        return hhmm
    if total == 12 * 60:
        return "noon"
    if total == 0:
        return "midnight"
    h, m = divmod(total, 60)
    suffix = "pm" if h >= 12 else "am"
    h = h % 12 or 12
    return f"{h} {suffix}" if m == 0 else f"{h}:{m:02d} {suffix}"
