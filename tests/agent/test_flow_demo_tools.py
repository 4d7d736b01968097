"""The demo restaurant tools: deterministic results, spoken errors, and their JSON schemas."""

from __future__ import annotations

import inspect
from datetime import date, timedelta

import pytest

from harken.agent.flow import FlowAgent
from harken.agent.flow import demo_tools as dt
from harken.errors import HarkenError, ToolError

FRIDAY = "2025-03-07"


def free_slot(party_size: int = 2) -> tuple[str, str]:
    """A (date, time) the demo restaurant has free, found deterministically."""
    day = date(2025, 3, 4)
    for offset in range(14):
        d = (day + timedelta(days=offset)).isoformat()
        if date.fromisoformat(d).weekday() == 0:
            continue
        for t in ("19:00", "19:30", "20:00", "18:00"):
            if dt.check_availability(party_size, d, t)["available"]:
                return d, t
    raise AssertionError("no free table in two weeks")


def test_book_table_is_deterministic() -> None:
    d, t = free_slot()
    first = dt.book_table(2, d, t, "Ana Smith", "555 867 5309")
    second = dt.book_table(2, d, t, "ana smith", "555-867-5309")
    assert first["code"] == second["code"]
    assert len(first["code"]) == 6 and first["code"].isalnum() and first["code"].isupper()
    assert first["phone"] == "5558675309" and first["party_size"] == 2
    assert dt.book_table(3, d, t, "Ana Smith")["code"] != first["code"]


def test_book_table_accepts_a_numeric_string_party_size() -> None:
    d, t = free_slot()
    assert dt.book_table("2", d, t, "Bo")["party_size"] == 2  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"party_size": 0}, "1 to 12 people"),
        ({"party_size": 13}, "1 to 12 people"),
        ({"party_size": True}, "whole number"),
        ({"date": "friday"}, "YYYY-MM-DD"),
        ({"date": "2025-03-10"}, "closed on Mondays"),
        ({"time": "7pm"}, "HH:MM"),
        ({"time": "23:00"}, "we seat from 5 pm to 9:30 pm, not 11 pm"),
        ({"name": "  "}, "needs a name"),
        ({"phone": "12"}, "does not look like a phone number"),
    ],
)
def test_book_table_validation_errors(args: dict[str, object], message: str) -> None:
    d, t = free_slot()
    call = {"party_size": 2, "date": d, "time": t, "name": "Bo", "phone": None, **args}
    with pytest.raises(ToolError, match=message) as info:
        dt.book_table(**call)  # type: ignore[arg-type]
    assert isinstance(info.value, HarkenError)


def test_an_unavailable_table_offers_the_nearest_free_times() -> None:
    full = [
        (d.isoformat(), f"{h}:{m}")
        for d in (date(2025, 3, 4) + timedelta(days=i) for i in range(30))
        if d.weekday() != 0
        for h in ("17", "18", "19", "20", "21")
        for m in ("00", "30")
        if not dt.check_availability(2, d.isoformat(), f"{h}:{m}")["available"]
    ]
    assert full, "the demo should have some full slots"
    d, t = full[0]
    answer = dt.check_availability(2, d, t)
    assert answer["alternatives"] and t not in answer["alternatives"]
    with pytest.raises(ToolError, match=r"^we're fully booked at .*, but .* free$"):
        dt.book_table(2, d, t, "Bo")


def test_call_tool_dispatches_and_rejects() -> None:
    d, t = free_slot()
    assert dt.call_tool("check_availability", {"party_size": 2, "date": d, "time": t})["available"]
    with pytest.raises(ToolError, match="no demo tool named 'fly'"):
        dt.call_tool("fly", {})
    with pytest.raises(ToolError, match="bad arguments"):
        dt.call_tool("book_table", {"party": 2})


def test_schemas_match_the_functions() -> None:
    assert {s["function"]["name"] for s in dt.TOOL_SCHEMAS} == set(dt.DEMO_TOOLS)
    for schema in dt.TOOL_SCHEMAS:
        assert schema["type"] == "function"
        fn = schema["function"]
        params = inspect.signature(getattr(dt, fn["name"])).parameters
        assert set(fn["parameters"]["properties"]) == set(params)
        required = {n for n, p in params.items() if p.default is inspect.Parameter.empty}
        assert set(fn["parameters"]["required"]) == required
        assert fn["description"]


def test_the_builtin_flow_calls_only_demo_tools() -> None:
    assert FlowAgent.builtin().tool_names <= set(dt.DEMO_TOOLS)
