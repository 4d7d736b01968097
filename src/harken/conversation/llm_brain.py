"""The LLM agent: an OpenAI-compatible chat model with tools, as a :class:`~.brain.Brain`.

Per caller turn: the transcript joins the :class:`~.context.ChatContext`, the model streams
(tokens go out as :class:`~.brain.Say` at once, so the engine's chunker can start speech on the
first short clause), and if the model asked for tools they run concurrently through the
:class:`~.tools.ToolBox` (each with its timeout), their results join the context and the model
is asked again, up to ``max_tool_rounds``. A tool that asked to end or transfer the call
(``end_call`` / ``transfer_call``) turns into :class:`~.brain.Hangup` / :class:`~.brain.Transfer`
after the reply's words.

A failing model (HTTP error, timeout, malformed stream) never ends the call: the caller hears
``error_message`` and the failure is counted. Cancelled mid-reply (a barge-in), the brain keeps
what was generated so far in the context (the engine then cuts it to what was heard) and
answers every tool call it had started with a "cancelled" result.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from harken.conversation.brain import Flush, Hangup, Heard, Piece, Say, ToolUsed, Transfer
from harken.conversation.context import ChatContext, ReplyMessages
from harken.conversation.tools import ToolBox, ToolContext
from harken.errors import HarkenError
from harken.llm import Finish, LLMClient, LLMEvent, TextDelta, ToolCall

__all__ = ["LLMBrain", "Prepared", "same_words"]

log = logging.getLogger("harken.conversation")

_CANCELLED = "cancelled: the caller interrupted"


class LLMBrain:
    """One call's LLM conversation (see the module docstring)."""

    __slots__ = (
        "client",
        "context",
        "ctx",
        "error_message",
        "errors",
        "greeting",
        "idle_prompt",
        "last",
        "max_tool_rounds",
        "on_error",
        "tools",
        "ttfts",
    )

    def __init__(
        self,
        client: LLMClient,
        tools: ToolBox,
        ctx: ToolContext,
        *,
        system_prompt: str = "",
        greeting: str = "",
        idle_prompt: str = "Are you still there?",
        error_message: str = "Sorry, I'm having trouble answering right now.",
        max_tool_rounds: int = 4,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.client = client
        self.tools = tools
        self.ctx = ctx
        self.context = ChatContext(system_prompt)
        self.greeting = greeting
        self.idle_prompt = idle_prompt
        self.error_message = error_message
        self.max_tool_rounds = max_tool_rounds
        self.on_error = on_error
        self.errors = 0
        self.ttfts: list[float] = []
        self.last: ReplyMessages | None = None

    async def greet(self) -> AsyncIterator[Piece]:
        if self.greeting:
            self.last = ReplyMessages(
                [self.context.add_assistant(self.greeting)], spoken=self.greeting
            )
            yield Say(self.greeting)

    def reply(self, text: str, prepared: Prepared | None = None) -> AsyncIterator[Piece]:
        """Answer ``text``; ``prepared`` (from :meth:`prepare` on the same text, with the
        context unchanged since) supplies the first model round already under way."""
        if prepared is not None and not prepared.matches(self.context, text):
            prepared.cancel()
            prepared = None
        self.context.add_user(text)
        return self._generate(prepared)

    def prepare(self, text: str) -> Prepared:
        """Start the model on a stable partial transcript before the turn is over (preemptive
        generation); nothing is spoken or added to the context until :meth:`reply` uses it."""
        messages = [*self.context.for_llm(), {"role": "user", "content": text}]
        return Prepared(
            text, len(self.context.messages), self.client.stream(messages, tools=self._schemas())
        )

    def dtmf(self, digits: str) -> AsyncIterator[Piece]:
        self.context.add_user(f"[the caller pressed the keypad: {digits}]")
        return self._generate()

    async def idle(self, count: int) -> AsyncIterator[Piece]:
        self.last = ReplyMessages(
            [self.context.add_assistant(self.idle_prompt)], spoken=self.idle_prompt
        )
        yield Say(self.idle_prompt)

    def heard(self, result: Heard) -> None:
        if result.interrupted and self.last is not None:
            self.context.truncate_reply(self.last, result.heard)

    def _schemas(self) -> list[dict[str, Any]] | None:
        return self.tools.schemas() or None

    async def _generate(self, prepared: Prepared | None = None) -> AsyncIterator[Piece]:
        reply = self.last = ReplyMessages()
        schemas = self._schemas()
        for _ in range(self.max_tool_rounds + 1):
            text: list[str] = []
            calls: list[ToolCall] = []
            recorded = False
            if prepared is not None:
                source, prepared = prepared.events(), None
            else:
                source = self.client.stream(self.context.for_llm(), tools=schemas)
            try:
                async for event in source:
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                        yield Say(event.text)
                    elif isinstance(event, ToolCall):
                        calls.append(event)
                    elif isinstance(event, Finish) and event.ttft_s is not None:
                        self.ttfts.append(event.ttft_s)
                        del self.ttfts[:-64]
                recorded = True
                self._record(reply, "".join(text), calls)
            except HarkenError as exc:
                self.errors += 1
                log.warning("LLM failed: %s", exc)
                if self.on_error is not None:
                    self.on_error(exc)
                if not recorded and text:
                    self._record(reply, "".join(text), [])
                recorded = True
                yield Say(" " + self.error_message if text else self.error_message)
                return
            finally:
                if not recorded:  # cancelled mid-stream: keep what was generated
                    self._record(reply, "".join(text), [])
            if not calls:
                break
            yield Flush()
            jobs = [
                asyncio.ensure_future(self.tools.run(c.id, c.name, dict(c.arguments), self.ctx))
                for c in calls
            ]
            try:
                outcomes = await asyncio.gather(*jobs)
            except asyncio.CancelledError:
                for c, job in zip(calls, jobs, strict=True):
                    done = job.done() and not job.cancelled() and job.exception() is None
                    if done:
                        o = job.result()
                        self.context.add_tool_result(c.id, c.name, o.result, o.error)
                    else:
                        job.cancel()
                        self.context.add_tool_result(
                            c.id, c.name, None, "cancelled: caller interrupted"
                        )
                raise
            for outcome in outcomes:
                self.context.add_tool_result(
                    outcome.call_id, outcome.name, outcome.result, outcome.error
                )
                yield ToolUsed(outcome)
            if self.ctx.hangup is not None or self.ctx.transfer is not None:
                break
        if self.ctx.transfer is not None:
            yield Transfer(self.ctx.transfer)
        elif self.ctx.hangup is not None:
            yield Hangup(self.ctx.hangup)

    def _record(self, reply: ReplyMessages, text: str, calls: list[ToolCall]) -> None:
        wire: list[dict[str, Any]] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": orjson.dumps(c.arguments).decode()},
            }
            for c in calls
        ]
        if not text and not wire:
            return
        reply.indices.append(self.context.add_assistant(text, wire or None))
        reply.spoken = f"{reply.spoken} {text}".strip()


