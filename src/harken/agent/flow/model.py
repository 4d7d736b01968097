"""Compiled flows: the YAML checked beyond its types and turned into runtime structures.

:func:`compile_flow` builds the :mod:`~harken.agent.flow.schema` dataclasses from a
:class:`~harken.yamlconf.Located` document (types and keys checked there), then checks everything
that refers to something else, each error naming its file, line and field:

* ``start``, transition targets, ``next`` targets and ``on_result`` targets are nodes;
* slot types exist; a slot name is one identifier, not ``result``/``error``, unique in its node
  and of one type across the flow; ``assume`` only on time slots, ``options`` on (and only on)
  choice slots; ``validate`` keys suit the slot type; ``between`` is two ``HH:MM`` times;
* templates parse and name only slots (plus ``result``/``error`` in ``on_result``);
* transition intents are defined (in the node, the flow's ``intents``, or the built-in
  ``yes``/``no``); patterns compile and their named groups are slots; every intent has something
  to match with; conditions parse and name slots;
* a node's actions are one of ``tool``/``hangup``/``transfer`` each, at most one tool, and an
  ending action last; a tool node has ``on_result`` (and nothing else that continues the flow);
* no node is a dead end, and a ``next`` list ends with an unconditional branch.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from harken.agent.flow.compiled import Action, Branch, Ending, Flow, GlobalIntent, Node, Slot
from harken.agent.flow.defaults import BUILTIN_YES_NO, DEFAULT_GLOBALS
from harken.agent.flow.match import Matcher
from harken.agent.flow.rules import MESSAGE_FIELDS, RULES_BY_TYPE, Rules
from harken.agent.flow.schema import (
    BranchDef,
    FlowDef,
    GlobalIntentDef,
    IntentDef,
    NodeDef,
    SlotDef,
    Text,
)
from harken.agent.flow.slots import SLOT_TYPES
from harken.agent.flow.slots_time import WEEKDAYS, minutes_of
from harken.agent.flow.templates import Condition, Template, parse_condition, parse_template
from harken.agent.flow.text import SlotSpec, content_tokens, phrase_tokens
from harken.errors import ConfigError
from harken.yamlconf import Located, build_dataclass

__all__ = ["compile_flow"]

Path = tuple[str | int, ...]
Templates = tuple[Template, ...]
_IDENT = re.compile(r"[A-Za-z_]\w*")
_DEFAULT_ALIASES = {
    "party_size": ("people", "party size", "number of people", "guests", "party"),
    "date": ("date", "day"),
    "time": ("time",),
    "name": ("name",),
    "phone": ("phone", "phone number"),
}


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def compile_flow(located: Located) -> Flow:
    """Check and compile a loaded flow document; raises ``ConfigError`` with positions."""
    return _Compiler(located).run()


class _Compiler:
    def __init__(self, loc: Located) -> None:
        self.loc = loc
        self.fd = build_dataclass(FlowDef, loc)
        self.slots: dict[str, Slot] = {}
        self.tools: set[str] = set()

    def err(self, path: Path, message: str, *, key: bool = False) -> ConfigError:
        """An error at ``path``; a whole mapping (a node, an intent) is pointed at by its key."""
        if not key and path and isinstance(path[-1], str):
            try:
                key = isinstance(self.loc.get(path), dict)
            except ConfigError:
                key = False
        return self.loc.error(path, message, key=key)

    def run(self) -> Flow:
        fd = self.fd
        if not fd.nodes:
            raise self.err(("nodes",), "a flow needs at least one node")
        start = fd.start if fd.start is not None else next(iter(fd.nodes))
        self.node_ref(start, ("start",))
        self.threshold = self.unit_interval(fd.fuzzy_threshold, ("fuzzy_threshold",))
        for name, node in fd.nodes.items():  # every slot first: templates may name later ones
            self.collect_slots(name, node)
        library = {n: self.matcher(n, d, ("intents", n)) for n, d in fd.intents.items()}
        nodes = {n: self.node(n, d, library) for n, d in fd.nodes.items()}
        self.check_loops(nodes)
        fb, idle = fd.fallback, fd.idle
        if not fb.prompts:
            raise self.err(("fallback", "prompts"), "needs at least one prompt")
        if fb.max < 1 or idle.max < 1:
            raise self.err(("fallback" if fb.max < 1 else "idle", "max"), "must be at least 1")
        fallback_end = self.ending(fb.action, fb.target, fb.say, ("fallback",))
        idle_end = self.ending(idle.action, idle.target, idle.say, ("idle",))
        globals_ = self.globals()
        return Flow(
            name=fd.name,
            start=start,
            nodes=nodes,
            slots=dict(self.slots),
            greeting=self.text(fd.greeting, ("greeting",)),
            goodbye=self.text(fd.goodbye, ("goodbye",)),
            help=self.text(fd.help, ("help",)),
            pending=self.text(fd.pending, ("pending",)),
            fallback_prompts=self.text(fb.prompts, ("fallback", "prompts")),
            fallback_max=fb.max,
            fallback_end=fallback_end,
            idle_max=idle.max,
            idle_end=idle_end,
            globals=globals_,
            tool_names=frozenset(self.tools),
            transfer_targets=frozenset(
                [a.name for n in nodes.values() for a in n.actions if a.kind == "transfer"]
                + [g.target for g in globals_ if g.action == "transfer"]
                + [e.target for e in (fallback_end, idle_end) if e.action == "transfer"]
            ),
        )

    def check_loops(self, nodes: Mapping[str, Node]) -> None:
        """Reject a cycle of nodes that only pass on (no slots, no actions): it would never wait
        for the caller."""
        passing = [n for n, node in nodes.items() if node.next and not (node.slots or node.actions)]
        for first in passing:
            path, current = [first], first
            while True:
                targets = [b.to for b in nodes[current].next if b.to in passing]
                if not targets:
                    break
                current = targets[0]
                if current in path:
                    loop = " -> ".join([*path[path.index(current) :], current])
                    raise self.err(("nodes", current, "next"), f"a loop that never waits: {loop}")
                path.append(current)

    # -- small helpers ---------------------------------------------------------------------------

    def unit_interval(self, value: float, path: Path) -> float:
        if not 0.0 < value <= 1.0:
            raise self.err(path, f"expected a number in (0, 1], got {value}")
        return value

    def node_ref(self, name: str, path: Path) -> str:
        if name not in self.fd.nodes:
            hint = _did_you_mean(name, self.fd.nodes)
            raise self.err(path, f"no node named {name!r}{hint}; nodes: {', '.join(self.fd.nodes)}")
        return name

    def slot_ref(self, name: str, path: Path) -> str:
        if name not in self.slots:
            hint = _did_you_mean(name, self.slots)
            known = ", ".join(self.slots) or "(none)"
            raise self.err(path, f"no slot named {name!r}{hint}; slots: {known}")
        return name

    def text(self, text: Text, path: Path, extra: Iterable[str] = ()) -> Templates:
        items = (text,) if isinstance(text, str) else text
        allowed = set(self.slots) | set(extra)
        out = []
        for i, item in enumerate(items):
            p = path if isinstance(text, str) else (*path, i)
            try:
                template = parse_template(item)
            except ValueError as exc:
                raise self.err(p, str(exc)) from None
            for field in template.fields:
                if field[0] not in allowed:
                    hint = _did_you_mean(field[0], allowed)
                    raise self.err(p, f"template names {{{'.'.join(field)}}}, not a slot{hint}")
            out.append(template)
        return tuple(out)

    def conditions(self, when: str | tuple[str, ...], path: Path) -> tuple[Condition, ...]:
        items = (when,) if isinstance(when, str) else when
        out = []
        for i, item in enumerate(items):
            p = path if isinstance(when, str) else (*path, i)
            try:
                cond = parse_condition(item)
            except ValueError as exc:
                raise self.err(p, str(exc)) from None
            self.slot_ref(cond.slot, p)
            out.append(cond)
        return tuple(out)

    def clears(self, names: tuple[str, ...], path: Path) -> tuple[str, ...]:
        return tuple(self.slot_ref(n, (*path, i)) for i, n in enumerate(names))

    def ending(self, action: str, target: str, say: Text, path: Path) -> Ending:
        if action == "transfer" and not target:
            raise self.err((*path, "action"), "action 'transfer' needs a target")
        return Ending(action, target, self.text(say, (*path, "say")))

    # -- intents ---------------------------------------------------------------------------------

    def matcher(self, name: str, d: IntentDef | GlobalIntentDef, path: Path) -> Matcher:
        keywords = []
        for i, kw in enumerate(d.keywords):
            toks = phrase_tokens(kw)
            if not toks:
                raise self.err((*path, "keywords", i), f"keyword {kw!r} has no words")
            keywords.append(toks)
        patterns = []
        for i, source in enumerate(d.patterns):
            try:
                pattern = re.compile(source, re.IGNORECASE)
            except re.error as exc:
                raise self.err(
                    (*path, "patterns", i), f"invalid regular expression: {exc}"
                ) from None
            for group in pattern.groupindex:
                self.slot_ref(group, (*path, "patterns", i))
            patterns.append(pattern)
        examples = []
        for example in d.examples:
            toks = phrase_tokens(example)
            examples.append(tuple(content_tokens(toks) or toks))
        if not (keywords or patterns or any(examples)):
            raise self.err(path, f"intent {name!r} has no keywords, patterns or examples")
        threshold = self.threshold
        if d.threshold is not None:
            threshold = self.unit_interval(d.threshold, (*path, "threshold"))
        return Matcher(
            name=name,
            keywords=tuple(keywords),
            mode=d.match,
            exclude=tuple(t for t in (phrase_tokens(x) for x in d.exclude) if t),
            patterns=tuple(patterns),
            examples=tuple(e for e in examples if e),
            threshold=threshold,
        )

    def globals(self) -> tuple[GlobalIntent, ...]:
        merged: dict[str, tuple[GlobalIntentDef, Path]] = {
            n: (d, ("global_intents",)) for n, d in DEFAULT_GLOBALS.items()
        }
        for n, d in self.fd.global_intents.items():
            merged[n] = (d, ("global_intents", n))
        out = []
        for name, (d, path) in merged.items():
            if not d.enabled:
                continue
            if d.action == "transfer" and not d.target:
                raise self.err((*path, "action"), "action 'transfer' needs a target")
            if d.action == "answer" and not d.say:
                raise self.err((*path, "action"), "action 'answer' needs something to say")
            if any(c not in "0123456789*#" for c in d.dtmf):
                raise self.err((*path, "dtmf"), f"expected keypad keys (0-9 * #), got {d.dtmf!r}")
            out.append(
                GlobalIntent(
                    matcher=self.matcher(name, d, path),
                    action=d.action,
                    say=self.text(d.say, (*path, "say")),
                    target=d.target,
                    reason=d.reason or f"caller intent {name}",
                    dtmf=d.dtmf,
                )
            )
        return tuple(out)

    # -- slots -----------------------------------------------------------------------------------

    def collect_slots(self, node: str, nd: NodeDef) -> None:
        seen: set[str] = set()
        for i, sd in enumerate(nd.slots):
            path: Path = ("nodes", node, "slots", i)
            if not _IDENT.fullmatch(sd.name) or sd.name in ("result", "error"):
                raise self.err(
                    (*path, "name"),
                    f"slot name {sd.name!r} must be one identifier (not result/error)",
                )
            if sd.name in seen:
                raise self.err((*path, "name"), f"slot {sd.name!r} appears twice in this node")
            seen.add(sd.name)
            if sd.type not in SLOT_TYPES:
                hint = _did_you_mean(sd.type, SLOT_TYPES)
                raise self.err(
                    (*path, "type"),
                    f"unknown slot type {sd.type!r}{hint}; known types: {', '.join(SLOT_TYPES)}",
                )
            earlier = self.slots.get(sd.name)
            if earlier is not None and earlier.type != sd.type:
                raise self.err(
                    (*path, "type"), f"slot {sd.name!r} is a {earlier.type} elsewhere in this flow"
                )
            slot = self.slot(sd, path)
            if earlier is None:
                self.slots[sd.name] = slot

    def slot(self, sd: SlotDef, path: Path) -> Slot:
        if sd.assume != "none" and sd.type != "time":
            raise self.err((*path, "assume"), "only time slots take 'assume'")
        if (sd.type == "choice") != bool(sd.options):
            message = (
                "choice slots need options"
                if sd.type == "choice"
                else "only choice slots take options"
            )
            raise self.err((*path, "options" if sd.options else "type"), message)
        threshold = self.fd.fuzzy_threshold
        if sd.threshold is not None:
            threshold = self.unit_interval(sd.threshold, (*path, "threshold"))
        rules = self.rules(sd, (*path, "validate"))
        options = tuple(
            (value, tuple(t for t in (phrase_tokens(p) for p in (value, *syn)) if t))
            for value, syn in sd.options.items()
        )
        spec = SlotSpec(
            type=sd.type,
            assume=sd.assume,
            window=rules.window,
            options=options,
            threshold=threshold,
            min_digits=min(3, rules.min_digits),
        )
        aliases = sd.aliases or _DEFAULT_ALIASES.get(sd.type, ()) or (sd.name.replace("_", " "),)
        return Slot(
            name=sd.name,
            type=sd.type,
            spec=spec,
            prompt=self.text(sd.prompt, (*path, "prompt"), extra=self.fd_slot_names()),
            reprompt=self.text(sd.reprompt, (*path, "reprompt"), extra=self.fd_slot_names()),
            required=sd.required,
            rules=rules,
            aliases=tuple(t for t in (phrase_tokens(a) for a in aliases) if t),
        )

    def fd_slot_names(self) -> set[str]:
        return {s.name for nd in self.fd.nodes.values() for s in nd.slots}

    def rules(self, sd: SlotDef, path: Path) -> Rules:
        v = sd.validate
        if v is None:
            return Rules()
        allowed = RULES_BY_TYPE[sd.type]
        for key in (
            "min",
            "max",
            "between",
            "not_past",
            "max_days_ahead",
            "min_digits",
            "max_digits",
            "pattern",
        ):
            if getattr(v, key) is not None and key not in allowed:
                raise self.err(
                    (*path, key), f"{key!r} does not apply to a {sd.type} slot", key=True
                )
        if v.closed_on and "closed_on" not in allowed:
            raise self.err(
                (*path, "closed_on"), f"'closed_on' does not apply to a {sd.type} slot", key=True
            )
        window = None
        if v.between is not None:
            try:
                window = (minutes_of(v.between[0]), minutes_of(v.between[1]))
            except ValueError as exc:
                raise self.err((*path, "between"), str(exc)) from None
        closed = set()
        for i, day in enumerate(v.closed_on):
            if day.lower() not in WEEKDAYS:
                hint = _did_you_mean(day.lower(), WEEKDAYS)
                raise self.err(
                    (*path, "closed_on", i), f"expected a weekday name, got {day!r}{hint}"
                )
            closed.add(WEEKDAYS[day.lower()])
        pattern = None
        if v.pattern is not None:
            try:
                pattern = re.compile(v.pattern, re.IGNORECASE)
            except re.error as exc:
                raise self.err((*path, "pattern"), f"invalid regular expression: {exc}") from None
        message = None
        if v.message is not None:
            (message,) = self.text(v.message, (*path, "message"), extra=MESSAGE_FIELDS)
        return Rules(
            min=v.min,
            max=v.max,
            window=window,
            not_past=True if v.not_past is None else v.not_past,
            max_days_ahead=v.max_days_ahead,
            closed_on=frozenset(closed),
            min_digits=7 if v.min_digits is None else v.min_digits,
            max_digits=15 if v.max_digits is None else v.max_digits,
            pattern=pattern,
            message=message,
        )

    # -- nodes -----------------------------------------------------------------------------------

    def node(self, name: str, nd: NodeDef, library: Mapping[str, Matcher]) -> Node:
        path: Path = ("nodes", name)
        slots = tuple(self.slot(sd, (*path, "slots", i)) for i, sd in enumerate(nd.slots))
        local = {n: self.matcher(n, d, (*path, "intents", n)) for n, d in nd.intents.items()}
        transitions: dict[str, list[Branch]] = {}
        for i, td in enumerate(nd.transitions):
            tp: Path = (*path, "transitions", i)
            if (
                td.intent not in local
                and td.intent not in library
                and td.intent not in BUILTIN_YES_NO
            ):
                known = [*local, *library, *BUILTIN_YES_NO]
                hint = _did_you_mean(td.intent, known)
                raise self.err(
                    (*tp, "intent"),
                    f"no intent named {td.intent!r}{hint}; intents: {', '.join(known)}",
                )
            if td.intent not in local:
                local[td.intent] = library.get(td.intent) or Matcher(
                    td.intent, yes_no=BUILTIN_YES_NO[td.intent]
                )
            transitions.setdefault(td.intent, []).append(
                Branch(
                    to=self.node_ref(td.to, (*tp, "to")),
                    when=self.conditions(td.when, (*tp, "when")),
                    clear=self.clears(td.clear, (*tp, "clear")),
                    say=self.text(td.say, (*tp, "say")),
                )
            )
        actions = self.actions(nd, path)
        has_tool = any(a.kind == "tool" for a in actions)
        on_result = on_error = None
        if nd.on_result is not None:
            rp: Path = (*path, "on_result")
            if not has_tool:
                raise self.err(rp, "on_result needs a tool action in this node", key=True)
            if nd.on_result.next is None:
                raise self.err(rp, "on_result needs 'next' (where to go after the tool answered)")
            on_result = Branch(
                to=self.node_ref(nd.on_result.next, (*rp, "next")),
                clear=self.clears(nd.on_result.clear, (*rp, "clear")),
                say=self.text(nd.on_result.say, (*rp, "say"), extra=("result",)),
            )
            oe = nd.on_result.on_error
            if oe is not None:
                if oe.next is None:
                    raise self.err((*rp, "on_error"), "on_error needs 'next'")
                on_error = Branch(
                    to=self.node_ref(oe.next, (*rp, "on_error", "next")),
                    clear=self.clears(oe.clear, (*rp, "on_error", "clear")),
                    say=self.text(oe.say, (*rp, "on_error", "say"), extra=("error",)),
                )
        elif has_tool:
            raise self.err(path, "a node that calls a tool needs on_result")
        if has_tool and (nd.slots or nd.confirm or nd.next is not None or nd.transitions):
            raise self.err(path, "a node that calls a tool continues only through on_result")
        nexts = self.nexts(nd.next, (*path, "next"))
        ends = any(a.kind != "tool" for a in actions)
        if nd.confirm is not None and (not slots or not nexts):
            raise self.err(
                (*path, "confirm"), "confirm needs slots to read back and a 'next'", key=True
            )
        if slots and not nexts and not transitions:
            raise self.err(path, "this node collects slots but has no 'next' or transitions")
        if not (slots or transitions or nexts or actions):
            raise self.err(path, "this node is a dead end: no slots, transitions, next or actions")
        if ends and (slots or transitions or nexts):
            raise self.err(path, "a node that hangs up or transfers cannot continue the flow")
        return Node(
            name=name,
            say=self.text(nd.say, (*path, "say")),
            reprompt=self.text(nd.reprompt, (*path, "reprompt")),
            help=self.text(nd.help, (*path, "help")),
            slots=slots,
            matchers=tuple(local.values()),
            transitions=tuple((k, tuple(v)) for k, v in transitions.items()),
            confirm=self.text(nd.confirm.say, (*path, "confirm", "say")) if nd.confirm else None,
            confirm_no=self.text(nd.confirm.on_no, (*path, "confirm", "on_no"))
            if nd.confirm
            else (),
            actions=actions,
            on_result=on_result,
            on_error=on_error,
            next=nexts,
        )

    def nexts(self, value: str | tuple[BranchDef, ...] | None, path: Path) -> tuple[Branch, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return (Branch(to=self.node_ref(value, path)),)
        out = []
        for i, bd in enumerate(value):
            out.append(
                Branch(
                    to=self.node_ref(bd.to, (*path, i, "to")),
                    when=self.conditions(bd.when, (*path, i, "when")),
                    clear=self.clears(bd.clear, (*path, i, "clear")),
                )
            )
        if not out:
            raise self.err(path, "expected at least one branch")
        if out[-1].when:
            raise self.err((*path, len(out) - 1), "the last branch needs no 'when' (the default)")
        return tuple(out)

    def actions(self, nd: NodeDef, path: Path) -> tuple[Action, ...]:
        out: list[Action] = []
        for i, ad in enumerate(nd.actions):
            ap: Path = (*path, "actions", i)
            kinds = [k for k in ("tool", "hangup", "transfer") if getattr(ad, k) is not None]
            if len(kinds) != 1:
                raise self.err(ap, "an action needs exactly one of 'tool', 'hangup', 'transfer'")
            if out and out[-1].kind != "tool":
                raise self.err(ap, "nothing can follow a hangup or transfer action")
            if ad.args and kinds[0] != "tool":
                raise self.err((*ap, "args"), "only tool actions take args", key=True)
            if ad.tool is not None:
                if any(a.kind == "tool" for a in out):
                    raise self.err(ap, "a node calls at most one tool")
                if not _IDENT.fullmatch(ad.tool):
                    raise self.err((*ap, "tool"), f"tool name {ad.tool!r} must be one identifier")
                self.tools.add(ad.tool)
                args = tuple((k, self.arg(v, (*ap, "args", k))) for k, v in ad.args.items())
                out.append(Action("tool", ad.tool, args, ad.reason))
            elif ad.hangup is not None:
                out.append(Action("hangup", "", (), ad.hangup or ad.reason or "flow ended"))
            else:
                target = ad.transfer or ""
                out.append(Action("transfer", target, (), ad.reason or f"transfer to {target}"))
        if len(out) > 1 and out[0].kind == "tool":
            raise self.err((*path, "actions", 1), "a tool action must be the node's only action")
        return tuple(out)

    def arg(self, value: Any, path: Path) -> Any:
        if isinstance(value, str):
            (template,) = self.text(value, path)
            return template
        return value
