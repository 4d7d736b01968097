"""Prompt templates (``"A table for {party_size} at {time}"``) and transition conditions.

A template's placeholders are ``{name}`` or dotted ``{result.code}`` paths; ``{{`` and ``}}`` are
literal braces. Templates are parsed once at compile time, so a malformed one, or one naming a
slot that does not exist, is a configuration error with a file position, never a runtime
surprise. Rendering never fails: a missing value renders as nothing and the doubled spaces that
leaves are collapsed.

A condition is one comparison of a slot with a literal::

    party_size > 8          time >= "20:00"        phone is set        phone is not set

Operators are ``== != < <= > >=``. Literals are numbers, ``true``/``false``, or strings (quoted
or bare). ISO dates and ``HH:MM`` times compare correctly as strings. A comparison between
mismatched types, or with an unset slot, is false (``!=`` is then true), never an error.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "Template", "parse_condition", "parse_template"]

Field = tuple[str, ...]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD_NAME = re.compile(r"[A-Za-z_]\w*(?:\.\w+)*")
_SPACES = re.compile(r"[ \t]{2,}")
_SPACE_PUNCT = re.compile(r"\s+([,.!?;:])")


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: literal strings and field paths, in order."""

    source: str
    parts: tuple[str | Field, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        """The placeholders, in order."""
        return tuple(p for p in self.parts if isinstance(p, tuple))

    @property
    def single(self) -> Field | None:
        """The field when the template is exactly one placeholder (``"{party_size}"``)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], tuple):
            return self.parts[0]
        return None

    def render(self, lookup: Callable[[Field], str]) -> str:
        """The text with each placeholder replaced by ``lookup(field)``, spacing tidied."""
        out = "".join(p if isinstance(p, str) else lookup(p) for p in self.parts)
        out = _SPACE_PUNCT.sub(r"\1", _SPACES.sub(" ", out))
        return out.strip()


def parse_template(text: str) -> Template:
    """Parse ``text``; raises ValueError for a stray brace or a malformed placeholder."""
    parts: list[str | Field] = []
    literal = ""
    pos = 0
    for m in _TOKEN.finditer(text):
        literal += text[pos : m.start()]
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            literal += token[0]
            continue
        if token in ("{", "}"):
            raise ValueError(f"unmatched {token!r} in {text!r} (write {token * 2} for a brace)")
        name = (m.group(1) or "").strip()
        if not _FIELD_NAME.fullmatch(name):
            raise ValueError(f"bad placeholder {{{name}}} in {text!r}")
        if literal:
            parts.append(literal)
            literal = ""
        parts.append(tuple(name.split(".")))
    literal += text[pos:]
    if literal:
        parts.append(literal)
    return Template(source=text, parts=tuple(parts))


# -- conditions ----------------------------------------------------------------------------------

_COMPARE = re.compile(r"^\s*([A-Za-z_]\w*)\s*(==|!=|<=|>=|<|>)\s*([^\s<>=!].*?)\s*$")
_IS_SET = re.compile(r"^\s*([A-Za-z_]\w*)\s+is\s+(not\s+)?set\s*$")


def _literal(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


@dataclass(frozen=True, slots=True)
class Condition:
    """``slot op value``; ``op`` is a comparison, or ``set``/``unset``."""

    slot: str
    op: str
    value: Any
    text: str

    def holds(self, slots: Mapping[str, Any]) -> bool:
        """Whether the condition holds for these slot values (never raises)."""
        current = slots.get(self.slot)
        if self.op == "set":
            return current is not None
        if self.op == "unset":
            return current is None
        if self.op in ("==", "!="):
            return (current == self.value and _same_kind(current, self.value)) == (self.op == "==")
        if current is None or not _same_kind(current, self.value):
            return False
        a, b = current, self.value
        return bool(
            a < b
            if self.op == "<"
            else a <= b
            if self.op == "<="
            else a > b
            if self.op == ">"
            else a >= b
        )


def _same_kind(a: Any, b: Any) -> bool:
    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int | float):
            return "number"
        return type(v).__name__

    return kind(a) == kind(b)


def parse_condition(text: str) -> Condition:
    """Parse ``"party_size > 8"`` or ``"phone is set"``; raises ValueError when malformed."""
    m = _IS_SET.match(text)
    if m:
        return Condition(m.group(1), "unset" if m.group(2) else "set", None, text)
    m = _COMPARE.match(text)
    if not m:
        raise ValueError(
            f"cannot read condition {text!r}: write '<slot> <op> <value>' "
            "(op one of == != < <= > >=) or '<slot> is [not] set'"
        )
    return Condition(m.group(1), m.group(2), _literal(m.group(3)), text)


def holds_all(conditions: tuple[Condition, ...], slots: Mapping[str, Any]) -> bool:
    """Whether every condition holds (an empty tuple always does)."""
    return all(c.holds(slots) for c in conditions)