class Prepared:
    """A model round started ahead of the final transcript; its events are buffered until
    :meth:`LLMBrain.reply` takes them (or it is cancelled: a wasted request)."""

    __slots__ = ("_queue", "_task", "context_len", "text")

    def __init__(self, text: str, context_len: int, stream: AsyncIterator[LLMEvent]) -> None:
        self.text = text
        self.context_len = context_len
        self._queue: asyncio.Queue[LLMEvent | BaseException | None] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._pull(stream))

    async def _pull(self, stream: AsyncIterator[LLMEvent]) -> None:
        try:
            async for event in stream:
                self._queue.put_nowait(event)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put_nowait(exc)
            return
        self._queue.put_nowait(None)

    def matches(self, context: ChatContext, text: str) -> bool:
        return len(context.messages) == self.context_len and same_words(self.text, text)

    async def events(self) -> AsyncIterator[LLMEvent]:
        try:
            while True:
                item = await self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel()

    def cancel(self) -> None:
        if not self._task.done():
            self._task.cancel()


def same_words(a: str, b: str) -> bool:
    """Two transcripts say the same words (case and punctuation aside)."""
    return _norm(a) == _norm(b)


def _norm(text: str) -> list[str]:
    return [w.strip(".,!?;:\"'").lower() for w in text.split() if w.strip(".,!?;:\"'")]
