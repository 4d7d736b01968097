"""A streaming client for any OpenAI-compatible ``/chat/completions`` endpoint.

``POST {base_url}/chat/completions`` with ``stream: true`` (and ``stream_options:
{"include_usage": true}`` unless turned off), ``Authorization: Bearer <key>`` when there is a
key. OpenAI, Groq, Together, vLLM, llama.cpp, Ollama and LiteLLM answer the same way. The bytes
go through :class:`~harken.llm.sse.SSEParser` and :class:`~harken.llm.chunks.ChunkDecoder`
(both sans-I/O); this module only does the HTTP, the clock and the retries.

Retries. Connection failures, ``408``, ``429`` and ``5xx`` (but not 501/505) are retried up to
``max_retries`` times with exponential backoff and full jitter (a delay drawn uniformly from
``[0, min(retry_cap_s, retry_base_s * 2**(n-1))]`` before retry *n*); a ``Retry-After`` header
(seconds or an HTTP date) replaces the draw, capped at ``retry_cap_s``. A retry happens only
while nothing has been yielded: once the caller has seen output, replaying the request would
repeat it, so a later failure raises. Other ``4xx`` raise :class:`~harken.errors.LLMHTTPError`
at once. Timeouts are not retried: they have already spent the latency budget.

Timeouts, per attempt. ``first_token_timeout_s`` runs from the start of the attempt to the first
non-empty content or tool-call delta (connecting, headers and keep-alive comments included);
``stall_timeout_s`` bounds each wait for bytes after that; ``timeout_s`` bounds the total time
spent waiting for the server in one attempt (time the consumer spends between events does not
count, so a slow consumer is never timed out). All raise :class:`~harken.errors.LLMTimeoutError`.

Cancellation. Cancelling the task that iterates :meth:`LLMClient.stream` (barge-in), or closing
the iterator early (``aclose()``, ``contextlib.aclosing``), closes the HTTP connection at once
(the server sees the disconnect and can stop generating) and lets ``CancelledError`` through.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, Final, TypeVar

import aiohttp
import orjson

from harken.errors import (
    LLMConnectionError,
    LLMError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
)
from harken.llm.chunks import ChunkDecoder
from harken.llm.sse import SSEParser
from harken.llm.types import Finish, LLMEvent, LLMStats, TextDelta, ToolCall

__all__ = ["LLMClient", "retryable_status"]

log = logging.getLogger("harken.llm")
T = TypeVar("T")

_BODY_EXCERPT: Final = 300
_ERROR_BODY_WAIT_S: Final = 2.0


def retryable_status(status: int) -> bool:
    """Whether an HTTP status is worth a retry: 408, 429 and the 5xx that can be transient."""
    return status in (408, 429) or (500 <= status <= 599 and status not in (501, 505))


def _error_excerpt(body: bytes) -> str:
    """The server's ``error.message`` when the body is OpenAI-shaped, else the body's start."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode(errors="replace").strip()
        return (text[:_BODY_EXCERPT] + ("..." if len(text) > _BODY_EXCERPT else "")) or "no body"
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])[:_BODY_EXCERPT]
        if isinstance(err, str):
            return err[:_BODY_EXCERPT]
    return str(doc)[:_BODY_EXCERPT]


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class LLMClient:
    """Streams chat completions from ``{base_url}/chat/completions``.

    ``base_url`` includes the version prefix (``https://api.openai.com/v1``,
    ``http://127.0.0.1:8000/v1``). One client serves many concurrent calls; it owns an
    ``aiohttp.ClientSession`` (made on first use, closed by :meth:`close`) unless one is given.
    ``stats`` counts requests, retries, errors and the latest time to first token.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str = "",
        *,
        timeout_s: float = 30.0,
        first_token_timeout_s: float = 10.0,
        stall_timeout_s: float = 10.0,
        max_retries: int = 2,
        retry_base_s: float = 0.25,
        retry_cap_s: float = 4.0,
        temperature: float | None = None,
        max_tokens: int | None = None,
        include_usage: bool = True,
        extra_headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.first_token_timeout_s = first_token_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.max_retries = max(0, max_retries)
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.include_usage = include_usage
        self.extra_headers = dict(extra_headers or {})
        self.stats = LLMStats()
        self._session = session
        self._own_session = session is None
        self._rng = rng or random.Random()

    @property
    def last_ttft_s(self) -> float | None:
        """Time to first token of the latest call that had one."""
        return self.stats.last_ttft_s

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if this client made it."""
        if self._session is not None and self._own_session:
            await self._session.close()
            self._session = None

    def backoff_s(self, retry: int, retry_after: str | None = None) -> float:
        """The delay before retry number ``retry`` (1-based); see the module docstring."""
        hinted = _parse_retry_after(retry_after)
        if hinted is not None:
            return min(self.retry_cap_s, hinted)
        ceiling = min(self.retry_cap_s, self.retry_base_s * 2 ** max(0, retry - 1))
        return self._rng.uniform(0.0, ceiling)

    def request_body(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> dict[str, Any]:
        """The JSON body :meth:`stream` sends."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "stream": True}
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = tools
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        headers.update(self.extra_headers)
        return headers

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def stream(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | None = None,
    ) -> AsyncIterator[LLMEvent]:
        """Yield :class:`TextDelta` as text arrives, each :class:`ToolCall` once complete, then
        one :class:`Finish`. Raises :class:`~harken.errors.LLMError` subclasses (see the module
        docstring for retries, timeouts and cancellation)."""
        payload = orjson.dumps(self.request_body(messages, tools, tool_choice))
        headers = self._headers()
        session = self._session_now()
        t0 = time.monotonic()
        ttft: float | None = None
        attempt = 0
        yielded = False
        finish: Finish | None = None
        try:
            while finish is None:
                attempt += 1
                self.stats.requests += 1
                if attempt > 1:
                    self.stats.retries += 1
                failure: LLMError | None = None
                retry_after: str | None = None
                clock = _AttemptClock(self, attempt)
                resp: aiohttp.ClientResponse | None = None
                clean = False
                try:
                    resp = await clock.wait(
                        session.post(
                            self.url,
                            data=payload,
                            headers=headers,
                            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s),
                        ),
                        got_token=False,
                    )
                    if resp.status != 200:
                        excerpt = await self._error_body(resp)
                        error = LLMHTTPError(resp.status, excerpt, **self._where(attempt))
                        if not retryable_status(resp.status) or attempt > self.max_retries:
                            raise error
                        failure, retry_after = error, resp.headers.get("Retry-After")
                    else:
                        parser = SSEParser()
                        decoder = ChunkDecoder()
                        is_json = resp.content_type == "application/json"
                        while True:
                            data = await clock.wait(
                                resp.read() if is_json else resp.content.readany(),
                                got_token=decoder.got_token,
                            )
                            try:
                                batch = self._decode(parser, decoder, data, is_json)
                            except LLMResponseError as exc:
                                raise self._located(exc, attempt) from exc
                            if ttft is None and decoder.got_token:
                                ttft = time.monotonic() - t0
                                self.stats.last_ttft_s = ttft
                            for event in batch:
                                yielded = True
                                yield event
                            if is_json or not data or decoder.done:
                                break
                        clean = True
                        self.stats.completed += 1
                        finish = Finish(decoder.reason, decoder.usage, ttft, time.monotonic() - t0)
                        break
                except aiohttp.ClientError as exc:
                    where = self._where(attempt)
                    if yielded:
                        raise LLMConnectionError(
                            f"connection lost after output had started ({exc!r}); not retried, "
                            "a retry would repeat what was already yielded",
                            **where,
                        ) from exc
                    failure = LLMConnectionError(f"request failed: {exc!r}", **where)
                    failure.__cause__ = exc
                    if attempt > self.max_retries:
                        raise failure from exc
                finally:
                    if resp is not None:
                        if clean:
                            resp.release()
                        else:
                            resp.close()  # drop the connection: the server sees us leave
                delay = self.backoff_s(attempt, retry_after)
                log.info("%s; retry %d of %d in %.2f s", failure, attempt, self.max_retries, delay)
                await asyncio.sleep(delay)
        except LLMError:
            self.stats.errors += 1
            raise
        except (asyncio.CancelledError, GeneratorExit):
            self.stats.cancelled += 1
            raise
        yield finish

    # ----------------------------------------------------------------------------------------

    def _where(self, attempt: int) -> dict[str, Any]:
        return {"url": self.url, "model": self.model, "attempts": attempt}

    def _located(self, exc: LLMResponseError, attempt: int) -> LLMResponseError:
        if exc.url:
            return exc
        return LLMResponseError(str(exc), **self._where(attempt))

    @staticmethod
    def _decode(
        parser: SSEParser, decoder: ChunkDecoder, data: bytes, is_json: bool
    ) -> list[TextDelta | ToolCall]:
        if is_json:
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise LLMResponseError(f"malformed JSON completion: {exc}") from exc
            return decoder.feed_completion(doc) + decoder.end()
        events = parser.feed(data) if data else parser.close()
        batch: list[TextDelta | ToolCall] = []
        for event in events:
            if event.event == "error":
                raise LLMResponseError(f"the server sent an error event: {event.data[:200]!r}")
            batch.extend(decoder.feed(event.data))
            if decoder.done:
                break
        if not data or decoder.done:
            batch.extend(decoder.end())
        return batch

    async def _error_body(self, resp: aiohttp.ClientResponse) -> str:
        try:
            async with asyncio.timeout(_ERROR_BODY_WAIT_S):
                body = await resp.content.read(64 * 1024)
        except (TimeoutError, aiohttp.ClientError):
            return "no readable body"
        return _error_excerpt(body)


class _AttemptClock:
    """The three timeouts of one attempt (see the module docstring)."""

    def __init__(self, client: LLMClient, attempt: int) -> None:
        self.client = client
        self.attempt = attempt
        self.start = time.monotonic()
        self.waited = 0.0

    async def wait(self, awaitable: Awaitable[T], *, got_token: bool) -> T:
        """Await one network step under whichever timeout is nearest."""
        c = self.client
        budget = c.timeout_s - self.waited
        if got_token:
            limit, what = c.stall_timeout_s, f"the stream stalled for {c.stall_timeout_s:g} s"
        else:
            limit = c.first_token_timeout_s - (time.monotonic() - self.start)
            what = f"no first token within {c.first_token_timeout_s:g} s"
        if budget < limit:
            limit, what = budget, f"the response took longer than timeout_s={c.timeout_s:g} s"
        began = time.monotonic()
        deadline = asyncio.timeout(max(0.0, limit))
        try:
            async with deadline:
                return await awaitable
        except TimeoutError as exc:
            if not deadline.expired():
                raise  # aiohttp's own (connect) timeout: a connection failure, retried
            raise LLMTimeoutError(what, **c._where(self.attempt)) from exc
        finally:
            self.waited += time.monotonic() - began
