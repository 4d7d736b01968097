"""harken.yamlconf: YAML with positions, and dataclass building with precise errors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from harken.errors import ConfigError
from harken.yamlconf import build_dataclass, format_path, load_yaml


@dataclass(frozen=True, slots=True)
class Turn:
    silence_ms: float = 500.0
    mode: Literal["fast", "slow"] = "fast"
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    turn: Turn = field(default_factory=Turn)
    retries: int = 3
    tags: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)
    hours: tuple[str, str] | None = None
    note: str | None = None
    say: str | tuple[str, ...] = ()
    extra: Any = None
    items: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Root:
    agent: Agent


def build(text: str) -> Root:
    return build_dataclass(Root, load_yaml(text, filename="agent.yaml"))


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        build(text)
    return str(info.value)


def test_builds_nested_dataclasses_with_defaults() -> None:
    root = build(
        "agent:\n"
        "  name: luigi\n"
        "  turn: {silence_ms: 700}\n"
        "  tags: [a, b]\n"
        "  limits: {calls: 5}\n"
        "  items: [1, 2]\n"
    )
    assert root.agent.name == "luigi"
    assert root.agent.turn == Turn(silence_ms=700.0)
    assert isinstance(root.agent.turn.silence_ms, float)  # an int is accepted for a float
    assert root.agent.tags == ("a", "b")
    assert root.agent.limits == {"calls": 5}
    assert root.agent.items == [1, 2]
    assert root.agent.retries == 3 and root.agent.note is None


def test_the_example_error_message_from_the_docs() -> None:
    text = "agent:\n  name: x\n  turn:\n    silence_ms: fast\n"
    assert error_of(text) == "agent.yaml:4:17: agent.turn.silence_ms: expected a number, got 'fast'"


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("retries: 2.5", "agent.retries: expected an integer, got 2.5"),
        ("retries: true", "agent.retries: expected an integer, got true"),
        ("turn: {enabled: 1}", "agent.turn.enabled: expected true or false, got 1"),
        ("turn: {silence_ms: false}", "agent.turn.silence_ms: expected a number, got false"),
        ("tags: a", "agent.tags: expected a list, got 'a'"),
        ("tags: [a, [b]]", "agent.tags[1]: expected a string, got a list"),
        ("limits: [1]", "agent.limits: expected a mapping, got a list"),
        ("limits: {calls: x}", "agent.limits.calls: expected an integer, got 'x'"),
        ("turn: 5", "agent.turn: expected a mapping, got 5"),
        ("note: [x]", "agent.note: expected a string or null, got a list"),
        ("hours: [a]", "agent.hours: expected a list of 2 items, got 1"),
        ("turn: {mode: null}", "agent.turn.mode: expected one of 'fast', 'slow', got null"),
        (
            "turn: {mode: slwo}",
            "agent.turn.mode: expected one of 'fast', 'slow', got 'slwo' (did you mean 'slow'?)",
        ),
    ],
)
def test_type_errors_name_file_line_and_field(snippet: str, expected: str) -> None:
    message = error_of(f"agent:\n  name: x\n  {snippet}\n")
    assert message.startswith("agent.yaml:3:"), message
    assert message.endswith(expected), message


def test_unknown_key_suggests_the_close_one_and_lists_the_known() -> None:
    message = error_of("agent:\n  name: x\n  retires: 2\n")
    assert message.startswith("agent.yaml:3:3: agent.retires: unknown key 'retires'")
    assert "(did you mean 'retries'?)" in message
    assert "known keys: name, turn, retries" in message


def test_unknown_key_far_from_every_known_one_has_no_suggestion() -> None:
    message = error_of("agent:\n  name: x\n  zzzzzz: 2\n")
    assert "did you mean" not in message


def test_missing_required_key_points_at_the_mapping() -> None:
    assert error_of("agent:\n  retries: 1\n") == (
        "agent.yaml:2:3: agent: missing required key 'name'"
    )


def test_plain_scalars_stay_as_written_where_strings_are_expected() -> None:
    # YAML 1.1 reads 17:00 as 1020, yes as True, 0123 as 123
    root = build("agent:\n  name: yes\n  hours: [17:00, 22:00]\n  tags: [0123, on, 1.50]\n")
    assert root.agent.name == "yes"
    assert root.agent.hours == ("17:00", "22:00")
    assert root.agent.tags == ("0123", "on", "1.50")


def test_null_is_not_a_string() -> None:
    assert error_of("agent:\n  name: null\n") == (
        "agent.yaml:2:9: agent.name: expected a string, got null"
    )


def test_quoted_numbers_are_not_integers() -> None:
    assert error_of('agent:\n  name: x\n  retries: "2"\n').endswith("got '2'")


def test_union_shape_picks_the_member() -> None:
    assert build("agent: {name: x, say: hello}").agent.say == "hello"
    assert build("agent: {name: x, say: [a, b]}").agent.say == ("a", "b")
    assert build("agent: {name: x, extra: {any: [thing]}}").agent.extra == {"any": ["thing"]}


def test_mapping_keys_are_strings_as_written() -> None:
    located = load_yaml("yes: 1\n3: 2\nnull: 3\n")
    assert located.data == {"yes": 1, "3": 2, "null": 3}


def test_duplicate_keys_are_an_error() -> None:
    with pytest.raises(ConfigError, match=r"^x\.yaml:3:1: a: duplicate key 'a'$"):
        load_yaml("a: 1\nb: 2\na: 3\n", filename="x.yaml")


def test_merge_keys_override_without_duplicate_errors() -> None:
    located = load_yaml("base: &b {x: 1, y: 2}\nchild:\n  <<: *b\n  y: 3\n")
    assert located.data["child"] == {"x": 1, "y": 3}


def test_positions_of_values_and_keys() -> None:
    located = load_yaml("nodes:\n  main:\n    slots:\n      - name: n\n        type: number\n")
    assert located.where(("nodes", "main", "slots", 0, "type")) == "<string>:5:15"
    assert located.where(("nodes", "main", "slots", 0, "type"), key=True) == "<string>:5:9"
    assert located.where(("nodes", "main", "slots", 0)) == "<string>:4:9"
    # a path without a position answers with its nearest ancestor's
    assert located.where(("nodes", "main", "slots", 0, "missing")) == "<string>:4:9"
    assert located.raw(("nodes", "main", "slots", 0, "type")) == "number"


def test_error_helper_formats_like_build_errors() -> None:
    located = load_yaml("a:\n  b: [1, 2]\n", filename="f.yaml")
    err = located.error(("a", "b", 1), "too big")
    assert str(err) == "f.yaml:2:10: a.b[1]: too big"


def test_invalid_yaml_names_the_position() -> None:
    with pytest.raises(ConfigError, match=r"^bad\.yaml:2:\d+: invalid YAML: "):
        load_yaml("a: [1,\nb: }\n", filename="bad.yaml")


def test_recursive_alias_is_rejected() -> None:
    with pytest.raises(ConfigError, match="recursive alias"):
        load_yaml("a: &x [1, *x]\n")


def test_empty_document_builds_defaults() -> None:
    assert build_dataclass(Turn, load_yaml("")) == Turn()
    assert load_yaml("# only a comment\n").data is None


def test_reads_files_by_path(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("agent:\n  name: x\n  retries: no\n")
    for source in (path, str(path)):
        with pytest.raises(ConfigError) as info:
            build_dataclass(Root, load_yaml(source))
        assert str(info.value).startswith(f"{path}:3:12: agent.retries: expected an integer")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_yaml(tmp_path / "nope.yaml")


def test_post_init_value_errors_become_positioned_config_errors() -> None:
    @dataclass(frozen=True, slots=True)
    class Range:
        lo: int = 0
        hi: int = 1

        def __post_init__(self) -> None:
            if self.lo > self.hi:
                raise ValueError("lo must not exceed hi")

    with pytest.raises(ConfigError, match=re.escape("r.yaml:1:1: lo must not exceed hi")):
        build_dataclass(Range, load_yaml("lo: 5\nhi: 2\n", filename="r.yaml"))


def test_build_at_a_sub_path() -> None:
    located = load_yaml("outer:\n  turn: {silence_ms: 10}\n")
    assert build_dataclass(Turn, located, ("outer", "turn")).silence_ms == 10.0


def test_format_path() -> None:
    assert format_path(("nodes", "main", "slots", 0, "type")) == "nodes.main.slots[0].type"
    assert format_path(()) == ""
    assert format_path((0, "a")) == "[0].a"
