"""One call's run through a compiled flow: text, keys, silence and tool results in; turns out.

The session is a small state machine, synchronous and free of I/O:

``node``
    in a node; ``asked`` is the slot whose prompt was spoken last (None while the node waits for
    an intent). Each utterance is matched against the node's intents and the global ones, and
    searched for slot values (see :mod:`~harken.agent.flow.match`).
``confirm``
    the node's slots were read back; yes moves on, no asks what to change, and any slot value
    said ("no, make it 6 people") replaces the old one and is read back again.
``correct``
    after a plain no: a slot value replaces the old one; naming a slot ("the time") clears it and
    asks for it again.
``pending``
    a :class:`~harken.agent.flow.turn.ToolRequest` is out; caller text, keys and silence are
    answered with the flow's ``pending`` line and otherwise dropped (not queued) until
    :meth:`FlowSession.on_tool_result` brings the answer.
``done``
    a hangup or transfer was requested; every input answers an empty turn.

Decision order for an utterance in a node: a node intent (keywords or pattern) takes its
transition; a global intent does its action (answer, help, repeat, transfer, goodbye, restart);
slot values fill slots (values that break a ``validate`` rule are not stored, their message is
spoken); an optional slot answered with "no" is skipped; otherwise it is a miss. Slot values found
next to an intent are stored too. A fuzzy intent gives way when the utterance answered the slot
just asked for. Misses in a row speak the fallback prompts in turn, then the fallback ending.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from harken.agent.flow import entry
from harken.agent.flow.compiled import (
    Branch,
    Ending,
    Flow,
    GlobalIntent,
    Node,
    Slot,
    all_slot_specs,
    slot_candidates,
)
from harken.agent.flow.match import IntentHit, best_intent, extract, parse_with
from harken.agent.flow.rules import check
from harken.agent.flow.slots import spoken, yes_no_of
from harken.agent.flow.templates import Template, holds_all
from harken.agent.flow.text import Utterance, find_phrase, normalize
from harken.agent.flow.turn import FlowAction, FlowTurn, HangupRequest, ToolRequest, TransferRequest

__all__ = ["FlowSession"]

_MAX_HOPS = 32  # node entries within one turn (a guard against `next` loops)
_ERROR_PREFIX = re.compile(r"^(?:[A-Z]\w*(?:Error|Exception): )+")  # "ToolError: ..." reads badly


class _Out:
    """The turn being built."""

    __slots__ = ("actions", "intent", "matched_by", "notes", "say")

    def __init__(self) -> None:
        self.say: list[str] = []
        self.notes: list[str] = []  # rule messages, spoken just before the next question
        self.actions: list[FlowAction] = []
        self.intent: str | None = None
        self.matched_by: str | None = None

    def ask(self, lines: Sequence[str]) -> None:
        """Speak ``lines`` after any pending notes."""
        self.say += self.notes
        self.notes.clear()
        self.say += lines


def _dig(value: Any, path: Sequence[str]) -> Any:
    for part in path:
        value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
        if value is None:
            return None
    return value


class FlowSession:
    """One caller's conversation with a flow; create it with ``FlowAgent.session()``."""

    def __init__(self, flow: Flow, now: datetime) -> None:
        self._flow = flow
        self._today = now.date()
        self._node: Node = flow.nodes[flow.start]
        self._slots: dict[str, Any] = {}
        self._skipped: set[str] = set()
        self._mode = "node"
        self._asked: Slot | None = None
        self._confirmed = False
        self._misses = 0
        self._last_say: tuple[str, ...] = ()
        self._question: tuple[str, ...] = ()
        self._pending: str | None = None
        self._calls = 0
        self._dtmf = ""
        self._started = False
        self._done = False

    # -- public API ------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once a hangup or transfer has been requested."""
        return self._done

    @property
    def state(self) -> dict[str, Any]:
        """A snapshot for logs and tests: node, slots, done, mode, asked slot, pending call."""
        return {
            "node": self._node.name,
            "slots": dict(self._slots),
            "done": self._done,
            "mode": "done" if self._done else self._mode,
            "asked": self._asked.name if self._asked is not None else None,
            "pending": self._pending,
        }

    def start(self) -> FlowTurn:
        """The greeting and the start node's prompt (a second call repeats what was last said)."""
        out = _Out()
        if self._started:
            out.say.extend(self._last_say)
            return self._finish(out)
        self._started = True
        out.say += self._render(self._flow.greeting)
        self._enter(self._flow.start, out, 0)
        return self._finish(out)

    def on_text(self, text: str) -> FlowTurn:
        """A final caller transcript; empty or blank text answers an empty turn."""
        if self._done or self._pending is not None:
            return self._idle_turn()
        utt = normalize(text)
        out = _Out()
        if utt.toks:
            self._handle(utt, out)
        return self._finish(out)

    def on_dtmf(self, digits: str) -> FlowTurn:
        """Keypad keys, one or several at a time.

        While a phone slot is asked the keys are its digits: ``#`` ends the entry, as does
        reaching the slot's ``max_digits`` or a batch of several keys that is long enough; ``*``
        clears what was typed; ``#`` alone skips an optional phone slot. While a number slot is
        asked the keys are the number; while a yes/no answer is expected ``1`` is yes and ``2``
        is no; while a choice is asked ``N`` picks the N-th option. Otherwise a key bound to a
        global intent (``0`` operator, ``*`` repeat) runs it, and any other key is a miss.
        """
        if self._done or self._pending is not None:
            return self._idle_turn()
        keys = "".join(c for c in digits if c in "0123456789*#")
        out = _Out()
        if keys:
            self._keys(keys, out)
        return self._finish(out)

    def keys_complete(self, keys: str) -> bool:
        """Are these keys (typed so far, no ``#`` yet) a whole entry now? (see
        :func:`~harken.agent.flow.entry.keys_complete`)"""
        return entry.keys_complete(self, keys)

    def text_entry(self, text: str) -> bool | None:
        """Is this transcript so far a whole answer to what was asked (True), nothing the flow
        can act on yet (False), or can't it tell (None)? Changes nothing; see
        :func:`~harken.agent.flow.entry.text_entry`."""
        return entry.text_entry(self, text)

    def on_idle(self, count: int) -> FlowTurn:
        """The caller was silent; ``count`` is the number of idle prompts so far (1, 2, ...).

        Answers the asked slot's or the node's ``reprompt`` variant for ``count`` (the last one
        repeats), else the current question; past the flow's ``idle.max`` the idle ending.
        Typed phone digits waiting for ``#`` are taken as complete when long enough.
        """
        if self._done or self._pending is not None:
            return self._idle_turn()
        out = _Out()
        asked = self._asked if self._mode == "node" else None
        if asked is not None and asked.type == "phone" and self._dtmf:
            body, self._dtmf = self._dtmf, ""
            if len(body) >= asked.rules.min_digits:
                self._answer({asked.name: body}, out)
                return self._finish(out)
        if count > self._flow.idle_max:
            self._end_with(self._flow.idle_end, "caller silent", out)
            return self._finish(out)
        variants: Sequence[Template] = ()
        if asked is not None:
            variants = asked.reprompt
        elif self._mode == "node":
            variants = self._node.reprompt
        if variants:
            out.ask(self._render((variants[min(max(count, 1), len(variants)) - 1],)))
        else:
            out.ask(self._question)
        return self._finish(out)

    def on_tool_result(self, call_id: str, result: Any, error: str | None = None) -> FlowTurn:
        """The answer to the pending ``ToolRequest`` ``call_id`` (any other id is ignored).

        Without ``error`` the node's ``on_result`` is spoken (``{result.code}`` reads the result's
        ``code`` key or attribute) and its ``next`` entered; a result lacking a field the template
        reads counts as an error. With an error ``on_result.on_error`` runs (``{error}`` is the
        message); without one the flow says sorry and takes its fallback ending.
        """
        if self._done or self._pending is None or call_id != self._pending:
            return FlowTurn(node=self._node.name)
        self._pending = None
        self._mode = "node"
        node, out = self._node, _Out()
        ok = node.on_result
        if error is None and ok is not None:
            fields = [f for t in ok.say for f in t.fields if f[0] == "result"]
            missing = [f for f in fields if _dig({"result": result}, f) is None]
            if missing:
                error = f"the result has no {'.'.join(missing[0][1:]) or 'value'}"
        if error is None and ok is not None:
            self._take(ok, out, 0, {"result": result})
        elif node.on_error is not None:
            self._take(node.on_error, out, 0, {"error": _ERROR_PREFIX.sub("", error or "failed")})
        else:
            out.say.append("Sorry, something went wrong on our side.")
            self._end_with(self._flow.fallback_end, f"tool failed: {error}", out, restart=True)
        return self._finish(out)

    # -- turn plumbing ---------------------------------------------------------------------------

    def _finish(self, out: _Out) -> FlowTurn:
        out.ask(())
        if out.say:
            self._last_say = tuple(out.say)
        return FlowTurn(
            say=tuple(out.say),
            actions=tuple(out.actions),
            node=self._node.name,
            intent=out.intent,
            matched_by=out.matched_by,
        )

    def _idle_turn(self) -> FlowTurn:
        if self._done:
            return FlowTurn(node=self._node.name)
        return FlowTurn(say=tuple(self._render(self._flow.pending)), node=self._node.name)

    def _render(
        self, templates: Sequence[Template], extra: Mapping[str, Any] | None = None
    ) -> list[str]:
        def lookup(field: tuple[str, ...]) -> str:
            if extra is not None and field[0] in extra:
                value = _dig(extra, field)
                return "" if value is None else str(value)
            slot = self._flow.slots.get(field[0])
            if slot is None or self._slots.get(field[0]) is None:
                return ""
            return spoken(slot.type, self._slots[field[0]])

        return [s for s in (t.render(lookup) for t in templates) if s]

    def _slot(self, name: str) -> Slot:
        for slot in self._node.slots:
            if slot.name == name:
                return slot
        return self._flow.slots[name]

    # -- moving through nodes --------------------------------------------------------------------

    def _enter(self, name: str, out: _Out, hops: int) -> None:
        node = self._flow.nodes[name]
        self._node, self._mode, self._asked, self._confirmed = node, "node", None, False
        self._dtmf = ""
        out.say += self._render(node.say)
        for action in node.actions:
            if action.kind == "tool":
                self._calls += 1
                call_id = f"{self._flow.name}-{self._calls}"
                args = {k: self._arg(v) for k, v in action.args}
                out.actions.append(ToolRequest(call_id, action.name, args))
                self._pending, self._mode = call_id, "pending"
                return
            if action.kind == "hangup":
                out.actions.append(HangupRequest(action.reason))
            else:
                out.actions.append(TransferRequest(action.name, action.reason))
            self._done = True
            return
        self._advance(out, hops)

    def _arg(self, value: Any) -> Any:
        if not isinstance(value, Template):
            return value
        single = value.single
        if single is not None and len(single) == 1 and single[0] in self._flow.slots:
            return self._slots.get(single[0])
        return value.render(
            lambda f: "" if self._slots.get(f[0]) is None else str(self._slots[f[0]])
        )

    def _advance(self, out: _Out, hops: int) -> None:
        """Ask the next slot, read back, or follow ``next``; else wait for an intent."""
        node = self._node
        for slot in node.slots:
            if self._slots.get(slot.name) is None and (
                slot.required or slot.name not in self._skipped
            ):
                self._mode, self._asked = "node", slot
                self._question = tuple(self._render(slot.prompt))
                out.ask(self._question)
                return
        self._asked = None
        if node.confirm is not None and not self._confirmed:
            self._mode = "confirm"
            self._question = tuple(self._render(node.confirm))
            out.ask(self._question)
            return
        branch = self._pick(node.next)
        if branch is not None and hops < _MAX_HOPS:
            self._take(branch, out, hops + 1)
            return
        self._mode = "node"
        self._question = tuple(self._render(node.reprompt[:1]) or self._render(node.say))

    def _pick(self, branches: Sequence[Branch]) -> Branch | None:
        for branch in branches:
            if holds_all(branch.when, self._slots):
                return branch
        return None

    def _take(
        self, branch: Branch, out: _Out, hops: int, extra: Mapping[str, Any] | None = None
    ) -> None:
        for name in branch.clear:
            self._slots.pop(name, None)
            self._skipped.discard(name)
        out.say += self._render(branch.say, extra)
        self._enter(branch.to, out, hops)

    def _end_with(self, ending: Ending, reason: str, out: _Out, *, restart: bool = False) -> None:
        out.ask(self._render(ending.say))
        if ending.action == "transfer":
            out.actions.append(TransferRequest(ending.target, reason))
            self._done = True
        elif ending.action == "hangup":
            out.actions.append(HangupRequest(reason))
            self._done = True
        elif restart:
            self._misses = 0
            self._enter(self._flow.start, out, 0)
        else:
            self._misses = 0
            out.ask(self._question)

    # -- understanding input ---------------------------------------------------------------------

    def _intent(self, utt: Utterance) -> IntentHit | None:
        """The best intent hit of ``utt`` at this node (its own intents and the global ones)."""
        return best_intent(self._node.matchers, [g.matcher for g in self._flow.globals], utt)

    def _values(self, utt: Utterance, hit: IntentHit | None) -> dict[str, Any]:
        """Slot values in ``utt``; the asked slot is read leniently unless a strong intent hit."""
        asked = self._asked
        lenient = asked if asked is not None and (hit is None or not hit.strong) else None
        return extract(
            utt,
            slot_candidates(self._flow, self._node, self._slots),
            (lenient.name, lenient.spec) if lenient is not None else None,
            self._today,
        )

    def _handle(self, utt: Utterance, out: _Out) -> None:
        hit = self._intent(utt)
        if self._mode in ("confirm", "correct"):
            self._on_confirm(utt, hit, out)
            return
        asked = self._asked
        found = self._values(utt, hit)
        if hit is not None:
            for name, text in hit.groups:
                m = parse_with(self._slot(name).spec, normalize(text), self._today, lenient=True)
                if m is not None:
                    found[name] = m.value
        skipped = False
        if asked is not None and not asked.required and asked.name not in found:
            answer = yes_no_of(utt.toks)
            if answer is not None and answer.value is False and (hit is None or not hit.strong):
                self._skipped.add(asked.name)
                skipped, hit = True, None
        if hit is not None and not hit.strong and asked is not None and asked.name in found:
            hit = None  # the caller answered the question; a fuzzy guess gives way
        if hit is not None and self._on_intent(hit, found, out):
            return
        if found or skipped:
            if not self._answer(found, out) and not out.say:
                out.ask(self._question)  # values for a later node: the question still stands
            return
        self._fallback(out)

    def _answer(self, found: Mapping[str, Any], out: _Out, *, advance: bool = True) -> bool:
        """Store ``found`` (speaking rule messages); True if that ended the call.

        A turn whose values all broke rules counts as a miss, so a caller stuck on an invalid
        answer reaches the fallback ending.
        """
        valid = 0
        for name, value in found.items():
            slot = self._slot(name)
            message = check(slot.type, value, slot.rules, self._today)
            if message is None:
                self._slots[name] = value
                self._skipped.discard(name)
                valid += 1
            else:
                out.notes.append(message)
        out.matched_by = out.matched_by or "slot"
        if found and not valid:
            self._misses += 1
            if self._misses >= self._flow.fallback_max:
                self._end_with(self._flow.fallback_end, "no valid answer", out)
                return True
        else:
            self._misses = 0
        if advance:
            self._advance(out, 0)
        return False

    def _on_intent(self, hit: IntentHit, found: Mapping[str, Any], out: _Out) -> bool:
        """Act on a recognised intent (slot values said with it are stored first)."""
        if hit.local:
            out.intent, out.matched_by = hit.name, hit.method
            if self._answer(found, out, advance=False):
                return True
            branch = self._pick(self._node.branches(hit.name))  # sees this turn's values
            if branch is None:  # recognised, but no branch's `when` holds: stay
                self._advance(out, 0)
                if not out.say:
                    out.ask(self._question)
                return True
            self._misses = 0
            self._take(branch, out, 0)
            return True
        g = next(g for g in self._flow.globals if g.matcher.name == hit.name)
        out.intent, out.matched_by = hit.name, hit.method
        if found and self._answer(found, out, advance=False):
            return True
        self._global(g, out, bool(found))
        return True

    def _global(self, g: GlobalIntent, out: _Out, changed: bool = False) -> None:
        self._misses = 0
        flow = self._flow
        if g.action == "repeat":
            out.ask(self._last_say or self._question)
        elif g.action in ("answer", "help"):
            say = g.say or (self._node.help or flow.help if g.action == "help" else ())
            out.ask(self._render(say))
            if changed and self._mode == "node":
                self._advance(out, 0)
            else:
                out.ask(self._question)
        elif g.action == "transfer":
            out.ask(self._render(g.say))
            out.actions.append(TransferRequest(g.target, g.reason))
            self._done = True
        elif g.action == "goodbye":
            out.ask(self._render(g.say or flow.goodbye))
            out.actions.append(HangupRequest(g.reason))
            self._done = True
        else:  # restart
            self._slots.clear()
            self._skipped.clear()
            out.say += self._render(g.say)
            self._enter(flow.start, out, 0)

    def _on_confirm(self, utt: Utterance, hit: IntentHit | None, out: _Out) -> None:
        node = self._node
        said = extract(utt, all_slot_specs(self._flow), None, self._today)
        said = {k: v for k, v in said.items() if self._flow.slots[k].type not in ("text", "yes_no")}
        changed = {k: v for k, v in said.items() if self._slots.get(k) != v}
        answer = yes_no_of(utt.toks)
        if changed or (said and (answer is None or answer.value is False)):
            self._confirmed = False  # a new value, or an old one said again: read back again
            self._answer(changed, out)
            return

        named = next(
            (s for s in node.slots if any(find_phrase(utt.toks, a) is not None for a in s.aliases)),
            None,
        )
        if answer is not None and answer.value is True:
            out.intent, out.matched_by = "yes", "keywords"
            self._confirmed, self._misses = True, 0
            self._advance(out, 0)
            return
        if hit is not None and hit.strong and not hit.local and (answer is None or named is None):
            self._on_intent(hit, {}, out)
            return
        if named is not None:
            out.matched_by = "slot"
            self._misses = 0
            self._slots.pop(named.name, None)
            self._advance(out, 0)
            return
        if answer is not None:  # a plain no
            out.intent, out.matched_by = "no", "keywords"
            self._misses, self._mode = 0, "correct"
            self._question = tuple(self._render(node.confirm_no))
            out.ask(self._question)
            return
        if hit is not None and self._on_intent(hit, {}, out):
            return
        self._fallback(out)

    def _keys(self, keys: str, out: _Out) -> None:
        asked = self._asked if self._mode == "node" else None
        if asked is not None and asked.type == "phone":
            typed = (self._dtmf + keys).rsplit("*", 1)[-1]
            body = typed.replace("#", "")
            complete = "#" in keys or len(body) >= asked.rules.max_digits
            if len(keys.strip("#")) > 1 and len(body) >= asked.rules.min_digits:
                complete = True
            if not complete:
                self._dtmf = body
                out.matched_by = "slot"
                return
            self._dtmf = ""
            if not body and not asked.required:
                self._skipped.add(asked.name)
                out.matched_by = "slot"
                self._advance(out, 0)
            else:
                self._answer({asked.name: body}, out)
            return
        number = keys.strip("#")
        if asked is not None and asked.type in ("number", "party_size") and number.isdigit():
            self._answer({asked.name: int(number)}, out)
            return
        if asked is not None and asked.type == "choice" and number.isdigit():
            index = int(number) - 1
            if 0 <= index < len(asked.spec.options):
                self._answer({asked.name: asked.spec.options[index][0]}, out)
                return
        yes_no = self._mode == "confirm" or (asked is not None and asked.type == "yes_no")
        if yes_no and number in ("1", "2"):
            self._handle(normalize("yes" if number == "1" else "no"), out)
            return
        for g in self._flow.globals:
            if g.dtmf and g.dtmf == keys:
                out.intent, out.matched_by = g.matcher.name, "dtmf"
                self._global(g, out)
                return
        self._fallback(out)

    def _fallback(self, out: _Out) -> None:
        flow = self._flow
        self._misses += 1
        if self._misses >= flow.fallback_max:
            self._end_with(flow.fallback_end, "caller not understood", out)
            return
        prompts = flow.fallback_prompts
        out.ask(self._render((prompts[(self._misses - 1) % len(prompts)],)))
        out.ask(self._question)
