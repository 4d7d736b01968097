"""A local OpenAI-compatible chat-completions server for tests: scripted, recorded, on localhost.

TEST TOOL ONLY. ``async with FakeLLMServer() as srv:`` listens on ``127.0.0.1`` (a free port);
``srv.url`` is ``http://127.0.0.1:PORT/v1`` (give it to :class:`harken.llm.LLMClient` as
``base_url``). ``POST /v1/chat/completions`` streams like OpenAI does:

* ``data: {"id": "chatcmpl-…", "object": "chat.completion.chunk", "created": …, "model": …,
  "choices": [{"index": 0, "delta": {…}, "logprobs": null, "finish_reason": null}]}`` lines,
  each followed by an empty line; the first delta is ``{"role": "assistant", "content": ""}``;
* a tool call's first delta is ``{"tool_calls": [{"index": i, "id": …, "type": "function",
  "function": {"name": …, "arguments": ""}}]}`` and its arguments follow in ``{"tool_calls":
  [{"index": i, "function": {"arguments": piece}}]}`` deltas;
* then a chunk with ``delta: {}`` and the ``finish_reason`` (``tool_calls`` if the reply called
  a tool, else ``stop``); with ``stream_options.include_usage`` every chunk carries ``"usage":
  null`` and a last chunk has ``choices: []`` and the usage; then ``data: [DONE]``.

A request without ``stream: true`` gets one ``chat.completion`` JSON body.

What it answers: the :class:`Reply` objects queued with :meth:`FakeLLMServer.script`, in order;
when the queue is empty, ``srv.responder(request_body)`` (a function returning a ``Reply`` or a
string, possibly async); with no responder, the last user message echoed back. A reply is a list
of steps: :class:`Token` (text), :class:`Tool` (a tool call, its arguments optionally split
into pieces), :class:`Chunk` (any delta, for interleaving fragments by hand), :class:`Pause`,
:class:`Stall` (stop sending, for N seconds or until the client leaves), :class:`Raw` (bytes as
they are: malformed chunks, comments, odd line endings) and :class:`Drop` (cut the connection).
A reply can instead be an HTTP error (``Reply.http_error(429, retry_after=0.1)``).

What it records: ``srv.requests`` (each request's JSON body) and ``srv.exchanges`` (one
:class:`Exchange` per request: headers, status, and whether the client closed the connection
before the reply was complete, which is how tests see a cancelled stream hang up).
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import orjson
from aiohttp import web

__all__ = [
    "Chunk",
    "Drop",
    "Exchange",
    "FakeLLMServer",
    "Pause",
    "Raw",
    "Reply",
    "Stall",
    "Step",
    "Token",
    "Tool",
]

_POLL_S = 0.005  # how often a waiting handler checks whether the client is still there


@dataclass(frozen=True, slots=True)
class Token:
    """One content delta."""

    text: str


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool call: a first delta with the id and name, then ``arguments`` (a JSON string, sent
    as it is, so it may be malformed on purpose) in ``pieces`` roughly equal fragments."""

    name: str
    arguments: str = "{}"
    id: str | None = None
    pieces: int = 1


@dataclass(frozen=True, slots=True)
class Chunk:
    """A chunk with this exact ``delta`` (and ``finish_reason``), for hand-made sequences."""

    delta: Mapping[str, Any]
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stall:
    """Send nothing for ``seconds`` (``None``: until the client leaves or the server closes)."""

    seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes written as they are (a ``str`` is UTF-8 encoded)."""

    data: bytes | str


@dataclass(frozen=True, slots=True)
class Drop:
    """Close the connection here, mid-body (the client sees an incomplete response)."""


Step: TypeAlias = Token | Tool | Chunk | Pause | Stall | Raw | Drop


@dataclass
class Reply:
    """One scripted answer.

    ``steps`` (a plain string is a :class:`Token`) are streamed after the role delta, with
    ``token_delay_s`` before every :class:`Token` and tool-call fragment except the first;
    ``initial_delay_s`` passes before the response headers. ``finish_reason`` ``None`` picks
    ``tool_calls`` or ``stop``, ``""`` sends no finish chunk; ``done=False`` leaves out
    ``[DONE]``; ``usage`` replaces the computed usage. ``status`` other than 200 answers an
    OpenAI-style error body with ``error`` as its message and ``headers`` (``Retry-After``).
    """

    steps: Sequence[Step | str] = ()
    status: int = 200
    error: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    initial_delay_s: float = 0.0
    token_delay_s: float = 0.0
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    done: bool = True

    @classmethod
    def text(cls, text: str, **options: Any) -> Reply:
        """``text`` streamed a word at a time (each token keeps its leading whitespace)."""
        return cls(steps=[Token(t) for t in re.findall(r"\s*\S+\s*$|\s*\S+", text)], **options)

    @classmethod
    def http_error(
        cls, status: int, message: str = "", *, retry_after: float | str | None = None
    ) -> Reply:
        """An error answer; ``retry_after`` becomes the ``Retry-After`` header."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after}"}
        return cls(status=status, error=message or f"scripted error {status}", headers=headers)


