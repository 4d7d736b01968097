"""What decides what the agent says: the :class:`Brain` protocol and the pieces a reply is made of.

The conversation engine asks its brain for a reply on each event (greeting, the caller's final
transcript, keypad digits, an idle prompt) and receives an async stream of :data:`Piece` s:

* :class:`Say` — text to speak (any size: LLM tokens or whole sentences; the engine chunks it
  into clauses);
* :class:`Flush` — speak what was said so far now (before a slow tool call);
* :class:`ToolUsed` — a tool ran (for the call record);
* :class:`Hangup` / :class:`Transfer` — end or move the call once everything said is heard.

The engine runs each reply in one task and cancels it on a barge-in; a brain must leave its own
context consistent when cancelled. After playback the engine calls :meth:`Brain.heard` with
what the caller heard of the reply, so the brain can rewrite its history.

Two brains ship: :class:`FlowBrain` (the offline flow agent) here, and
:class:`~harken.conversation.llm_brain.LLMBrain` (an OpenAI-compatible model with tools).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from harken.conversation.tools import ToolBox, ToolContext, ToolOutcome

if TYPE_CHECKING:
    from harken.agent.flow import FlowAgent, FlowSession, FlowTurn

__all__ = ["Brain", "FlowBrain", "Flush", "Hangup", "Piece", "Say", "ToolUsed", "Transfer"]


@dataclass(frozen=True, slots=True)
class Say:
    text: str


@dataclass(frozen=True, slots=True)
class Flush:
    pass


@dataclass(frozen=True, slots=True)
class ToolUsed:
    outcome: ToolOutcome


@dataclass(frozen=True, slots=True)
class Hangup:
    reason: str = "agent"


@dataclass(frozen=True, slots=True)
class Transfer:
    target: str
    reason: str = ""


Piece = Say | Flush | ToolUsed | Hangup | Transfer


@dataclass(slots=True)
class Heard:
    """One reply as the caller got it: ``spoken`` was sent to TTS, ``heard`` reached the ear."""

    spoken: str
    heard: str
    interrupted: bool


class Brain(Protocol):
    """One call's decision maker (created per call by an agent factory)."""

    def greet(self) -> AsyncIterator[Piece]: ...

    def reply(self, text: str) -> AsyncIterator[Piece]: ...

    def dtmf(self, digits: str) -> AsyncIterator[Piece]: ...

    # optional: ``dtmf_complete(digits) -> bool``, True when the keys gathered so far are a
    # whole entry (the engine then answers at once instead of after ``dtmf_timeout_s``)
    # optional: ``text_entry(text) -> bool | None``, whether a transcript so far is a whole
    # answer to what was asked (True), nothing the brain can act on yet (False: the caller is
    # probably still talking), or either (None); the turn detector weighs it (TurnParams.entry)

    def idle(self, count: int) -> AsyncIterator[Piece]: ...

    def heard(self, result: Heard) -> None: ...


class FlowBrain:
    """The offline flow agent as a brain: sentences out, tools run through the tool box."""

    __slots__ = ("ctx", "session", "tools", "turns")

    def __init__(self, session: FlowSession, tools: ToolBox, ctx: ToolContext) -> None:
        self.session = session
        self.tools = tools
        self.ctx = ctx
        self.turns: list[FlowTurn] = []

    @classmethod
    def for_call(cls, agent: FlowAgent, tools: ToolBox, ctx: ToolContext) -> FlowBrain:
        return cls(agent.session(), tools, ctx)

    def greet(self) -> AsyncIterator[Piece]:
        return self._play(self.session.start())

    def reply(self, text: str) -> AsyncIterator[Piece]:
        return self._play(self.session.on_text(text))

    def dtmf(self, digits: str) -> AsyncIterator[Piece]:
        return self._play(self.session.on_dtmf(digits))

    def dtmf_complete(self, digits: str) -> bool:
        """Are the keys so far a whole entry (no need to wait for ``#`` or the timeout)?"""
        return self.session.keys_complete(digits)

    def text_entry(self, text: str) -> bool | None:
        """Is the transcript so far a whole answer to the flow's question? (dialogue-aware
        endpointing; see :mod:`harken.agent.flow.entry`)"""
        return self.session.text_entry(text)

    def idle(self, count: int) -> AsyncIterator[Piece]:
        return self._play(self.session.on_idle(count))

    def heard(self, result: Heard) -> None:
        """The flow keeps no word history: nothing to rewrite."""

    async def _play(self, turn: FlowTurn) -> AsyncIterator[Piece]:
        from harken.agent.flow import HangupRequest, ToolRequest, TransferRequest

        pending: list[FlowTurn] = [turn]
        while pending:
            turn = pending.pop(0)
            self.turns.append(turn)
            del self.turns[:-16]
            for sentence in turn.say:
                yield Say(sentence + " ")
            for action in turn.actions:
                if isinstance(action, ToolRequest):
                    yield Flush()
                    outcome = await self.tools.run(
                        action.call_id, action.name, dict(action.args), self.ctx
                    )
                    yield ToolUsed(outcome)
                    pending.append(
                        self.session.on_tool_result(action.call_id, outcome.result, outcome.error)
                    )
                elif isinstance(action, HangupRequest):
                    yield Hangup(action.reason or "flow")
                elif isinstance(action, TransferRequest):
                    yield Transfer(action.target, action.reason or "")
