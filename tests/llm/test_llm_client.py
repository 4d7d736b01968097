"""LLMClient against the local OpenAI-compatible server (harken.testing.llm_server)."""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from harken.errors import (
    LLMConnectionError,
    LLMHTTPError,
    LLMResponseError,
    LLMTimeoutError,
)
from harken.llm import Finish, LLMClient, LLMEvent, TextDelta, ToolCall
from harken.testing.llm_server import (
    Chunk,
    Drop,
    FakeLLMServer,
    Pause,
    Raw,
    Reply,
    Stall,
    Token,
    Tool,
)

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


@pytest.fixture
async def srv() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as server:
        yield server


@pytest.fixture
async def client(srv: FakeLLMServer) -> AsyncIterator[LLMClient]:
    async with LLMClient(
        srv.url,
        "test-model",
        "sk-test",
        first_token_timeout_s=2.0,
        stall_timeout_s=2.0,
        retry_base_s=0.01,
        retry_cap_s=0.05,
        rng=random.Random(7),
    ) as c:
        yield c


async def collect(client: LLMClient, **kwargs: Any) -> list[LLMEvent]:
    return [event async for event in client.stream(MESSAGES, **kwargs)]


def text_of(events: list[LLMEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


async def test_text_streams_token_by_token_with_ttft(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.script(Reply([Pause(0.05), "Hello", " there", ", friend."], token_delay_s=0.02, usage=None))
    t0 = time.monotonic()
    arrivals: list[float] = []
    events: list[LLMEvent] = []
    async for event in client.stream(MESSAGES, tools=TOOLS, tool_choice="auto"):
        arrivals.append(time.monotonic() - t0)
        events.append(event)
    assert [e for e in events if isinstance(e, TextDelta)] == [
        TextDelta("Hello"),
        TextDelta(" there"),
        TextDelta(", friend."),
    ]
    assert arrivals[1] - arrivals[0] >= 0.015  # streamed as they came, not buffered to the end
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.reason == "stop"
    assert finish.usage == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    # the role delta at once does not count: the first token came after the 50 ms pause
    assert finish.ttft_s is not None and 0.05 <= finish.ttft_s < finish.total_s < 1.0
    assert client.last_ttft_s == finish.ttft_s
    body = srv.requests[0]
    assert body["model"] == "test-model" and body["messages"] == MESSAGES
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == TOOLS and body["tool_choice"] == "auto"
    assert srv.exchanges[0].headers["Authorization"] == "Bearer sk-test"
    assert client.stats.requests == 1 and client.stats.completed == 1


async def test_request_options_and_echo_responder(srv: FakeLLMServer) -> None:
    async with LLMClient(
        srv.url + "/",
        "m",
        temperature=0.3,
        max_tokens=50,
        include_usage=False,
        extra_headers={"X-Trace": "t1"},
    ) as c:
        events = await collect(c)
        assert text_of(events) == "Hi there"  # no script, no responder: the echo
        srv.responder = lambda body: Reply.text(f"{len(body['messages'])} messages.")
        assert text_of(await collect(c)) == "2 messages."
    body = srv.requests[0]
    assert body["temperature"] == 0.3 and body["max_tokens"] == 50
    assert "stream_options" not in body and "tools" not in body
    assert "Authorization" not in srv.exchanges[0].headers
    assert srv.exchanges[0].headers["X-Trace"] == "t1"
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.usage is None


async def test_several_tool_calls_with_fragmented_arguments(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(
        Reply(
            [
                "One moment.",
                Tool("get_weather", '{"city": "Oslo", "unit": "celsius"}', id="c1", pieces=5),
                Tool("get_time", '{"tz": "Europe/Oslo"}', id="c2", pieces=3),
                Tool("hang_up", "", id="c3"),
            ],
            token_delay_s=0.002,
        ),
        # fragments of two calls interleaved, by hand
        Reply(
            [
                Chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "a",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"x"'},
                            }
                        ]
                    }
                ),
                Chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 1,
                                "id": "b",
                                "type": "function",
                                "function": {"name": "g", "arguments": "{"},
                            }
                        ]
                    }
                ),
                Chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
                Chunk({"tool_calls": [{"index": 1, "function": {"arguments": "}"}}]}),
            ]
        ),
    )
    events = await collect(client)
    assert events[0] == TextDelta("One moment.")
    assert events[1:4] == [
        ToolCall("c1", "get_weather", {"city": "Oslo", "unit": "celsius"}),
        ToolCall("c2", "get_time", {"tz": "Europe/Oslo"}),
        ToolCall("c3", "hang_up", {}),
    ]
    assert isinstance(events[4], Finish) and events[4].reason == "tool_calls"
    events = await collect(client)
    assert events[:2] == [ToolCall("a", "f", {"x": 1}), ToolCall("b", "g", {})]
    assert isinstance(events[2], Finish) and events[2].ttft_s is not None


