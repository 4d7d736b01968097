"""Tools the agent may call: a registry, argument checks, timeouts and cancellation.

A :class:`Tool` is a name, a description and a JSON-schema of its parameters (the OpenAI
``tools`` shape, so the same registry serves the LLM agent and the flow agent) plus a Python
handler, plain or ``async``. :meth:`ToolBox.run` checks the arguments against the schema's
``required`` list and basic types, runs the handler with a timeout, and always returns a
:class:`ToolOutcome` (a failing or slow tool is an outcome the agent can speak about, never an
exception that ends the call). Cancellation (the caller barged in) propagates: a tool marked
``interruptible=False`` is shielded so its side effect completes, and its outcome is still
recorded.

Two built-in tools are the agent's own call controls: ``end_call`` and ``transfer_call``. Their
handlers only record the request on the :class:`ToolContext`; the conversation engine hangs up
or transfers once the words before them have been heard.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harken.errors import ConfigError

__all__ = ["Tool", "ToolBox", "ToolContext", "ToolOutcome", "builtin_tools"]

Handler = Callable[..., Any]

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


@dataclass(slots=True)
class ToolContext:
    """What a tool may see and ask for: the call's id and metadata; hang-up / transfer requests."""

    call_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    hangup: str | None = None  # reason, once a tool asked to end the call
    transfer: str | None = None  # target, once a tool asked to transfer


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """The result of one tool call: ``result`` or ``error`` (a message the agent can speak)."""

    call_id: str
    name: str
    result: Any = None
    error: str | None = None
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Tool:
    """One callable tool. ``handler(**args)`` or ``handler(ctx, **args)`` when it takes a
    parameter named ``ctx``; it may be a coroutine function."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Handler
    timeout_s: float = 5.0
    interruptible: bool = True

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }

    def check(self, args: object) -> str | None:
        """Why ``args`` do not fit the schema (None when they do)."""
        if not isinstance(args, dict):
            return "arguments must be an object"
        props: dict[str, Any] = self.parameters.get("properties", {})
        missing = [k for k in self.parameters.get("required", ()) if k not in args]
        if missing:
            return f"missing required argument(s) {missing}"
        for key, value in args.items():
            spec = props.get(key)
            if spec is None:
                if self.parameters.get("additionalProperties", True) is False:
                    return f"unknown argument {key!r}"
                continue
            kind = spec.get("type")
            if value is None or kind is None:
                continue
            allowed = _JSON_TYPES.get(kind)
            if allowed is None:
                continue
            if isinstance(value, bool) and kind in ("integer", "number"):
                return f"argument {key!r} must be {kind}, got boolean"
            if not isinstance(value, allowed):
                return f"argument {key!r} must be {kind}, got {type(value).__name__}"
            if "enum" in spec and value not in spec["enum"]:
                return f"argument {key!r} must be one of {spec['enum']}"
        return None


class ToolBox:
    """The tools of one agent (shared by its calls; handlers must be safe to share)."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.calls = 0
        self.failures = 0
        self.timeouts = 0
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool) -> None:
        if tool.name in self._tools:
            raise ConfigError(f"tool {tool.name!r} is registered twice")
        self._tools[tool.name] = tool

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> frozenset[str]:
        return frozenset(self._tools)

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self._tools.values()]

    async def run(
        self, call_id: str, name: str, args: dict[str, Any], ctx: ToolContext
    ) -> ToolOutcome:
        """Run one tool call; every failure becomes an outcome with ``error`` set."""
        self.calls += 1
        t0 = time.perf_counter()
        tool = self._tools.get(name)
        if tool is None:
            self.failures += 1
            return ToolOutcome(call_id, name, error=f"no tool named {name!r}")
        problem = tool.check(args)
        if problem is not None:
            self.failures += 1
            return ToolOutcome(call_id, name, error=problem)
        try:
            work = asyncio.ensure_future(_invoke(tool, args, ctx))
            waiter = work if tool.interruptible else asyncio.shield(work)
            result = await asyncio.wait_for(waiter, tool.timeout_s)
        except TimeoutError:
            self.timeouts += 1
            self.failures += 1
            return ToolOutcome(
                call_id, name, error=f"timed out after {tool.timeout_s:g} s", elapsed_s=_since(t0)
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a tool's failure is an outcome for the agent
            self.failures += 1
            return ToolOutcome(
                call_id, name, error=f"{type(exc).__name__}: {exc}", elapsed_s=_since(t0)
            )
        return ToolOutcome(call_id, name, result=result, elapsed_s=_since(t0))


def _since(t0: float) -> float:
    return time.perf_counter() - t0


async def _invoke(tool: Tool, args: dict[str, Any], ctx: ToolContext) -> Any:
    handler = tool.handler
    kwargs = dict(args)
    if "ctx" in inspect.signature(handler).parameters:
        kwargs["ctx"] = ctx
    result = handler(**kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _end_call(ctx: ToolContext, reason: str = "conversation complete") -> dict[str, Any]:
    ctx.hangup = reason or "conversation complete"
    return {"ok": True, "note": "the call ends after your last words are heard"}


def _transfer_call(ctx: ToolContext, target: str, reason: str = "") -> dict[str, Any]:
    ctx.transfer = target
    return {"ok": True, "note": f"transferring to {target} after your last words"}


def builtin_tools(transfer_targets: Iterable[str] = ()) -> list[Tool]:
    """``end_call`` and ``transfer_call`` (the latter limited to ``transfer_targets`` if given)."""
    targets = list(transfer_targets)
    target_spec: dict[str, Any] = {"type": "string", "description": "where to transfer"}
    if targets:
        target_spec["enum"] = targets
    return [
        Tool(
            "end_call",
            "Hang up once your goodbye has been said. Use when the caller is done.",
            {
                "type": "object",
                "properties": {"reason": {"type": "string"}},
                "required": [],
            },
            _end_call,
            interruptible=False,
        ),
        Tool(
            "transfer_call",
            "Transfer the caller to a person or another number after a short notice.",
            {
                "type": "object",
                "properties": {"target": target_spec, "reason": {"type": "string"}},
                "required": ["target"],
            },
            _transfer_call,
            interruptible=False,
        ),
    ]
