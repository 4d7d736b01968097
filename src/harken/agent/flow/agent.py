"""The flow agent: a flow compiled once per process, and a session per call."""

from __future__ import annotations

import re
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from harken.agent.flow.compiled import Flow
from harken.agent.flow.model import compile_flow
from harken.agent.flow.session import FlowSession
from harken.agent.flow.templates import Template
from harken.errors import ConfigError
from harken.yamlconf import load_yaml

__all__ = ["FlowAgent", "builtin_flows"]

_BUILTIN_NAME = re.compile(r"[a-z][a-z0-9_]*")


def _flows_dir() -> Traversable:
    return resources.files("harken.agent").joinpath("flows")


def builtin_flows() -> tuple[str, ...]:
    """The names of the flows shipped with harken (``harken/agent/flows/<name>.yaml``)."""
    return tuple(
        sorted(p.name[: -len(".yaml")] for p in _flows_dir().iterdir() if p.name.endswith(".yaml"))
    )


class FlowAgent:
    """A compiled flow; thread-safe and shareable, since sessions hold all per-call state."""

    __slots__ = ("flow", "tool_names", "transfer_targets")

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.tool_names: frozenset[str] = flow.tool_names
        """The tools the flow calls (the engine checks that they exist)."""
        self.transfer_targets: frozenset[str] = flow.transfer_targets
        """Every target the flow may transfer a call to."""

    @property
    def name(self) -> str:
        """The flow's ``name``."""
        return self.flow.name

    @classmethod
    def from_yaml(cls, source: str | Path, *, filename: str | None = None) -> FlowAgent:
        """Compile a flow from a file or from YAML text.

        A :class:`~pathlib.Path`, or a one-line string ending in ``.yaml``/``.yml``, is read as a
        file; any other string is the YAML itself (``filename`` names it in error messages).
        Every mistake raises ``ConfigError`` reading ``"<file>:<line>:<col>: <field>: ..."``.
        """
        return cls(compile_flow(load_yaml(source, filename=filename)))

    @classmethod
    def builtin(cls, name: str = "restaurant") -> FlowAgent:
        """Compile a flow shipped with harken, by name (see :func:`builtin_flows`)."""
        if not _BUILTIN_NAME.fullmatch(name):
            raise ConfigError(f"built-in flow name {name!r} is not a plain name")
        resource = _flows_dir().joinpath(f"{name}.yaml")
        if not resource.is_file():
            raise ConfigError(f"no built-in flow {name!r}; built-in flows: {builtin_flows()}")
        text = resource.read_text(encoding="utf-8")
        return cls(compile_flow(load_yaml(text, filename=f"harken/agent/flows/{name}.yaml")))

    def session(self, *, now: datetime | None = None) -> FlowSession:
        """A fresh conversation; ``now`` anchors relative dates ("tomorrow"); default: the clock."""
        return FlowSession(self.flow, now if now is not None else datetime.now())

    def fixed_lines(self) -> list[str]:
        """Every line the flow can say that has no placeholder (greeting, prompts, answers,
        fallbacks, endings), in flow order, once each: what a TTS cache can render ahead."""
        f = self.flow
        groups: list[tuple[Template, ...]] = [
            f.greeting, f.goodbye, f.help, f.pending, f.fallback_prompts,
            f.fallback_end.say, f.idle_end.say,
        ]  # fmt: skip
        groups += [g.say for g in f.globals]
        for node in f.nodes.values():
            groups += [node.say, node.reprompt, node.help, node.confirm or (), node.confirm_no]
            groups += [t for slot in node.slots for t in (slot.prompt, slot.reprompt)]
        lines = [t.source for group in groups for t in group if not t.fields]
        return list(dict.fromkeys(line for line in lines if line.strip()))
