"""Cartesia's streaming TTS WebSocket (``wss://api.cartesia.ai/tts/websocket``).

Why Cartesia for the WebSocket vendor: one socket carries many generations at once, each under
its own ``context_id``, so a process keeps **one warm connection** per engine and an utterance
never pays a TCP/TLS/WebSocket handshake; an abandoned generation is stopped with a ``cancel``
message instead of a reconnect; word timestamps come with the audio.

The wire protocol, as used here::

    connect   GET {base_url}/tts/websocket   headers: X-API-Key, Cartesia-Version
    client -> {"model_id", "transcript", "voice": {"mode": "id", "id"}, "language",
               "context_id", "output_format": {"container": "raw", "encoding": "pcm_s16le",
               "sample_rate"}, "add_timestamps": true, "continue": false}
    client -> {"context_id", "cancel": true}                      (abandon a generation)
    server -> {"type": "chunk", "data": base64 PCM, "done": false, "context_id", ...}
    server -> {"type": "timestamps", "word_timestamps": {"words", "start", "end"}, ...}
    server -> {"type": "done", "done": true, "context_id"}
    server -> {"type": "error", "done": true, "context_id", "status_code"?, "error" | "message"}

:class:`CartesiaProtocol` is the sans-I/O part: it builds messages and turns received text into
events (:class:`Chunk`, :class:`Timestamps`, :class:`Done`, :class:`ServerError`), raising
:class:`~harken.errors.RemoteProtocolError` on malformed input; it has no sockets and is tested
on its own. :class:`CartesiaTts` is the thin aiohttp layer: one connection, one reader task that
routes events to per-context queues, reconnect on demand. A failed handshake is retried on
429/5xx before any audio; a 401/403 raises ``ProviderError`` at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import orjson

from harken.errors import (
    ConfigError,
    LocalProtocolError,
    ProviderError,
    RemoteProtocolError,
)
from harken.speech.tts.base import TtsEngine, TtsStream, WordTiming

__all__ = [
    "CartesiaProtocol",
    "CartesiaTts",
    "Chunk",
    "Done",
    "Event",
    "Ignored",
    "ServerError",
    "Timestamps",
]

log = logging.getLogger("harken.speech.tts")

_PROVIDER: Final = "cartesia"
_RATES: Final = frozenset({8000, 16000, 22050, 24000, 44100, 48000})
_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})


# --------------------------------------------------------------------------------------------
# events (sans-I/O)


@dataclass(slots=True, frozen=True)
class Chunk:
    """Audio for a context: raw int16 PCM."""

    context_id: str
    pcm: bytes


@dataclass(slots=True, frozen=True)
class Timestamps:
    """Word timings for a context, seconds from the context's first sample."""

    context_id: str
    words: tuple[str, ...]
    starts: tuple[float, ...]
    ends: tuple[float, ...]


@dataclass(slots=True, frozen=True)
class Done:
    """The context's generation is complete."""

    context_id: str


@dataclass(slots=True, frozen=True)
class ServerError:
    """The server reports an error for a context (or for the connection, ``context_id`` "")."""

    context_id: str
    status: int | None
    message: str


@dataclass(slots=True, frozen=True)
class Ignored:
    """A message harken does not use (``flush_done``, ``phoneme_timestamps``, ...)."""

    context_id: str
    type: str


Event = Chunk | Timestamps | Done | ServerError | Ignored


def _field(msg: dict[str, Any], key: str, kind: type) -> Any:
    value = msg.get(key)
    if not isinstance(value, kind):
        raise RemoteProtocolError(f"cartesia: {key!r} missing or not {kind.__name__}: {msg!r:.200}")
    return value


