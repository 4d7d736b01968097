"""Caller scripts: YAML scenarios, validated with the file, line and field of every mistake.

A scenario is one simulated call::

    name: book-all-in-one            # default: the file's stem
    description: One long sentence fills every slot.
    timeout_s: 45                    # the whole call (default 45)
    vars:                            # placeholders for the texts ({day} below)
      day: {free_day: {party_size: 4, time: "19:00"}}
    steps:
      - wait_agent: true             # the greeting
      - say: "A table for four on {day} ... at seven pm"
        pause_s: 0.8                 # each "..." is a pause this long (default 0.6 s)
      - wait_agent: true
      - backchannel: "uh-huh"        # spoken after_s into the agent's next reply
        after_s: 1.0
      - barge_in: "wait, stop"       # spoken after_s into the agent's next reply
        after_s: 1.2
      - dtmf: "5551234567#"
      - wait: 1.5                    # the caller thinks (no turn)
      - silence: 20                  # the caller stays quiet (ends early if the call ends)
      - expect: {said: "how many"}   # the agent said it since the caller's last act
      - hangup: true                 # the caller hangs up
    expect:                          # checks on the whole call
      hangup: true                   # the agent ended the call
      said: ["confirmation code"]    # every phrase appears in the agent's speech (Whisper)
      said_any: ["goodbye", "bye"]   # at least one appears
      not_said: ["didn't catch"]     # none appears

Every step is a mapping with exactly one action key and that action's options. ``say`` and
``barge_in`` take ``reply: false`` when the agent is not expected to answer (the turn is then
left out of the dead-air check). ``wait_agent`` takes ``quiet_s`` (default 0.7: how long the
agent must stay quiet) and ``timeout_s`` (default 15); ``dtmf`` takes ``interval_s`` (0.12 s
between keys).

``vars`` values are strings, or generators: ``free_day: {party_size, time}`` is the weekday name
("Friday") of the first day from tomorrow to six days ahead that is open and has that table free
in the demo restaurant's deterministic availability (:mod:`harken.agent.flow.demo_tools`), so a
booking script never hits "fully booked" or a closed Monday whatever the date. Scripts are read
with :func:`harken.yamlconf.load_yaml`; every error is a :class:`~harken.errors.ConfigError`
reading ``file:line:col: steps[2].after_s: expected a number, got 'soon'``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from harken.errors import ConfigError
from harken.yamlconf import Located, YamlPath, load_yaml

__all__ = [
    "PAUSE_MARK",
    "Backchannel",
    "BargeIn",
    "Dtmf",
    "Expect",
    "Hangup",
    "Say",
    "Scenario",
    "Silence",
    "Step",
    "Wait",
    "WaitAgent",
    "builtin_scenarios",
    "load_scenario",
    "scenario_dir",
    "split_pauses",
]

PAUSE_MARK: Final = "..."
"""Written inside a ``say`` text: the caller pauses there for ``pause_s`` seconds."""

_DTMF: Final = frozenset("0123456789*#ABCD")
_TOP_KEYS: Final = ("name", "description", "timeout_s", "tags", "vars", "steps", "expect")
_EXPECT_KEYS: Final = ("hangup", "said", "said_any", "not_said")


@dataclass(frozen=True, slots=True)
class Say:
    """The caller speaks ``text``; each ``...`` is a pause of ``pause_s``."""

    text: str
    pause_s: float = 0.6
    reply: bool = True

    @property
    def parts(self) -> list[str]:
        return split_pauses(self.text)


@dataclass(frozen=True, slots=True)
class WaitAgent:
    """Wait until the agent has spoken (since the caller's last act) and gone quiet."""

    quiet_s: float = 0.7
    timeout_s: float = 15.0


@dataclass(frozen=True, slots=True)
class Wait:
    """The caller pauses ``seconds`` (no turn); ends early if the call ends."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Silence:
    """The caller stays deliberately quiet ``seconds`` (idle prompts); ends early on hang-up."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Keypad keys, ``interval_s`` apart; a turn the agent should answer."""

    digits: str
    interval_s: float = 0.12


@dataclass(frozen=True, slots=True)
class Backchannel:
    """Spoken ``after_s`` into the agent's next reply; must not interrupt it."""

    text: str
    after_s: float = 1.0


@dataclass(frozen=True, slots=True)
class BargeIn:
    """Spoken ``after_s`` into the agent's next reply; must interrupt it."""

    text: str
    after_s: float = 1.0
    reply: bool = True


@dataclass(frozen=True, slots=True)
class Hangup:
    """The caller hangs up."""


@dataclass(frozen=True, slots=True)
class Expect:
    """Checks. As a step: ``said``/``said_any``/``not_said`` over what the agent said since the
    caller's last act. In a scenario's ``expect``: over the whole call, plus ``hangup``."""

    hangup: bool | None = None
    said: tuple[str, ...] = ()
    said_any: tuple[str, ...] = ()
    not_said: tuple[str, ...] = ()

    @property
    def needs_stt(self) -> bool:
        return bool(self.said or self.said_any or self.not_said)


Step = Say | WaitAgent | Wait | Silence | Dtmf | Backchannel | BargeIn | Hangup | Expect


@dataclass(frozen=True, slots=True)
class Scenario:
    """One validated caller script (texts already rendered with ``vars``)."""

    name: str
    steps: tuple[Step, ...]
    description: str = ""
    timeout_s: float = 45.0
    expect: Expect = field(default_factory=Expect)
    tags: tuple[str, ...] = ()
    source: str = ""

    def texts(self) -> list[str]:
        """Every phrase the caller speaks (what to synthesise before dialling)."""
        out: list[str] = []
        for step in self.steps:
            if isinstance(step, Say):
                out.extend(step.parts)
            elif isinstance(step, Backchannel | BargeIn):
                out.append(step.text)
        return out


def split_pauses(text: str) -> list[str]:
    """``"a table ... for four"`` -> ``["a table", "for four"]`` (empty parts dropped)."""
    return [p.strip() for p in text.split(PAUSE_MARK) if p.strip()]


def scenario_dir() -> Path:
    """The shipped scenarios (package data)."""
    return Path(__file__).with_name("scenarios")


def builtin_scenarios(today: dt.date | None = None) -> list[Scenario]:
    """Every shipped scenario, sorted by file name (the ``default`` suite)."""
    return [load_scenario(p, today=today) for p in sorted(scenario_dir().glob("*.yaml"))]


# ---- loading ---------------------------------------------------------------------------------


def load_scenario(
    source: str | Path, *, filename: str | None = None, today: dt.date | None = None
) -> Scenario:
    """Read and validate one scenario (a path, or YAML text; see :func:`load_yaml`)."""
    loc = load_yaml(source, filename=filename)
    data = loc.data
    if not isinstance(data, dict):
        raise loc.error((), f"a scenario is a mapping with 'steps', got {_got(data)}")
    _check_keys(loc, (), data, _TOP_KEYS)
    stem = Path(loc.filename).stem if loc.filename != "<string>" else "scenario"
    name = _string(loc, ("name",), data.get("name", stem))
    desc = _string(loc, ("description",), data.get("description", ""))
    timeout = _number(loc, ("timeout_s",), data.get("timeout_s", 45.0), positive=True)
    tags = tuple(_strings(loc, ("tags",), data.get("tags", [])))
    values = _vars(loc, data.get("vars", {}), today or dt.date.today())
    if "steps" not in data:
        raise loc.error((), "missing 'steps' (a list of caller steps)")
    steps_raw = data["steps"]
    if not isinstance(steps_raw, list) or not steps_raw:
        raise loc.error(("steps",), f"expected a non-empty list of steps, got {_got(steps_raw)}")
    steps = tuple(_step(loc, ("steps", i), raw, values) for i, raw in enumerate(steps_raw))
    expect = _expect(loc, ("expect",), data.get("expect", {}), top=True)
    return Scenario(name, steps, desc, timeout, expect, tags, loc.filename)


def _step(loc: Located, path: YamlPath, raw: Any, values: Mapping[str, str]) -> Step:
    if not isinstance(raw, dict) or not raw:
        raise loc.error(path, f"a step is a mapping like {{say: 'hello'}}, got {_got(raw)}")
    actions = [k for k in raw if k in _BUILDERS]
    if not actions:
        key = next(iter(raw))
        raise loc.error(
            (*path, key),
            f"unknown step {key!r}{_hint(key, _BUILDERS)}; steps: {', '.join(_BUILDERS)}",
            key=True,
        )
    if len(actions) > 1:
        raise loc.error(path, f"a step has one action, got {' and '.join(map(repr, actions))}")
    action = actions[0]
    builder, options = _BUILDERS[action]
    _check_keys(loc, path, raw, (action, *options))
    return builder(loc, path, raw, values)


def _build_say(
    loc: Located, path: YamlPath, raw: dict[str, Any], values: Mapping[str, str]
) -> Step:
    text = _text(loc, (*path, "say"), raw["say"], values)
    if not split_pauses(text):
        raise loc.error((*path, "say"), "nothing to say")
    pause = _number(loc, (*path, "pause_s"), raw.get("pause_s", 0.6), positive=True)
    return Say(text, pause, _bool(loc, (*path, "reply"), raw.get("reply", True)))


def _build_wait_agent(
    loc: Located, path: YamlPath, raw: dict[str, Any], _: Mapping[str, str]
) -> Step:
    if raw["wait_agent"] is not True:
        raise loc.error((*path, "wait_agent"), f"expected true, got {_got(raw['wait_agent'])}")
    quiet = _number(loc, (*path, "quiet_s"), raw.get("quiet_s", 0.7), positive=True)
    timeout = _number(loc, (*path, "timeout_s"), raw.get("timeout_s", 15.0), positive=True)
    return WaitAgent(quiet, timeout)


def _build_wait(loc: Located, path: YamlPath, raw: dict[str, Any], _: Mapping[str, str]) -> Step:
    return Wait(_number(loc, (*path, "wait"), raw["wait"], positive=True))


def _build_silence(loc: Located, path: YamlPath, raw: dict[str, Any], _: Mapping[str, str]) -> Step:
    return Silence(_number(loc, (*path, "silence"), raw["silence"], positive=True))


def _build_dtmf(loc: Located, path: YamlPath, raw: dict[str, Any], _: Mapping[str, str]) -> Step:
    p = (*path, "dtmf")
    digits = loc.raw(p) if isinstance(raw["dtmf"], int) else raw["dtmf"]
    digits = _string(loc, p, digits)
    bad = sorted({d for d in digits if d not in _DTMF})
    if not digits or bad:
        raise loc.error(p, f"keys are 0-9 * # A-D, got {digits!r}")
    return Dtmf(
        digits, _number(loc, (*path, "interval_s"), raw.get("interval_s", 0.12), positive=True)
    )


def _build_backchannel(
    loc: Located, path: YamlPath, raw: dict[str, Any], values: Mapping[str, str]
) -> Step:
    text = _text(loc, (*path, "backchannel"), raw["backchannel"], values)
    return Backchannel(text, _number(loc, (*path, "after_s"), raw.get("after_s", 1.0)))


def _build_barge_in(
    loc: Located, path: YamlPath, raw: dict[str, Any], values: Mapping[str, str]
) -> Step:
    text = _text(loc, (*path, "barge_in"), raw["barge_in"], values)
    after = _number(loc, (*path, "after_s"), raw.get("after_s", 1.0))
    return BargeIn(text, after, _bool(loc, (*path, "reply"), raw.get("reply", True)))


def _build_hangup(loc: Located, path: YamlPath, raw: dict[str, Any], _: Mapping[str, str]) -> Step:
    if raw["hangup"] is not True:
        raise loc.error((*path, "hangup"), f"expected true, got {_got(raw['hangup'])}")
    return Hangup()


def _build_expect(loc: Located, path: YamlPath, raw: dict[str, Any], _: Mapping[str, str]) -> Step:
    return _expect(loc, (*path, "expect"), raw["expect"], top=False)


_Builder = Callable[[Located, YamlPath, dict[str, Any], Mapping[str, str]], Step]
_BUILDERS: Final[dict[str, tuple[_Builder, tuple[str, ...]]]] = {
    "say": (_build_say, ("pause_s", "reply")),
    "wait_agent": (_build_wait_agent, ("quiet_s", "timeout_s")),
    "wait": (_build_wait, ()),
    "silence": (_build_silence, ()),
    "dtmf": (_build_dtmf, ("interval_s",)),
    "backchannel": (_build_backchannel, ("after_s",)),
    "barge_in": (_build_barge_in, ("after_s", "reply")),
    "hangup": (_build_hangup, ()),
    "expect": (_build_expect, ()),
}


def _expect(loc: Located, path: YamlPath, raw: Any, *, top: bool) -> Expect:
    if not isinstance(raw, dict):
        raise loc.error(path, f"expected a mapping of checks, got {_got(raw)}")
    keys = _EXPECT_KEYS if top else _EXPECT_KEYS[1:]
    _check_keys(loc, path, raw, keys)
    hangup = None if "hangup" not in raw else _bool(loc, (*path, "hangup"), raw["hangup"])

    def phrases(key: str) -> tuple[str, ...]:
        value = raw.get(key, [])
        return tuple(_strings(loc, (*path, key), [value] if isinstance(value, str) else value))

    return Expect(hangup, phrases("said"), phrases("said_any"), phrases("not_said"))


# ---- vars ------------------------------------------------------------------------------------

_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def free_day(party_size: int, time: str, today: dt.date) -> str:
    """The weekday name of the first day in [tomorrow, today + 6] that is open and has a table
    for ``party_size`` free at ``time`` (HH:MM) in the demo restaurant."""
    from harken.agent.flow.demo_tools import check_availability

    for ahead in range(1, 7):
        day = today + dt.timedelta(days=ahead)
        if day.weekday() == 0:  # Luigi's is closed on Mondays
            continue
        if check_availability(party_size, day.isoformat(), time)["available"]:
            return _WEEKDAYS[day.weekday()]
    raise ConfigError(f"no free table for {party_size} at {time} in the next six days")


def _vars(loc: Located, raw: Any, today: dt.date) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise loc.error(("vars",), f"expected a mapping of names to values, got {_got(raw)}")
    out: dict[str, str] = {}
    for name, value in raw.items():
        p: YamlPath = ("vars", name)
        if not name.isidentifier():
            raise loc.error(p, "a variable name is one identifier", key=True)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out[name] = str(value)
            continue
        if not (isinstance(value, dict) and list(value) == ["free_day"]):
            raise loc.error(p, f"expected a string or {{free_day: {{...}}}}, got {_got(value)}")
        args = value["free_day"]
        q = (*p, "free_day")
        if not isinstance(args, dict):
            raise loc.error(q, f"expected {{party_size: N, time: 'HH:MM'}}, got {_got(args)}")
        _check_keys(loc, q, args, ("party_size", "time"))
        size = args.get("party_size", 2)
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= 12:
            raise loc.error((*q, "party_size"), f"expected an integer 1-12, got {_got(size)}")
        time = loc.raw((*q, "time")) or args.get("time", "19:00")
        if not isinstance(time, str) or not re.fullmatch(r"\d{1,2}:\d\d", time):
            raise loc.error((*q, "time"), f"expected HH:MM, got {_got(time)}")
        try:
            out[name] = free_day(size, time, today)
        except ConfigError as exc:
            raise loc.error(q, str(exc)) from None
    return out


def _text(loc: Located, path: YamlPath, raw: Any, values: Mapping[str, str]) -> str:
    text = _string(loc, path, raw)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise loc.error(path, f"bad template: {exc}") from None
    for f in fields:
        if f not in values:
            known = ", ".join(sorted(values)) or "none"
            raise loc.error(path, f"unknown variable {{{f}}}{_hint(f, values)}; vars: {known}")
    return text.format_map(dict(values)) if fields else text


# ---- scalar checks ---------------------------------------------------------------------------


def _got(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _hint(word: str, known: Mapping[str, Any] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_keys(loc: Located, path: YamlPath, raw: dict[str, Any], known: tuple[str, ...]) -> None:
    for key in raw:
        if key not in known:
            raise loc.error(
                (*path, key),
                f"unknown key {key!r}{_hint(key, known)}; known keys: {', '.join(known)}",
                key=True,
            )


def _string(loc: Located, path: YamlPath, value: Any) -> str:
    if not isinstance(value, str):
        raise loc.error(path, f"expected a string, got {_got(value)}")
    return value


def _strings(loc: Located, path: YamlPath, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise loc.error(path, f"expected a list of strings, got {_got(value)}")
    return [_string(loc, (*path, i), v) for i, v in enumerate(value)]


def _bool(loc: Located, path: YamlPath, value: Any) -> bool:
    if not isinstance(value, bool):
        raise loc.error(path, f"expected true or false, got {_got(value)}")
    return value


def _number(loc: Located, path: YamlPath, value: Any, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise loc.error(path, f"expected a number, got {_got(value)}")
    if value < 0 or (positive and value == 0):
        raise loc.error(
            path, f"expected a {'positive' if positive else 'non-negative'} number, got {value}"
        )
    return float(value)
