"""Caller scripts: parsing, templates and the errors a mistake gets (file:line:col: field)."""

from __future__ import annotations

import datetime as dt

import pytest

from harken.errors import ConfigError
from harken.sim.script import (
    Backchannel,
    BargeIn,
    Dtmf,
    Expect,
    Hangup,
    Say,
    Silence,
    Wait,
    WaitAgent,
    builtin_scenarios,
    free_day,
    load_scenario,
    split_pauses,
)

GOOD = """\
name: demo
description: every step
timeout_s: 30
tags: [quick]
vars:
  who: Anna
  day: {free_day: {party_size: 4, time: 19:00}}
steps:
  - wait_agent: true
    quiet_s: 0.5
  - say: "a table ... for four on {day}, for {who}"
    pause_s: 0.8
  - backchannel: uh-huh
    after_s: 1.5
  - barge_in: "wait, stop"
    reply: false
  - dtmf: 5551234567#
  - dtmf: 0
  - wait: 1.5
  - silence: 10
  - expect: {said: how many}
  - hangup: true
expect:
  hangup: true
  said_any: [goodbye, bye]
"""

SATURDAY = dt.date(2026, 11, 21)


def test_a_scenario_with_every_step() -> None:
    s = load_scenario(GOOD, filename="demo.yaml", today=SATURDAY)
    day = free_day(4, "19:00", SATURDAY)
    assert s.name == "demo" and s.timeout_s == 30 and s.tags == ("quick",)
    assert s.steps == (
        WaitAgent(quiet_s=0.5),
        Say(f"a table ... for four on {day}, for Anna", pause_s=0.8),
        Backchannel("uh-huh", after_s=1.5),
        BargeIn("wait, stop", reply=False),
        Dtmf("5551234567#"),
        Dtmf("0"),
        Wait(1.5),
        Silence(10.0),
        Expect(said=("how many",)),
        Hangup(),
    )
    assert s.expect == Expect(hangup=True, said_any=("goodbye", "bye"))
    assert s.texts() == ["a table", f"for four on {day}, for Anna", "uh-huh", "wait, stop"]


def test_split_pauses() -> None:
    assert split_pauses("I'd like a table ... for four") == ["I'd like a table", "for four"]
    assert split_pauses("... um ...  ... yes") == ["um", "yes"]


def test_free_day_skips_mondays_and_full_tables() -> None:
    from harken.agent.flow.demo_tools import check_availability

    for start in range(14):
        today = SATURDAY + dt.timedelta(days=start)
        name = free_day(2, "19:00", today)
        ahead = next(
            d for d in range(1, 7) if (today + dt.timedelta(days=d)).strftime("%A") == name
        )
        day = today + dt.timedelta(days=ahead)
        assert day.weekday() != 0
        assert check_availability(2, day.isoformat(), "19:00")["available"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "steps:\n  - sya: hi\n",
            "x.yaml:2:5: steps[0].sya: unknown step 'sya' (did you mean 'say'?)",
        ),
        (
            "steps:\n  - say: hi\n    pause: 1\n",
            "x.yaml:3:5: steps[0].pause: unknown key 'pause' (did you mean 'pause_s'?)",
        ),
        (
            "steps:\n  - say: hi\n    dtmf: '1'\n",
            "x.yaml:2:5: steps[0]: a step has one action, got 'say' and 'dtmf'",
        ),
        (
            "steps:\n  - barge_in: stop\n    after_s: soon\n",
            "x.yaml:3:14: steps[0].after_s: expected a number, got 'soon'",
        ),
        (
            "steps:\n  - wait: -1\n",
            "x.yaml:2:11: steps[0].wait: expected a positive number, got -1",
        ),
        (
            "steps:\n  - say: 'hi {nme}'\n",
            "x.yaml:2:10: steps[0].say: unknown variable {nme}; vars: none",
        ),
        (
            "steps:\n  - dtmf: '12x'\n",
            "x.yaml:2:11: steps[0].dtmf: keys are 0-9 * # A-D, got '12x'",
        ),
        (
            "steps:\n  - wait_agent: false\n",
            "x.yaml:2:17: steps[0].wait_agent: expected true, got false",
        ),
        (
            "steps:\n  - 'say hi'\n",
            "x.yaml:2:5: steps[0]: a step is a mapping like {say: 'hello'}, got 'say hi'",
        ),
        ("steps:\n  - say: '...'\n", "x.yaml:2:10: steps[0].say: nothing to say"),
        ("steps: []\n", "x.yaml:1:8: steps: expected a non-empty list of steps, got a list"),
        ("name: x\n", "x.yaml:1:1: missing 'steps'"),
        ("stpes: []\n", "x.yaml:1:1: stpes: unknown key 'stpes' (did you mean 'steps'?)"),
        (
            "steps:\n  - hangup: true\nexpect: {hangup: maybe}\n",
            "x.yaml:3:18: expect.hangup: expected true or false, got 'maybe'",
        ),
        (
            "steps:\n  - expect: {hangup: true}\n",
            "x.yaml:2:14: steps[0].expect.hangup: unknown key 'hangup'",
        ),
        (
            "vars: {d: {free_day: {time: late}}}\nsteps:\n  - hangup: true\n",
            "x.yaml:1:29: vars.d.free_day.time: expected HH:MM, got 'late'",
        ),
    ],
)
def test_mistakes_are_reported_with_position_and_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_scenario(text, filename="x.yaml")
    assert str(err.value).startswith(message), str(err.value)


def test_every_shipped_scenario_loads() -> None:
    shipped = builtin_scenarios(today=SATURDAY)
    assert len(shipped) >= 20
    assert len({s.name for s in shipped}) == len(shipped)
    kinds = {type(step).__name__ for s in shipped for step in s.steps}
    assert {"Say", "WaitAgent", "Dtmf", "Backchannel", "BargeIn", "Silence"} <= kinds
    assert any(len(step.parts) > 1 for s in shipped for step in s.steps if isinstance(step, Say))
