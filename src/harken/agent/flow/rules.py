"""Slot validation rules (a slot's ``validate:`` block) and the messages they speak.

A parsed value is checked before it fills its slot; a value that breaks a rule is not stored, and
the rule's message is spoken instead (then the slot is asked again). Rules by slot type:

=====================  ==========================================================================
number, party_size     ``min``, ``max`` (inclusive)
time                   ``between: ["17:00", "22:00"]`` (inclusive; may wrap past midnight)
date                   ``not_past`` (default true), ``max_days_ahead``, ``closed_on: [monday]``
phone                  ``min_digits`` (default 7), ``max_digits`` (default 15)
name, text, choice     ``pattern`` (a regular expression the whole value must match)
=====================  ==========================================================================

``message`` replaces every rule's default message; it may use ``{value}`` (spoken), ``{min}``,
``{max}``, ``{from}``, ``{to}``, ``{day}`` and ``{max_days}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from harken.agent.flow.slots import spoken
from harken.agent.flow.slots_time import WEEKDAY_NAMES, in_window, minutes_of, spoken_time
from harken.agent.flow.templates import Template, parse_template

__all__ = ["MESSAGE_FIELDS", "RULES_BY_TYPE", "Rules", "check"]

RULES_BY_TYPE = {
    "number": ("min", "max"),
    "party_size": ("min", "max"),
    "time": ("between",),
    "date": ("not_past", "max_days_ahead", "closed_on"),
    "phone": ("min_digits", "max_digits"),
    "name": ("pattern",),
    "text": ("pattern",),
    "choice": ("pattern",),
    "yes_no": (),
}
MESSAGE_FIELDS = frozenset({"value", "min", "max", "from", "to", "day", "max_days"})

_DEFAULTS = {
    "range": parse_template("Sorry, that has to be between {min} and {max}."),
    "min": parse_template("Sorry, that has to be at least {min}."),
    "max": parse_template("Sorry, that can be at most {max}."),
    "between": parse_template("Sorry, that has to be between {from} and {to}."),
    "not_past": parse_template("Sorry, that date has already passed."),
    "max_days_ahead": parse_template(
        "Sorry, that's too far ahead: up to {max_days} days from now."
    ),
    "closed_on": parse_template("Sorry, we're closed on {day}s."),
    "short": parse_template("Sorry, that number sounds too short."),
    "long": parse_template("Sorry, that number sounds too long."),
    "pattern": parse_template("Sorry, that doesn't sound right."),
}


@dataclass(frozen=True, slots=True)
class Rules:
    """A slot's compiled validation rules."""

    min: float | None = None
    max: float | None = None
    window: tuple[int, int] | None = None
    not_past: bool = True
    max_days_ahead: int | None = None
    closed_on: frozenset[int] = frozenset()
    min_digits: int = 7
    max_digits: int = 15
    pattern: re.Pattern[str] | None = None
    message: Template | None = None


def _num(x: float | None) -> str:
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else str(x)


def _broken(slot_type: str, value: Any, rules: Rules, today: date) -> tuple[str, str] | None:
    """The broken rule as (message key, day name) or None when the value passes."""
    if slot_type in ("number", "party_size") and isinstance(value, int | float):
        low = rules.min is not None and value < rules.min
        high = rules.max is not None and value > rules.max
        if low or high:
            if rules.min is not None and rules.max is not None:
                return "range", ""
            return ("min" if low else "max"), ""
    elif slot_type == "time" and isinstance(value, str) and rules.window is not None:
        if not in_window(minutes_of(value), rules.window):
            return "between", ""
    elif slot_type == "date" and isinstance(value, str):
        d = date.fromisoformat(value)
        if rules.not_past and d < today:
            return "not_past", ""
        if rules.max_days_ahead is not None and (d - today).days > rules.max_days_ahead:
            return "max_days_ahead", ""
        if d.weekday() in rules.closed_on:
            return "closed_on", WEEKDAY_NAMES[d.weekday()]
    elif slot_type == "phone" and isinstance(value, str):
        digits = sum(c.isdigit() for c in value)
        if digits < rules.min_digits:
            return "short", ""
        if digits > rules.max_digits:
            return "long", ""
    if rules.pattern is not None and not rules.pattern.fullmatch(str(value)):
        return "pattern", ""
    return None


def check(slot_type: str, value: Any, rules: Rules, today: date) -> str | None:
    """The message to speak when ``value`` breaks one of ``rules``; None when it passes."""
    broken = _broken(slot_type, value, rules, today)
    if broken is None:
        return None
    key, day = broken
    window = rules.window or (0, 0)
    fields = {
        "value": spoken(slot_type, value),
        "min": _num(rules.min),
        "max": _num(rules.max),
        "from": spoken_time(f"{window[0] // 60:02d}:{window[0] % 60:02d}"),
        "to": spoken_time(f"{window[1] // 60:02d}:{window[1] % 60:02d}"),
        "day": day,
        "max_days": str(rules.max_days_ahead or ""),
    }
    template = rules.message or _DEFAULTS[key]
    return template.render(lambda f: fields.get(f[0], ""))
