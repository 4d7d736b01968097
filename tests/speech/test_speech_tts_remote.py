"""Remote TTS clients against local servers that speak the protocols.

* OpenAI-compatible ``POST /v1/audio/speech``: auth, request shape, chunked streaming read
  incrementally, retries on 429/5xx before the first byte only, errors -> ProviderError.
* Cartesia WebSocket: the sans-I/O protocol on its own, then the client against a local
  aiohttp WebSocket server (auth headers, message order, chunked audio, timestamps, done,
  cancel on abandon, one connection shared by concurrent generations, reconnect).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from harken.errors import ConfigError, LocalProtocolError, ProviderError, RemoteProtocolError
from harken.speech.tts import CartesiaTts, OpenAITts, TtsEngine, TtsStream
from harken.speech.tts.cartesia import (
    CartesiaProtocol,
    Chunk,
    Done,
    Ignored,
    ServerError,
    Timestamps,
    words_from,
)

KEY = "sk-test-123"


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


async def collect(engine: TtsEngine, text: str) -> tuple[list[bytes], TtsStream]:
    stream = engine.stream(text)
    chunks: list[bytes] = []
    async with contextlib.aclosing(stream):
        async for pcm in stream:
            chunks.append(pcm)
    return chunks, stream


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestServer]:
    server = TestServer(app)
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


# --------------------------------------------------------------------------------------------
# OpenAI-compatible /audio/speech


class SpeechServer:
    """An OpenAI-style speech endpoint. ``script`` lists what each request gets: a status code
    (error), "ok" (1 s of tone in 5 flushed chunks, with a pause between), "odd" (chunks that
    split samples), or "break" (some audio, then the connection drops)."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.gate: asyncio.Event | None = None  # hold the stream after its first chunk
        self.app = web.Application()
        self.app.router.add_post("/v1/audio/speech", self.speech)

    async def speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append((dict(request.headers), body))
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        what = self.script.pop(0) if self.script else "ok"
        if isinstance(what, int):
            headers = {"Retry-After": "0"} if what == 429 else {}
            return web.json_response(
                {"error": {"message": f"status {what}"}}, status=what, headers=headers
            )
        resp = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        audio = tone(1.0, 24000)
        step = len(audio) // 5
        if what == "odd":
            step += 1  # every chunk boundary falls inside a sample
        for i in range(0, len(audio), step):
            await resp.write(audio[i : i + step])
            if i == 0 and self.gate is not None:
                await self.gate.wait()
            if what == "break" and i > 0:
                assert request.transport is not None
                request.transport.close()
                return resp
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp


async def test_openai_request_shape_auth_and_incremental_stream() -> None:
    srv = SpeechServer(["ok"])
    srv.gate = asyncio.Event()
    async with serve(srv.app) as server:
        engine = OpenAITts(
            base_url=str(server.make_url("/v1")), api_key=KEY, voice="nova", speed=1.25
        )
        try:
            stream = engine.stream("Hello there.")
            async with contextlib.aclosing(stream):
                # the first chunk arrives while the server still holds the rest back
                first = await asyncio.wait_for(stream.__anext__(), 5)
                assert len(first) == len(tone(1.0, 24000)) // 5
                srv.gate.set()
                rest = [pcm async for pcm in stream]
        finally:
            await engine.aclose()
    assert b"".join([first, *rest]) == tone(1.0, 24000)
    headers, body = srv.requests[0]
    assert body == {
        "model": "gpt-4o-mini-tts",
        "input": "Hello there.",
        "voice": "nova",
        "response_format": "pcm",
        "speed": 1.25,
    }
    assert headers["Content-Type"] == "application/json"
    assert engine.sample_rate == 24000
    assert stream.estimated and [w.word for w in stream.words] == ["Hello", "there."]


async def test_openai_chunks_that_split_samples_are_realigned() -> None:
    srv = SpeechServer(["odd"])
    async with serve(srv.app) as server:
        engine = OpenAITts(base_url=str(server.make_url("/v1")), api_key=KEY)
        try:
            chunks, _ = await collect(engine, "Hi.")
        finally:
            await engine.aclose()
    assert all(len(c) % 2 == 0 for c in chunks)
    assert b"".join(chunks) == tone(1.0, 24000)


async def test_openai_retries_429_and_5xx_before_the_first_byte() -> None:
    srv = SpeechServer([429, 503, "ok"])
    async with serve(srv.app) as server:
        engine = OpenAITts(base_url=str(server.make_url("/v1")), api_key=KEY, backoff_s=0.01)
        try:
            chunks, _ = await collect(engine, "Hi.")
        finally:
            await engine.aclose()
    assert b"".join(chunks) == tone(1.0, 24000)
    assert len(srv.requests) == 3


