"""Compiled flows: what a session runs (built by :func:`harken.agent.flow.model.compile_flow`).

Every text is a tuple of parsed :class:`~harken.agent.flow.templates.Template` (one per sentence),
every intent a :class:`~harken.agent.flow.match.Matcher`, every condition parsed; node names in
branches are known to exist. Nothing here is read from YAML again at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harken.agent.flow.match import Matcher
from harken.agent.flow.rules import Rules
from harken.agent.flow.templates import Condition, Template
from harken.agent.flow.text import SlotSpec

__all__ = [
    "Action",
    "Branch",
    "Ending",
    "Flow",
    "GlobalIntent",
    "Node",
    "Slot",
    "all_slot_specs",
    "slot_candidates",
]

Templates = tuple[Template, ...]


@dataclass(frozen=True, slots=True)
class Slot:
    name: str
    type: str
    spec: SlotSpec
    prompt: Templates
    reprompt: Templates
    required: bool
    rules: Rules
    aliases: tuple[tuple[str, ...], ...]  # phrases that name the slot ("the time")


@dataclass(frozen=True, slots=True)
class Branch:
    to: str
    when: tuple[Condition, ...] = ()
    clear: tuple[str, ...] = ()
    say: Templates = ()


@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # "tool" | "hangup" | "transfer"
    name: str  # the tool's name, the transfer target, or "" for a hangup
    args: tuple[tuple[str, Any], ...] = ()  # tool arguments: Template or a plain value
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Ending:
    """How fallbacks, silence or a failed tool end a call: say, then transfer or hang up."""

    action: str  # "transfer" | "hangup" | "none"
    target: str
    say: Templates


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    say: Templates
    reprompt: Templates
    help: Templates
    slots: tuple[Slot, ...]
    matchers: tuple[Matcher, ...]
    transitions: tuple[tuple[str, tuple[Branch, ...]], ...]
    confirm: Templates | None
    confirm_no: Templates
    actions: tuple[Action, ...]
    on_result: Branch | None
    on_error: Branch | None
    next: tuple[Branch, ...]

    def branches(self, intent: str) -> tuple[Branch, ...]:
        for name, branches in self.transitions:
            if name == intent:
                return branches
        return ()


@dataclass(frozen=True, slots=True)
class GlobalIntent:
    matcher: Matcher
    action: str
    say: Templates
    target: str
    reason: str
    dtmf: str


@dataclass(frozen=True, slots=True)
class Flow:
    name: str
    start: str
    nodes: Mapping[str, Node]
    slots: Mapping[str, Slot]  # every slot of the flow, by name (its first definition)
    greeting: Templates
    goodbye: Templates
    help: Templates
    pending: Templates
    fallback_prompts: Templates
    fallback_max: int
    fallback_end: Ending
    idle_max: int
    idle_end: Ending
    globals: tuple[GlobalIntent, ...]
    tool_names: frozenset[str]
    transfer_targets: frozenset[str]  # every target the flow may transfer to


def slot_candidates(
    flow: Flow, node: Node, filled: Mapping[str, Any]
) -> list[tuple[str, SlotSpec]]:
    """The slots to look for in an utterance at ``node``: its own (even if filled, so a caller can
    correct them) and every other unfilled slot of the flow (never a text or yes/no slot)."""
    out: list[tuple[str, SlotSpec]] = [(s.name, s.spec) for s in node.slots]
    own = {s.name for s in node.slots}
    for s in flow.slots.values():
        if s.name not in own and filled.get(s.name) is None and s.type not in ("text", "yes_no"):
            out.append((s.name, s.spec))
    return out


def all_slot_specs(flow: Flow, names: Sequence[str] | None = None) -> list[tuple[str, SlotSpec]]:
    """Every slot of the flow (or the named ones), as extraction candidates."""
    return [(s.name, s.spec) for s in flow.slots.values() if names is None or s.name in names]
