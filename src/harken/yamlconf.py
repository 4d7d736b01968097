"""YAML with positions, and dataclass building that names the file, line and field of a mistake.

:func:`load_yaml` parses one YAML document into plain Python data (dicts, lists, scalars) and
remembers where every value and every mapping key starts, so later checks can point at the
source: ``flow.yaml:14:12``. :func:`build_dataclass` turns that data into nested frozen
dataclasses, checking each field against its annotation; every mistake raises
:class:`~harken.errors.ConfigError` with the message::

    <file>:<line>:<col>: <dotted.field.path>: expected <what>, got <what>

for example ``agent.yaml:14:12: agent.turn.silence_ms: expected a number, got 'fast'``. Unknown
keys are rejected with the list of known ones and, when one is close, ``did you mean 'x'?``.

Three YAML 1.1 traps are defused:

* Mapping keys are always strings, exactly as written (``yes:`` is the key ``"yes"``, not True).
* Where a field expects a string, a plain (unquoted) scalar is read as its source text, so
  ``17:00`` stays ``"17:00"`` (YAML 1.1 reads it as the sexagesimal integer 1020), ``yes`` stays
  ``"yes"`` and ``0123`` stays ``"0123"``. The same holds for string ``Literal`` choices.
* Duplicate keys in one mapping are an error instead of the last one silently winning.

Supported annotations: nested dataclasses, ``int`` (bool is not an int), ``float`` (an int is
accepted), ``str``, ``bool``, ``X | None``, unions of differently shaped types (``str |
tuple[str, ...]``: the value's shape picks the member), ``list[X]``, ``tuple[X, ...]``,
``dict[str, X]``, ``Literal[...]`` and ``Any``. Missing fields take their defaults; a field
without one is required. A ``ValueError`` raised by a dataclass's ``__post_init__`` becomes a
``ConfigError`` at that mapping's position.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, cast, get_args, get_origin, get_type_hints

import yaml

from harken.errors import ConfigError

__all__ = ["Located", "YamlPath", "build_dataclass", "format_path", "load_yaml"]

T = TypeVar("T")
YamlPath = tuple[str | int, ...]
"""A path into loaded data: mapping keys and list indices (``("nodes", "main", "slots", 0)``)."""


def format_path(path: Sequence[str | int]) -> str:
    """``("nodes", "main", "slots", 0, "type")`` -> ``"nodes.main.slots[0].type"``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class Located:
    """Loaded YAML data plus the source position of every value and mapping key.

    ``data`` is plain Python data. Positions are 1-based ``(line, column)`` pairs; asking for a
    path that has none (a default, a value built later) answers with its nearest ancestor's.
    """

    __slots__ = ("_keys", "_raw", "_values", "data", "filename")

    def __init__(
        self,
        data: Any,
        filename: str,
        values: dict[YamlPath, tuple[int, int]],
        keys: dict[YamlPath, tuple[int, int]],
        raw: dict[YamlPath, str],
    ) -> None:
        self.data = data
        self.filename = filename
        self._values = values
        self._keys = keys
        self._raw = raw

    def mark(self, path: Sequence[str | int] = (), *, key: bool = False) -> tuple[int, int]:
        """The (line, column) of the value at ``path`` (of its key with ``key=True``)."""
        p = tuple(path)
        if key and p in self._keys:
            return self._keys[p]
        while p:
            if p in self._values:
                return self._values[p]
            p = p[:-1]
        return self._values.get((), (1, 1))

    def where(self, path: Sequence[str | int] = (), *, key: bool = False) -> str:
        """``"file.yaml:12:5"`` for the value at ``path`` (or its key with ``key=True``)."""
        line, col = self.mark(path, key=key)
        return f"{self.filename}:{line}:{col}"

    def raw(self, path: Sequence[str | int]) -> str | None:
        """The source text of the plain (unquoted) scalar at ``path``; None for anything else."""
        return self._raw.get(tuple(path))

    def get(self, path: Sequence[str | int] = ()) -> Any:
        """The data at ``path``; raises ``ConfigError`` if the path does not exist."""
        value = self.data
        for i, part in enumerate(path):
            try:
                value = value[part]
            except (KeyError, IndexError, TypeError):
                raise self.error(path[: i + 1], "no such key") from None
        return value

    def error(self, path: Sequence[str | int], message: str, *, key: bool = False) -> ConfigError:
        """A ``ConfigError`` reading ``"<file>:<line>:<col>: <dotted.path>: <message>"``."""
        dotted = format_path(path)
        prefix = f"{self.where(path, key=key)}: "
        return ConfigError(f"{prefix}{dotted}: {message}" if dotted else f"{prefix}{message}")