async def test_openai_gives_up_after_the_retry_budget() -> None:
    srv = SpeechServer([500, 502, 500, "ok"])
    async with serve(srv.app) as server:
        engine = OpenAITts(
            base_url=str(server.make_url("/v1")), api_key=KEY, retries=2, backoff_s=0.01
        )
        try:
            with pytest.raises(ProviderError) as err:
                await collect(engine, "Hi.")
        finally:
            await engine.aclose()
    assert err.value.status == 500 and len(srv.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_openai_client_errors_are_not_retried(status: int) -> None:
    srv = SpeechServer([status])
    async with serve(srv.app) as server:
        key = KEY if status != 401 else "wrong"
        engine = OpenAITts(base_url=str(server.make_url("/v1")), api_key=key, backoff_s=0.01)
        try:
            with pytest.raises(ProviderError) as err:
                await collect(engine, "Hi.")
        finally:
            await engine.aclose()
    assert err.value.status == status and len(srv.requests) == 1
    assert ("bad key" if status == 401 else f"status {status}") in str(err.value)


async def test_openai_broken_stream_after_audio_is_not_retried() -> None:
    srv = SpeechServer(["break", "ok"])
    async with serve(srv.app) as server:
        engine = OpenAITts(base_url=str(server.make_url("/v1")), api_key=KEY, backoff_s=0.01)
        got: list[bytes] = []
        try:
            with pytest.raises(ProviderError, match="broke after"):
                stream = engine.stream("Hi.")
                async with contextlib.aclosing(stream):
                    async for pcm in stream:
                        got.append(pcm)
        finally:
            await engine.aclose()
    assert got and len(srv.requests) == 1  # audio already went out: a retry would repeat it


async def test_openai_connection_refused_is_a_provider_error() -> None:
    srv = SpeechServer([])
    async with serve(srv.app) as server:
        url = str(server.make_url("/v1"))
    engine = OpenAITts(base_url=url, api_key=KEY, retries=1, backoff_s=0.01)
    try:
        with pytest.raises(ProviderError, match="request failed"):
            await collect(engine, "Hi.")
    finally:
        await engine.aclose()
    assert engine.requests == 2


def test_openai_config_errors() -> None:
    with pytest.raises(ConfigError):
        OpenAITts(base_url="ftp://x")
    with pytest.raises(ConfigError):
        OpenAITts(speed=9)


# --------------------------------------------------------------------------------------------
# Cartesia: sans-I/O protocol

CTX = "ctx-1"


def proto() -> CartesiaProtocol:
    return CartesiaProtocol(model_id="sonic-2", voice_id="v-1", sample_rate=8000)


def test_cartesia_generation_message_shape() -> None:
    p = proto()
    msg = orjson.loads(p.generation(CTX, "Hello world."))
    assert msg == {
        "model_id": "sonic-2",
        "transcript": "Hello world.",
        "voice": {"mode": "id", "id": "v-1"},
        "language": "en",
        "context_id": CTX,
        "output_format": {"container": "raw", "encoding": "pcm_s16le", "sample_rate": 8000},
        "add_timestamps": True,
        "continue": False,
    }
    assert p.is_open(CTX)
    with pytest.raises(LocalProtocolError):
        p.generation(CTX, "again")  # a finished context takes no more input
    assert orjson.loads(p.cancel(CTX)) == {"context_id": CTX, "cancel": True}
    assert not p.is_open(CTX)
    with pytest.raises(LocalProtocolError):
        p.generation("", "x")


def test_cartesia_continuations_keep_the_context_open() -> None:
    p = proto()
    assert orjson.loads(p.generation("c", "Hello,", more=True))["continue"] is True
    assert orjson.loads(p.generation("c", " world.", more=False))["continue"] is False
    assert p.is_open("c")
    assert p.receive(b'{"type":"done","done":true,"context_id":"c"}') == Done("c")
    assert not p.is_open("c")


def test_cartesia_parses_server_messages() -> None:
    p = proto()
    p.generation(CTX, "Hello world")
    pcm = tone(0.01, 8000)
    chunk = {"type": "chunk", "data": base64.b64encode(pcm).decode(), "done": False}
    assert p.receive(orjson.dumps({**chunk, "context_id": CTX})) == Chunk(CTX, pcm)
    ts = {
        "type": "timestamps",
        "context_id": CTX,
        "word_timestamps": {"words": ["Hello", "world"], "start": [0, 0.5], "end": [0.4, 0.9]},
    }
    event = p.receive(orjson.dumps(ts))
    assert event == Timestamps(CTX, ("Hello", "world"), (0.0, 0.5), (0.4, 0.9))
    assert isinstance(event, Timestamps)
    words, cursor = words_from("Hello world", event, 0)
    assert [(w.word, w.char_start, w.char_end) for w in words] == [
        ("Hello", 0, 5),
        ("world", 6, 11),
    ]
    assert cursor == 11
    assert p.receive('{"type":"flush_done","context_id":"ctx-1"}') == Ignored(CTX, "flush_done")
    err = {"type": "error", "context_id": CTX, "status_code": 400, "error": "Invalid model"}
    assert p.receive(orjson.dumps(err)) == ServerError(CTX, 400, "Invalid model")
    assert not p.is_open(CTX)
    new = {"type": "error", "context_id": "x", "title": "Bad", "message": "voice not found"}
    assert p.receive(orjson.dumps(new)) == ServerError("x", None, "voice not found")


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[1, 2]",
        b'{"context_id": "c"}',
        b'{"type": "chunk", "context_id": "c", "data": "***"}',
        b'{"type": "chunk", "context_id": "c"}',
        b'{"type": "timestamps", "context_id": "c", "word_timestamps": {"words": ["a"]}}',
        b'{"type": "timestamps", "word_timestamps": {"words": ["a"], "start": [], "end": []}}',
        b'{"type": "done", "context_id": 5}',
    ],
)
def test_cartesia_rejects_malformed_messages(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        proto().receive(raw)


# --------------------------------------------------------------------------------------------
# Cartesia: client against a local server


class CartesiaServer:
    """Speaks Cartesia's TTS WebSocket: checks auth, validates requests, streams each context's
    audio (a tone per context, ``chunks`` messages of 20 ms, timestamps first) then ``done``."""

    def __init__(self, *, drop_first: bool = False, hold: bool = False) -> None:
        self.handshakes = 0
        self.refused = 0
        self.received: list[dict[str, Any]] = []
        self.cancelled: list[str] = []
        self.drop_first = drop_first  # close the first connection on its first request
        self.hold = hold  # after one chunk, wait for a cancel
        self.app = web.Application()
        self.app.router.add_get("/tts/websocket", self.handler)

    async def handler(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-API-Key") != KEY:
            self.refused += 1
            return web.json_response({"error": "unauthorized"}, status=401)
        assert request.headers.get("Cartesia-Version")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.handshakes += 1
        first_connection = self.handshakes == 1
        tasks: set[asyncio.Task[None]] = set()
        async for msg in ws:
            assert msg.type is WSMsgType.TEXT
            data = orjson.loads(msg.data)
            self.received.append(data)
            if data.get("cancel"):
                self.cancelled.append(data["context_id"])
                continue
            if self.drop_first and first_connection:
                await ws.close()
                break
            task = asyncio.create_task(self.speak(ws, data))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        for task in tasks:
            task.cancel()
        return ws

    async def speak(self, ws: web.WebSocketResponse, req: dict[str, Any]) -> None:
        ctx = req["context_id"]
        fmt = req["output_format"]
        assert fmt["container"] == "raw" and fmt["encoding"] == "pcm_s16le"
        assert req["voice"]["mode"] == "id" and req["model_id"]
        if req["transcript"].startswith("fail"):
            await ws.send_json(
                {"type": "error", "context_id": ctx, "status_code": 400, "error": "bad transcript"}
            )
            return
        rate = fmt["sample_rate"]
        words = req["transcript"].split()
        freq = 300.0 + 100 * (len(words) % 5)
        audio = tone(0.2 * len(words), rate, freq)
        if req.get("add_timestamps"):
            starts = [0.2 * i for i in range(len(words))]
            await ws.send_json(
                {
                    "type": "timestamps",
                    "context_id": ctx,
                    "done": False,
                    "word_timestamps": {
                        "words": [w.strip(".,!?") for w in words],
                        "start": starts,
                        "end": [s + 0.15 for s in starts],
                    },
                }
            )
        step = rate // 50 * 2
        for i in range(0, len(audio), step):
            if ctx in self.cancelled:
                return
            b64 = base64.b64encode(audio[i : i + step]).decode()
            await ws.send_json({"type": "chunk", "context_id": ctx, "data": b64, "done": False})
            await asyncio.sleep(0)
            if self.hold:
                while ctx not in self.cancelled:
                    await asyncio.sleep(0.005)
                return
        await ws.send_json({"type": "done", "context_id": ctx, "done": True, "status_code": 206})


def cartesia(server: TestServer, **kw: Any) -> CartesiaTts:
    url = str(server.make_url("")).replace("http://", "ws://")
    return CartesiaTts(voice_id="v-1", api_key=KEY, base_url=url, sample_rate=16000, **kw)


async def test_cartesia_streams_audio_and_word_timestamps_on_one_warm_connection() -> None:
    srv = CartesiaServer()
    async with serve(srv.app) as server:
        engine = cartesia(server)
        try:
            await engine.warm_up()
            assert engine.connected and srv.handshakes == 1
            text = "Hello there, my friend."
            chunks, stream = await collect(engine, text)
            chunks2, _ = await collect(engine, "Second one.")
        finally:
            await engine.aclose()
    assert srv.handshakes == 1  # both utterances used the warm connection
    assert len(chunks) == 40 and b"".join(chunks) == tone(0.8, 16000, 700.0)
    assert b"".join(chunks2) == tone(0.4, 16000, 500.0)
    assert not stream.estimated
    assert [(w.word, w.char_start, w.start_s) for w in stream.words] == [
        ("Hello", 0, 0.0),
        ("there", 6, 0.2),
        ("my", 13, 0.4),
        ("friend", 16, pytest.approx(0.6)),
    ]
    first = srv.received[0]
    assert first["transcript"] == text and first["continue"] is False
    assert first["add_timestamps"] is True
    assert first["output_format"]["sample_rate"] == 16000


async def test_cartesia_multiplexes_concurrent_generations() -> None:
    srv = CartesiaServer()
    async with serve(srv.app) as server:
        engine = cartesia(server)
        try:
            results = await asyncio.gather(
                collect(engine, "one"),
                collect(engine, "one two"),
                collect(engine, "one two three"),
            )
        finally:
            await engine.aclose()
    assert srv.handshakes == 1
    for n, (chunks, _) in enumerate(results, start=1):
        assert b"".join(chunks) == tone(0.2 * n, 16000, 300.0 + 100 * n)
    assert len({m["context_id"] for m in srv.received}) == 3


async def test_cartesia_abandoned_generation_sends_cancel() -> None:
    srv = CartesiaServer(hold=True)
    async with serve(srv.app) as server:
        engine = cartesia(server)
        try:
            stream = engine.stream("a long reply that will be cut off")
            assert await stream.__anext__()
            await stream.aclose()
            await wait_for(lambda: bool(srv.cancelled))
        finally:
            await engine.aclose()
    assert srv.cancelled == [srv.received[0]["context_id"]]
    assert [("cancel" in m) for m in srv.received] == [False, True]  # request, then cancel


async def test_cartesia_server_error_is_a_provider_error_and_the_connection_survives() -> None:
    srv = CartesiaServer()
    async with serve(srv.app) as server:
        engine = cartesia(server)
        try:
            with pytest.raises(ProviderError) as err:
                await collect(engine, "fail this one")
            chunks, _ = await collect(engine, "then this")
        finally:
            await engine.aclose()
    assert err.value.status == 400 and "bad transcript" in str(err.value)
    assert chunks and srv.handshakes == 1


async def test_cartesia_bad_key_is_refused_without_retry() -> None:
    srv = CartesiaServer()
    async with serve(srv.app) as server:
        url = str(server.make_url("")).replace("http://", "ws://")
        engine = CartesiaTts(voice_id="v", api_key="wrong", base_url=url, backoff_s=0.01)
        try:
            with pytest.raises(ProviderError) as err:
                await collect(engine, "hello")
        finally:
            await engine.aclose()
    assert err.value.status == 401 and srv.refused == 1


async def test_cartesia_reconnects_when_the_socket_dies_before_audio() -> None:
    srv = CartesiaServer(drop_first=True)
    async with serve(srv.app) as server:
        engine = cartesia(server)
        try:
            chunks, _ = await collect(engine, "hello again")
        finally:
            await engine.aclose()
    assert b"".join(chunks) == tone(0.4, 16000, 500.0)
    assert srv.handshakes == 2


def test_cartesia_config_errors() -> None:
    with pytest.raises(ConfigError):
        CartesiaTts(voice_id="v", api_key="k", sample_rate=11025)
    with pytest.raises(ConfigError):
        CartesiaTts(voice_id="v", api_key="k", base_url="https://api.cartesia.ai")