@dataclass
class Exchange:
    """The record of one request. ``finished``: the whole reply was sent; ``closed_early``: the
    client left before that; ``dropped``: the server cut it (a :class:`Drop` step)."""

    body: dict[str, Any]
    headers: dict[str, str]
    status: int = 0
    finished: bool = False
    closed_early: bool = False
    dropped: bool = False
    ended: asyncio.Event = field(default_factory=asyncio.Event)


Responder: TypeAlias = Callable[[dict[str, Any]], "Reply | str | Awaitable[Reply | str]"]


class _ClientGone(ConnectionResetError):
    """The client closed the connection (or the server is shutting down)."""


def last_user_text(body: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message of a request body ("" if none)."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(part.get("text", "")) for part in content if isinstance(part, dict)
                )
    return ""


class FakeLLMServer:
    """The server (see the module docstring). Use as an async context manager."""

    def __init__(
        self,
        *,
        model: str = "fake-llm",
        host: str = "127.0.0.1",
        responder: Responder | None = None,
    ) -> None:
        self.model = model
        self.host = host
        self.port = 0
        self.responder = responder
        self.requests: list[dict[str, Any]] = []
        self.exchanges: list[Exchange] = []
        self._queue: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """The ``base_url`` for a client: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{self.host}:{self.port}/v1"

    def script(self, *replies: Reply | str) -> None:
        """Queue replies (a string is ``Reply.text(string)``); each request takes the next."""
        self._queue.extend(Reply.text(r) if isinstance(r, str) else r for r in replies)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLMServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ended(self, index: int = -1, timeout_s: float = 2.0) -> Exchange:
        """Wait until request ``index``'s handler has finished; return its record."""
        exchange = self.exchanges[index]
        async with asyncio.timeout(timeout_s):
            await exchange.ended.wait()
        return exchange

    # ----------------------------------------------------------------------------------------

    async def _next_reply(self, body: dict[str, Any]) -> Reply:
        if self._queue:
            return self._queue.popleft()
        if self.responder is None:
            return Reply.text(last_user_text(body) or "Hello.")
        answer = self.responder(body)
        if inspect.isawaitable(answer):
            answer = await answer
        return Reply.text(answer) if isinstance(answer, str) else answer

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return web.json_response({"error": {"message": "invalid JSON body"}}, status=400)
        exchange = Exchange(body if isinstance(body, dict) else {}, dict(request.headers))
        self.requests.append(exchange.body)
        self.exchanges.append(exchange)
        response: web.StreamResponse | None = None
        try:
            reply = await self._next_reply(exchange.body)
            await self._sleep(request, reply.initial_delay_s)
            exchange.status = reply.status
            if reply.status != 200:
                exchange.finished = True
                error = {"message": reply.error, "type": "scripted", "code": reply.status}
                return web.json_response(
                    {"error": error}, status=reply.status, headers=dict(reply.headers)
                )
            if not exchange.body.get("stream"):
                exchange.finished = True
                return web.json_response(self._completion(reply, exchange.body))
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            await self._stream(request, response, reply, exchange)
            return response
        except ConnectionResetError:
            exchange.closed_early = not exchange.dropped
            return response if response is not None else web.Response(status=499)
        except asyncio.CancelledError:
            exchange.closed_early = True
            raise
        finally:
            exchange.ended.set()

    def _check(self, request: web.Request) -> None:
        """Raise :class:`_ClientGone` if the client has closed the connection."""
        transport = request.transport
        if transport is None or transport.is_closing() or self._closing:
            raise _ClientGone("the client closed the connection")

    async def _sleep(self, request: web.Request, seconds: float | None) -> None:
        """Wait, noticing at once if the client leaves (raises :class:`_ClientGone`)."""
        if seconds is not None and seconds <= 0:
            return
        end = None if seconds is None else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            self._check(request)
            step = _POLL_S if end is None else min(_POLL_S, end - time.monotonic())
            await asyncio.sleep(max(0.0, step))

    async def _stream(
        self, request: web.Request, response: web.StreamResponse, reply: Reply, ex: Exchange
    ) -> None:
        number = len(self.exchanges)
        include_usage = bool((ex.body.get("stream_options") or {}).get("include_usage"))
        created = int(time.time())
        sent_tokens = 0

        async def send(delta: Mapping[str, Any], finish: str | None = None) -> None:
            self._check(request)  # a client that has left is noticed before writing
            chunk: dict[str, Any] = {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [
                    {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish}
                ],
            }
            if include_usage:
                chunk["usage"] = None
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        first = True

        async def pace() -> None:
            nonlocal first, sent_tokens
            if not first:
                await self._sleep(request, reply.token_delay_s)
            first = False
            sent_tokens += 1

        await send({"role": "assistant", "content": ""})
        tool_index = 0
        for step in reply.steps:
            if isinstance(step, str):
                step = Token(step)
            if isinstance(step, Token):
                await pace()
                await send({"content": step.text})
            elif isinstance(step, Tool):
                call_id = step.id or f"call_{number}_{tool_index}"
                head = {"name": step.name, "arguments": ""}
                await pace()
                opening = {"index": tool_index, "id": call_id, "type": "function", "function": head}
                await send({"tool_calls": [opening]})
                for piece in _split(step.arguments, step.pieces):
                    await pace()
                    fragment = {"index": tool_index, "function": {"arguments": piece}}
                    await send({"tool_calls": [fragment]})
                tool_index += 1
            elif isinstance(step, Chunk):
                await pace()
                await send(step.delta, step.finish_reason)
            elif isinstance(step, Pause | Stall):
                await self._sleep(request, step.seconds)
            elif isinstance(step, Raw):
                data = step.data.encode() if isinstance(step.data, str) else step.data
                self._check(request)
                await response.write(data)
            else:  # Drop
                ex.dropped = True
                transport = request.transport
                if transport is not None:
                    transport.close()
                raise _ClientGone("dropped by the script")
        finish = reply.finish_reason
        if finish is None:
            finish = "tool_calls" if tool_index else "stop"
        if finish:
            await send({}, finish)
        if include_usage:
            usage = dict(reply.usage) if reply.usage is not None else _usage(ex.body, sent_tokens)
            tail = {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            await response.write(b"data: " + orjson.dumps(tail) + b"\n\n")
        if reply.done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        ex.finished = True

    def _completion(self, reply: Reply, body: Mapping[str, Any]) -> dict[str, Any]:
        text = ""
        calls: list[dict[str, Any]] = []
        for step in reply.steps:
            if isinstance(step, str | Token):
                text += step if isinstance(step, str) else step.text
            elif isinstance(step, Tool):
                call_id = step.id or f"call_{len(self.exchanges)}_{len(calls)}"
                function = {"name": step.name, "arguments": step.arguments}
                calls.append({"id": call_id, "type": "function", "function": function})
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        return {
            "id": f"chatcmpl-{len(self.exchanges)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": dict(reply.usage)
            if reply.usage is not None
            else _usage(body, len(reply.steps)),
        }


def _split(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` roughly equal, non-empty parts (none for an empty text)."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    out, start = [], 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        out.append(text[start:end])
        start = end
    return out


def _usage(body: Mapping[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt = sum(
        len(str(m.get("content") or "").split())
        for m in body.get("messages") or []
        if isinstance(m, dict)
    )
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt + completion_tokens,
    }
