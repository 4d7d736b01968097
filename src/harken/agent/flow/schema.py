"""The flow YAML as frozen dataclasses: exactly the keys a flow file may contain.

These are built by :func:`harken.yamlconf.build_dataclass`, which checks every key and type with
file positions; :mod:`harken.agent.flow.model` then checks what types cannot express (that
nodes, slots and intents referred to exist, templates parse, patterns compile) and compiles the
result. ``docs/flow-agent.md`` describes every key.

A text field typed ``str | tuple[str, ...]`` takes one string or a list of strings; each string
is one sentence or clause to speak, in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ActionDef",
    "BranchDef",
    "ConfirmDef",
    "FallbackDef",
    "FlowDef",
    "GlobalIntentDef",
    "IdleDef",
    "IntentDef",
    "NodeDef",
    "OnResultDef",
    "ResultBranchDef",
    "SlotDef",
    "TransitionDef",
    "ValidateDef",
]

Text = str | tuple[str, ...]
Conditions = str | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ValidateDef:
    """A slot's ``validate:`` block (which keys apply depends on the slot type)."""

    min: float | None = None
    max: float | None = None
    between: tuple[str, str] | None = None
    not_past: bool | None = None
    max_days_ahead: int | None = None
    closed_on: tuple[str, ...] = ()
    min_digits: int | None = None
    max_digits: int | None = None
    pattern: str | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class SlotDef:
    """One value a node collects."""

    name: str
    type: str
    prompt: Text
    reprompt: Text = ()
    required: bool = True
    validate: ValidateDef | None = None
    assume: Literal["am", "pm", "none"] = "none"
    options: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class IntentDef:
    """How an intent is recognised in caller text."""

    keywords: tuple[str, ...] = ()
    match: Literal["any", "all"] = "any"
    exclude: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    threshold: float | None = None


@dataclass(frozen=True, slots=True)
class GlobalIntentDef:
    """An intent available in every node, and what it does."""

    action: Literal["answer", "repeat", "help", "transfer", "goodbye", "restart"]
    keywords: tuple[str, ...] = ()
    match: Literal["any", "all"] = "any"
    exclude: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    threshold: float | None = None
    say: Text = ()
    target: str = ""
    reason: str = ""
    dtmf: str = ""
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class TransitionDef:
    """``intent`` recognised in this node -> go to ``to`` (if every ``when`` holds)."""

    intent: str
    to: str
    when: Conditions = ()
    clear: tuple[str, ...] = ()
    say: Text = ()


@dataclass(frozen=True, slots=True)
class BranchDef:
    """One branch of a node's ``next``: go to ``to`` if every ``when`` holds."""

    to: str
    when: Conditions = ()
    clear: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConfirmDef:
    """Read the collected slots back and expect yes or no."""

    say: Text
    on_no: Text = "Okay, what should I change?"


@dataclass(frozen=True, slots=True)
class ActionDef:
    """One entry action: exactly one of ``tool``, ``hangup`` or ``transfer``."""

    tool: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    hangup: str | None = None
    transfer: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ResultBranchDef:
    """What to say and where to go after a tool call failed."""

    say: Text = ()
    next: str | None = None
    clear: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OnResultDef:
    """What to say and where to go after a tool call answered."""

    say: Text = ()
    next: str | None = None
    clear: tuple[str, ...] = ()
    on_error: ResultBranchDef | None = None


@dataclass(frozen=True, slots=True)
class NodeDef:
    """One step of the conversation."""

    say: Text = ()
    reprompt: Text = ()
    help: Text = ()
    slots: tuple[SlotDef, ...] = ()
    intents: dict[str, IntentDef] = field(default_factory=dict)
    transitions: tuple[TransitionDef, ...] = ()
    confirm: ConfirmDef | None = None
    actions: tuple[ActionDef, ...] = ()
    on_result: OnResultDef | None = None
    next: str | tuple[BranchDef, ...] | None = None


@dataclass(frozen=True, slots=True)
class FallbackDef:
    """What happens when the caller's words match nothing."""

    prompts: tuple[str, ...] = ("Sorry, I didn't catch that.",)
    max: int = 3
    action: Literal["transfer", "hangup", "none"] = "hangup"
    target: str = ""
    say: Text = "Sorry, I'm having trouble understanding. Please call back later. Goodbye."


@dataclass(frozen=True, slots=True)
class IdleDef:
    """What happens when the caller stays silent."""

    max: int = 3
    action: Literal["transfer", "hangup", "none"] = "hangup"
    target: str = ""
    say: Text = "I'll let you go now. Goodbye."


@dataclass(frozen=True, slots=True)
class FlowDef:
    """A whole flow file."""

    name: str
    nodes: dict[str, NodeDef]
    start: str | None = None
    greeting: Text = ()
    goodbye: Text = "Goodbye!"
    help: Text = "I can help with the things I asked about, or put you through to a person."
    pending: Text = "One moment, please."
    fuzzy_threshold: float = 0.8
    fallback: FallbackDef = field(default_factory=FallbackDef)
    idle: IdleDef = field(default_factory=IdleDef)
    intents: dict[str, IntentDef] = field(default_factory=dict)
    global_intents: dict[str, GlobalIntentDef] = field(default_factory=dict)