class CartesiaProtocol:
    """Builds Cartesia TTS messages and parses the server's (no I/O).

    It tracks which contexts are open: a context is open from :meth:`generation` until a
    ``done`` or ``error`` for it is received, or :meth:`cancel`; events for contexts that are not
    open (late chunks of a cancelled generation) are still returned, and :meth:`is_open` tells
    them apart.
    """

    def __init__(
        self,
        *,
        model_id: str,
        voice_id: str,
        language: str = "en",
        sample_rate: int = 16000,
        add_timestamps: bool = True,
    ) -> None:
        if sample_rate not in _RATES:
            raise ConfigError(f"cartesia sample_rate must be one of {sorted(_RATES)}")
        self.model_id = model_id
        self.voice_id = voice_id
        self.language = language
        self.sample_rate = sample_rate
        self.add_timestamps = add_timestamps
        self._open: set[str] = set()
        self._ended: set[str] = set()  # contexts sent with continue=false

    def is_open(self, context_id: str) -> bool:
        return context_id in self._open

    @property
    def open_contexts(self) -> frozenset[str]:
        return frozenset(self._open)

    def generation(self, context_id: str, transcript: str, *, more: bool = False) -> str:
        """A generation request; ``more=True`` (``continue``) says more text follows."""
        if not context_id:
            raise LocalProtocolError("cartesia: context_id must not be empty")
        if context_id in self._ended:
            raise LocalProtocolError(f"cartesia: context {context_id!r} already finished")
        msg = {
            "model_id": self.model_id,
            "transcript": transcript,
            "voice": {"mode": "id", "id": self.voice_id},
            "language": self.language,
            "context_id": context_id,
            "output_format": {
                "container": "raw",
                "encoding": "pcm_s16le",
                "sample_rate": self.sample_rate,
            },
            "add_timestamps": self.add_timestamps,
            "continue": more,
        }
        self._open.add(context_id)
        if not more:
            self._ended.add(context_id)
        return orjson.dumps(msg).decode()

    def cancel(self, context_id: str) -> str:
        """Ask the server to stop generating for ``context_id``."""
        self.forget(context_id)
        return orjson.dumps({"context_id": context_id, "cancel": True}).decode()

    def forget(self, context_id: str) -> None:
        """Stop tracking a context (its connection is gone)."""
        self._open.discard(context_id)
        self._ended.discard(context_id)

    def receive(self, data: str | bytes) -> Event:
        """Parse one server message."""
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError(f"cartesia: message is not JSON: {exc}") from exc
        if not isinstance(msg, dict):
            raise RemoteProtocolError(f"cartesia: message is not an object: {msg!r:.200}")
        kind = msg.get("type")
        ctx = msg.get("context_id") or ""
        if not isinstance(ctx, str):
            raise RemoteProtocolError("cartesia: context_id is not a string")
        if kind == "chunk":
            try:
                pcm = base64.b64decode(_field(msg, "data", str), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise RemoteProtocolError(f"cartesia: bad base64 audio: {exc}") from exc
            return Chunk(ctx, pcm)
        if kind == "timestamps":
            ts = _field(msg, "word_timestamps", dict)
            words, starts, ends = ts.get("words"), ts.get("start"), ts.get("end")
            if not all(isinstance(v, list) for v in (words, starts, ends)):
                raise RemoteProtocolError("cartesia: word_timestamps needs words/start/end lists")
            if not len(words) == len(starts) == len(ends):
                raise RemoteProtocolError("cartesia: word_timestamps lists differ in length")
            try:
                return Timestamps(
                    ctx,
                    tuple(str(w) for w in words),
                    tuple(float(s) for s in starts),
                    tuple(float(e) for e in ends),
                )
            except (TypeError, ValueError) as exc:
                raise RemoteProtocolError(f"cartesia: bad timestamp: {exc}") from exc
        if kind == "done":
            self.forget(ctx)
            return Done(ctx)
        if kind == "error":
            self.forget(ctx)
            status = msg.get("status_code")
            text = msg.get("error") or msg.get("message") or msg.get("title") or "unknown error"
            return ServerError(ctx, status if isinstance(status, int) else None, str(text))
        if isinstance(kind, str):
            return Ignored(ctx, kind)
        raise RemoteProtocolError(f"cartesia: message without a type: {msg!r:.200}")


def words_from(text: str, ts: Timestamps, cursor: int) -> tuple[list[WordTiming], int]:
    """Map a timestamps event onto ``text`` (searching forward from ``cursor``)."""
    out: list[WordTiming] = []
    low = text.lower()
    for word, start, end in zip(ts.words, ts.starts, ts.ends, strict=True):
        at = low.find(word.lower(), cursor) if word else -1
        if at >= 0:
            cursor = at + len(word)
            out.append(WordTiming(word, start, end, at, at + len(word)))
        else:
            out.append(WordTiming(word, start, end, -1, -1))
    return out, cursor


# --------------------------------------------------------------------------------------------
# I/O


_CLOSED: Final = object()


class CartesiaTts(TtsEngine):
    """Remote TTS over Cartesia's WebSocket; one shared connection per engine and event loop."""

    name = "cartesia"
    local = False

    def __init__(
        self,
        *,
        voice_id: str,
        api_key: str | None = None,
        model_id: str = "sonic-2",
        language: str = "en",
        sample_rate: int = 16000,
        base_url: str = "wss://api.cartesia.ai",
        version: str = "2025-04-16",
        retries: int = 2,
        backoff_s: float = 0.2,
        connect_timeout_s: float = 5.0,
        first_audio_timeout_s: float = 10.0,
        heartbeat_s: float = 20.0,
    ) -> None:
        if not base_url.startswith(("ws://", "wss://")):
            raise ConfigError(f"base_url must be a ws(s) URL, got {base_url!r}")
        self.url = base_url.rstrip("/") + "/tts/websocket"
        self.api_key = api_key if api_key is not None else os.environ.get("CARTESIA_API_KEY", "")
        if not self.api_key:
            raise ConfigError("cartesia needs an API key (api_key or CARTESIA_API_KEY)")
        self.protocol = CartesiaProtocol(
            model_id=model_id, voice_id=voice_id, language=language, sample_rate=sample_rate
        )
        self.sample_rate = sample_rate
        self.version = version
        self.retries = retries
        self.backoff_s = backoff_s
        self.connect_timeout_s = connect_timeout_s
        self.first_audio_timeout_s = first_audio_timeout_s
        self.heartbeat_s = heartbeat_s
        self._session: aiohttp.ClientSession | None = None
        self._conn: _Conn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None
        self.connects = 0  # handshakes completed
        self.unroutable = 0  # events for contexts nobody waits for (late chunks after cancel)

    # --- connection ----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.ws.closed

    async def warm_up(self) -> None:
        """Open the WebSocket now, so the first utterance finds it ready."""
        await self._connection()

    async def _connection(self) -> _Conn:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests, a fresh worker): start over
            self._session = None
            self._conn = None
            self._connecting = asyncio.Lock()
            self._loop = loop
        assert self._connecting is not None
        async with self._connecting:
            conn = self._conn
            if conn is not None and not conn.ws.closed:
                return conn
            conn = _Conn(await self._handshake())
            conn.reader = loop.create_task(self._read(conn), name="harken:cartesia-reader")
            self._conn = conn
            return conn

    async def _handshake(self) -> aiohttp.ClientWebSocketResponse:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s)
            )
        headers = {"X-API-Key": self.api_key, "Cartesia-Version": self.version}
        attempt = 0
        while True:
            try:
                ws = await self._session.ws_connect(
                    self.url,
                    headers=headers,
                    heartbeat=self.heartbeat_s,
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    max_msg_size=16 * 1024 * 1024,
                )
            except aiohttp.WSServerHandshakeError as exc:
                failure = ProviderError(_PROVIDER, exc.status, f"handshake refused: {exc.message}")
                if exc.status not in _RETRY_STATUSES or attempt >= self.retries:
                    raise failure from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.retries:
                    raise ProviderError(_PROVIDER, None, f"cannot connect: {exc!r}") from exc
            else:
                self.connects += 1
                return ws
            await asyncio.sleep(self.backoff_s * 2**attempt)
            attempt += 1

    async def _read(self, conn: _Conn) -> None:
        ws = conn.ws
        reason = "connection closed"
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    try:
                        event = self.protocol.receive(msg.data)
                    except RemoteProtocolError as exc:
                        reason = str(exc)
                        break
                    self._route(conn, event)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"connection error: {ws.exception()!r}"
                    break
        finally:
            conn.fail(ProviderError(_PROVIDER, None, reason))
            if self._conn is conn:
                self._conn = None
            await ws.close()

    def _route(self, conn: _Conn, event: Event) -> None:
        if isinstance(event, ServerError) and not event.context_id:
            conn.fail(ProviderError(_PROVIDER, event.status, event.message))
            return
        waiting = conn.queues.get(event.context_id)
        if waiting is None:
            self.unroutable += 1
            return
        waiting.put_nowait(event)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.ws.close()
            if conn.reader is not None:
                await asyncio.gather(conn.reader, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- synthesis -----------------------------------------------------------------------------

    async def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        attempt = 0
        while True:
            lost: _Lost | None = None
            async with contextlib.aclosing(self._attempt(text, stream)) as chunks:
                try:
                    async for pcm in chunks:
                        yield pcm
                    return
                except _Lost as exc:
                    lost = exc
            # the connection died before any audio (an idle socket the server had dropped):
            # reconnect and ask again
            if lost.got_audio or attempt >= self.retries:
                raise lost.error
            attempt += 1
            log.info("%s: %s before any audio; retry %d", _PROVIDER, lost.error, attempt)

    async def _attempt(self, text: str, stream: TtsStream) -> AsyncGenerator[bytes, None]:
        conn = await self._connection()
        ws = conn.ws
        ctx = uuid.uuid4().hex
        queue: asyncio.Queue[object] = asyncio.Queue()
        conn.queues[ctx] = queue
        finished = False
        cursor = 0
        got_audio = False
        try:
            try:
                await ws.send_str(self.protocol.generation(ctx, text))
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                finished = True
                raise _Lost(ProviderError(_PROVIDER, None, f"send failed: {exc!r}"), False) from exc
            while True:
                timeout = None if got_audio else self.first_audio_timeout_s
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    raise ProviderError(_PROVIDER, None, "no audio before the timeout") from None
                if isinstance(item, ProviderError):
                    finished = True
                    if item.status is None:  # the connection failed
                        raise _Lost(item, got_audio)
                    raise item
                if isinstance(item, Chunk):
                    if item.pcm:
                        got_audio = True
                        yield item.pcm
                elif isinstance(item, Timestamps):
                    words, cursor = words_from(text, item, cursor)
                    stream.words.extend(words)
                elif isinstance(item, Done):
                    finished = True
                    return
                elif isinstance(item, ServerError):
                    finished = True
                    raise ProviderError(_PROVIDER, item.status, item.message)
        finally:
            conn.queues.pop(ctx, None)
            if not finished and self.protocol.is_open(ctx):
                cancel = self.protocol.cancel(ctx)
                if not ws.closed:
                    with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                        await ws.send_str(cancel)
            self.protocol.forget(ctx)


class _Conn:
    """One WebSocket, its reader task, and the contexts waiting on it."""

    __slots__ = ("queues", "reader", "ws")

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.reader: asyncio.Task[None] | None = None
        self.queues: dict[str, asyncio.Queue[object]] = {}

    def fail(self, error: ProviderError) -> None:
        for waiting in self.queues.values():
            waiting.put_nowait(error)


class _Lost(Exception):
    """The connection failed during a generation (internal: decides whether to retry)."""

    def __init__(self, error: ProviderError, got_audio: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.got_audio = got_audio