def _looks_like_path(text: str) -> bool:
    return "\n" not in text and text.strip().endswith((".yaml", ".yml"))


def load_yaml(text_or_path: str | Path, *, filename: str | None = None) -> Located:
    """Parse one YAML document, keeping positions.

    A :class:`~pathlib.Path`, or a one-line string ending in ``.yaml``/``.yml``, is read as a file
    (``filename`` defaults to the path); any other string is YAML text (``filename`` defaults to
    ``"<string>"``). An empty document loads as None. Unreadable files, invalid YAML, non-string
    mapping keys, duplicate keys and recursive aliases raise ``ConfigError``.
    """
    if isinstance(text_or_path, Path) or _looks_like_path(text_or_path):
        path = Path(text_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        name = filename or str(path)
    else:
        text = text_or_path
        name = filename or "<string>"
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ConfigError(f"{where}: invalid YAML: {exc.problem or exc.context}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}: invalid YAML: {exc}") from exc
    if root is None:
        return Located(None, name, {(): (1, 1)}, {}, {})
    return _Walker(name).run(root)


class _Walker:
    """Turns a composed node tree into plain data while recording positions."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.values: dict[YamlPath, tuple[int, int]] = {}
        self.keys: dict[YamlPath, tuple[int, int]] = {}
        self.raw: dict[YamlPath, str] = {}
        self.loader = yaml.SafeLoader("")
        self.stack: set[int] = set()

    def run(self, root: yaml.Node) -> Located:
        data = self.walk(root, ())
        return Located(data, self.filename, self.values, self.keys, self.raw)

    def fail(self, node: yaml.Node, path: YamlPath, message: str) -> ConfigError:
        mark = node.start_mark
        dotted = format_path(path)
        where = f"{self.filename}:{mark.line + 1}:{mark.column + 1}"
        return ConfigError(f"{where}: {dotted}: {message}" if dotted else f"{where}: {message}")

    def walk(self, node: yaml.Node, path: YamlPath) -> Any:
        self.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.ScalarNode):
            try:
                value = self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as exc:
                raise self.fail(node, path, f"invalid value: {exc}") from exc
            if node.style is None:
                self.raw[path] = node.value
            return value
        if id(node) in self.stack:
            raise self.fail(node, path, "recursive alias")
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self.mapping(node, path)
            raise self.fail(node, path, f"unsupported YAML node {type(node).__name__}")
        finally:
            self.stack.discard(id(node))

    def mapping(self, node: yaml.MappingNode, path: YamlPath) -> dict[str, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, path, "mapping keys must be plain strings")
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            if key_node.value in seen:
                key = str(key_node.value)
                raise self.fail(key_node, (*path, key), f"duplicate key {key!r}")
            seen.add(key_node.value)
        try:
            self.loader.flatten_mapping(node)  # `<<` merges in place; explicit keys come last
        except yaml.YAMLError as exc:
            raise self.fail(node, path, f"invalid merge: {exc}") from exc
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.fail(key_node, path, "mapping keys must be plain strings")
            key = str(key_node.value)
            self.keys[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            out[key] = self.walk(value_node, (*path, key))  # a later (explicit) key wins
        return out


# -- building dataclasses ------------------------------------------------------------------------


def build_dataclass(cls: type[T], located: Located, path: Sequence[str | int] = ()) -> T:
    """Build ``cls`` (a dataclass) from the data at ``path`` in ``located``, checking every field.

    An empty document builds ``cls`` from its defaults. Errors raise ``ConfigError`` naming the
    file, line, column and dotted field path (see the module docstring).
    """
    p = tuple(path)
    value = located.get(p)
    if value is None and not p:
        value = {}
    return cast(T, _build(cls, value, located, p))


@functools.lru_cache(maxsize=256)
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def describe(tp: Any) -> str:
    """How an expected type reads in an error: ``"a number"``, ``"one of 'any', 'all'"``."""
    origin = get_origin(tp)
    if tp is Any:
        return "anything"
    if tp is type(None):
        return "null"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if _is_union(tp):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", repr(tp))


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str | int | float):
        return repr(value)
    return str(value)


def _shape(tp: Any) -> str:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp) or origin is dict:
        return "mapping"
    if origin in (list, tuple):
        return "list"
    if tp is type(None):
        return "null"
    return "scalar"


def _value_shape(value: Any) -> str:
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return "null" if value is None else "scalar"


def _expected(loc: Located, path: YamlPath, tp: Any, value: Any) -> ConfigError:
    return loc.error(path, f"expected {describe(tp)}, got {_got(value)}")


def _build(tp: Any, value: Any, loc: Located, path: YamlPath) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, loc, path)
    if _is_union(tp):
        return _build_union(tp, value, loc, path)
    if origin is Literal:
        return _build_literal(tp, value, loc, path)
    if origin in (list, tuple):
        return _build_sequence(tp, value, loc, path)
    if origin is dict:
        return _build_dict(tp, value, loc, path)
    if tp is type(None):
        if value is None:
            return None
        raise _expected(loc, path, tp, value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _expected(loc, path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _expected(loc, path, tp, value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise _expected(loc, path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        raw = loc.raw(path)
        if raw is not None and value is not None:
            return raw
        raise _expected(loc, path, tp, value)
    raise loc.error(path, f"unsupported field type {tp!r}")


def _build_dataclass(cls: type, value: Any, loc: Located, path: YamlPath) -> Any:
    if not isinstance(value, dict):
        raise _expected(loc, path, cls, value)
    hints = _hints(cls)
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = [f.name for f in fields]
    for key in value:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise loc.error(
                (*path, key),
                f"unknown key {key!r}{hint}; known keys: {', '.join(names)}",
                key=True,
            )
    kwargs: dict[str, Any] = {}
    for f in fields:
        if f.name in value:
            kwargs[f.name] = _build(hints[f.name], value[f.name], loc, (*path, f.name))
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise loc.error(path, f"missing required key {f.name!r}")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise loc.error(path, str(exc)) from exc


def _build_union(tp: Any, value: Any, loc: Located, path: YamlPath) -> Any:
    members = get_args(tp)
    if value is None and type(None) in members:
        return None
    shape = _value_shape(value)
    fitting = [m for m in members if m is Any or _shape(m) == shape]
    if len(fitting) == 1:
        return _build(fitting[0], value, loc, path)
    for member in fitting:
        try:
            return _build(member, value, loc, path)
        except ConfigError:
            continue
    raise _expected(loc, path, tp, value)


def _build_literal(tp: Any, value: Any, loc: Located, path: YamlPath) -> Any:
    choices = get_args(tp)
    if value in choices and type(value) in {type(c) for c in choices}:
        return value
    raw = loc.raw(path)
    if raw is not None and raw in choices:
        return raw
    names = [c for c in choices if isinstance(c, str)]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise loc.error(path, f"expected {describe(tp)}, got {_got(value)}{hint}")


def _build_sequence(tp: Any, value: Any, loc: Located, path: YamlPath) -> Any:
    if not isinstance(value, list):
        raise _expected(loc, path, tp, value)
    args = get_args(tp)
    if get_origin(tp) is list:
        item = args[0] if args else Any
        return [_build(item, v, loc, (*path, i)) for i, v in enumerate(value)]
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_build(args[0], v, loc, (*path, i)) for i, v in enumerate(value))
    if args and len(args) != len(value):
        raise loc.error(path, f"expected a list of {len(args)} items, got {len(value)}")
    if not args:
        return tuple(value)
    return tuple(
        _build(a, v, loc, (*path, i)) for i, (a, v) in enumerate(zip(args, value, strict=True))
    )


def _build_dict(tp: Any, value: Any, loc: Located, path: YamlPath) -> Any:
    if not isinstance(value, dict):
        raise _expected(loc, path, tp, value)
    args = get_args(tp)
    item = args[1] if len(args) == 2 else Any
    return {k: _build(item, v, loc, (*path, k)) for k, v in value.items()}