async def test_retries_429_and_500_then_succeeds(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.script(
        Reply.http_error(429, "slow down", retry_after=0.02),
        Reply.http_error(500),
        "Recovered.",
    )
    t0 = time.monotonic()
    events = await collect(client)
    elapsed = time.monotonic() - t0
    assert text_of(events) == "Recovered."
    assert [e.status for e in srv.exchanges] == [429, 500, 200]
    assert client.stats.requests == 3 and client.stats.retries == 2 and client.stats.errors == 0
    assert 0.02 <= elapsed < 0.5  # Retry-After 20 ms, then at most retry_base_s * 2 = 20 ms
    finish = events[-1]
    assert isinstance(finish, Finish) and finish.ttft_s is not None and finish.ttft_s >= 0.02


async def test_retries_exhausted_names_status_url_model_and_attempts(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(*[Reply.http_error(503, "overloaded")] * 3)
    with pytest.raises(LLMHTTPError) as info:
        await collect(client)
    err = info.value
    assert err.status == 503 and err.attempts == 3 and len(srv.requests) == 3
    assert "HTTP 503: overloaded" in str(err)
    assert client.url in str(err) and "'test-model'" in str(err) and "attempt 3" in str(err)
    assert client.stats.errors == 1 and client.stats.retries == 2


async def test_400_is_not_retried(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.script(Reply.http_error(400, "messages must not be empty"), "never sent")
    with pytest.raises(LLMHTTPError, match="HTTP 400: messages must not be empty") as info:
        await collect(client)
    assert info.value.status == 400 and info.value.attempts == 1
    assert len(srv.requests) == 1 and client.stats.retries == 0


def test_backoff_is_full_jitter_bounded_and_honours_retry_after() -> None:
    c = LLMClient("http://127.0.0.1:9/v1", "m", retry_base_s=0.1, retry_cap_s=0.5)
    for retry in (1, 2, 3, 4, 5):
        ceiling = min(0.5, 0.1 * 2 ** (retry - 1))
        draws = [c.backoff_s(retry) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.8 * ceiling and min(draws) < 0.2 * ceiling  # really jittered
    assert c.backoff_s(1, "0.3") == 0.3
    assert c.backoff_s(1, "120") == 0.5  # capped
    assert c.backoff_s(1, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past
    assert 0.0 <= c.backoff_s(1, "soon") <= 0.1  # unreadable: the usual draw


async def test_drop_after_first_token_is_not_replayed(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(Reply(["Hello", " wor", Drop()]), "Must not be replayed.")
    seen: list[LLMEvent] = []
    with pytest.raises(LLMConnectionError, match="after output had started"):
        async for event in client.stream(MESSAGES):
            seen.append(event)
    assert seen == [TextDelta("Hello"), TextDelta(" wor")]
    assert len(srv.requests) == 1 and client.stats.retries == 0


async def test_drop_before_first_token_is_retried(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.script(Reply([Drop()]), "Second try.")
    assert text_of(await collect(client)) == "Second try."
    assert len(srv.requests) == 2 and srv.exchanges[0].dropped


async def test_connection_refused_is_retried_then_raised() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with LLMClient(f"http://127.0.0.1:{port}/v1", "m", retry_base_s=0.01) as c:
        with pytest.raises(LLMConnectionError, match="request failed") as info:
            await collect(c)
    assert info.value.attempts == 3 and c.stats.requests == 3


async def test_first_token_timeout(srv: FakeLLMServer) -> None:
    srv.script(Reply([Raw(b": still thinking\n\n"), Stall()]), "not retried")
    async with LLMClient(srv.url, "m", first_token_timeout_s=0.15) as c:
        t0 = time.monotonic()
        with pytest.raises(LLMTimeoutError, match=r"no first token within 0.15 s"):
            await collect(c)
        assert 0.14 <= time.monotonic() - t0 < 0.6
    assert len(srv.requests) == 1
    assert (await srv.wait_ended(0)).closed_early  # we hung up


async def test_first_token_timeout_before_headers(srv: FakeLLMServer) -> None:
    srv.script(Reply(["late"], initial_delay_s=5.0))
    async with LLMClient(srv.url, "m", first_token_timeout_s=0.1) as c:
        with pytest.raises(LLMTimeoutError, match="no first token"):
            await collect(c)


async def test_stall_timeout_after_output(srv: FakeLLMServer) -> None:
    srv.script(Reply(["Hello", Stall()]))
    seen: list[LLMEvent] = []
    async with LLMClient(srv.url, "m", stall_timeout_s=0.15) as c:
        t0 = time.monotonic()
        with pytest.raises(LLMTimeoutError, match=r"stalled for 0.15 s"):
            async for event in c.stream(MESSAGES):
                seen.append(event)
        assert time.monotonic() - t0 < 0.6
    assert seen == [TextDelta("Hello")] and len(srv.requests) == 1


async def test_keepalives_forever_hit_the_total_timeout(srv: FakeLLMServer) -> None:
    srv.script(Reply(["Hi", *[Pause(0.02), Raw(b": ping\n\n")] * 100]))
    async with LLMClient(srv.url, "m", timeout_s=0.25, stall_timeout_s=1.0) as c:
        with pytest.raises(LLMTimeoutError, match=r"timeout_s=0.25"):
            await collect(c)


async def test_slow_consumer_is_not_timed_out(srv: FakeLLMServer) -> None:
    srv.script(Reply.text("one two three four"))
    async with LLMClient(srv.url, "m", timeout_s=0.1, stall_timeout_s=0.05) as c:
        events = []
        async for event in c.stream(MESSAGES):
            events.append(event)
            await asyncio.sleep(0.06)  # longer than both timeouts, in total too
    assert text_of(events) == "one two three four"


async def test_cancellation_closes_the_connection(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.script(Reply.text("a b c d e f g h i j k l m n o p", token_delay_s=0.05))
    first = asyncio.Event()

    async def consume() -> None:
        async for event in client.stream(MESSAGES):
            if isinstance(event, TextDelta):
                first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 1.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    t0 = time.monotonic()
    exchange = await srv.wait_ended(0, timeout_s=1.0)
    assert exchange.closed_early and not exchange.finished
    assert time.monotonic() - t0 < 0.2  # noticed by the server's next write, within ~one token
    assert client.stats.cancelled == 1 and client.stats.errors == 0


async def test_closing_the_iterator_early_closes_the_connection(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(Reply(["first", Stall()]))
    async with aclosing(client.stream(MESSAGES)) as events:
        async for event in events:
            assert event == TextDelta("first")
            break
    assert (await srv.wait_ended(0, timeout_s=1.0)).closed_early


async def test_malformed_chunk_raises_and_is_not_retried(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(Reply([Raw(b'data: {"choices": [{"delta": \n\n')]), "unused")
    with pytest.raises(LLMResponseError, match="malformed chunk") as info:
        await collect(client)
    assert info.value.url == client.url and len(srv.requests) == 1


async def test_malformed_tool_arguments_name_the_tool(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(Reply([Tool("book_table", '{"time": "19:', pieces=2)]))
    with pytest.raises(LLMResponseError, match=r"'book_table'.*malformed JSON arguments"):
        await collect(client)


async def test_stream_cut_short_without_finish_or_done(
    srv: FakeLLMServer, client: LLMClient
) -> None:
    srv.script(Reply(["Hel"], finish_reason="", done=False))
    with pytest.raises(LLMResponseError, match="cut short"):
        await collect(client)


async def test_missing_done_after_finish_is_fine(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.script(Reply(["Fine."], done=False, finish_reason="length"))
    events = await collect(client)
    finish = events[-1]
    assert text_of(events) == "Fine." and isinstance(finish, Finish)
    assert finish.reason == "length"


async def test_the_server_streams_openai_chunks(srv: FakeLLMServer) -> None:
    srv.script(Reply([Token("Hi"), Tool("f", '{"a": 1}', id="call_x", pieces=2)]))
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(srv.url + "/chat/completions", json=body) as resp,
    ):
        assert resp.content_type == "text/event-stream"
        raw = (await resp.read()).decode()
    blocks = [b for b in raw.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks) and blocks[-1] == "data: [DONE]"
    chunks = [orjson.loads(b[6:]) for b in blocks[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "fake-llm" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_x",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
        ]
    }
    assert [d["tool_calls"][0]["function"]["arguments"] for d in deltas[3:5]] == ['{"a"', ": 1}"]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls" and deltas[5] == {}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0


async def test_a_json_answer_to_a_stream_request_is_read_whole() -> None:
    async def handler(request: web.Request) -> web.Response:
        message = {"role": "assistant", "content": "Whole."}
        return web.json_response(
            {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with LLMClient(f"http://127.0.0.1:{port}/v1", "m") as c:
            events = await collect(c)
    finally:
        await runner.cleanup()
    assert events[0] == TextDelta("Whole.") and isinstance(events[1], Finish)


async def test_one_client_serves_concurrent_streams(srv: FakeLLMServer, client: LLMClient) -> None:
    srv.responder = lambda body: Reply.text(body["messages"][-1]["content"], token_delay_s=0.01)

    async def ask(n: int) -> str:
        events = [e async for e in client.stream([{"role": "user", "content": f"n {n} ok"}])]
        return text_of(events)

    assert await asyncio.gather(*(ask(n) for n in range(8))) == [f"n {n} ok" for n in range(8)]
    assert client.stats.requests == 8 and client.stats.completed == 8
