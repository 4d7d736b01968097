"""Deepgram live transcription over its streaming WebSocket API.

The wire protocol (``wss://api.deepgram.com/v1/listen``):

* the query string configures the stream: ``encoding=linear16``, ``sample_rate``,
  ``channels``, ``model``, ``language``, ``interim_results``, ``endpointing`` (ms of silence
  before ``speech_final``, or ``false``), ``utterance_end_ms``, ``punctuate``,
  ``smart_format``, ``vad_events``;
* the handshake carries ``Authorization: Token <key>``; a refusal is an HTTP status (401, 400,
  ...) with a ``dg-error`` header;
* the client sends audio as **binary** messages and control as **text** JSON:
  ``{"type": "KeepAlive"}`` (Deepgram closes a stream after ~10 s with no audio),
  ``{"type": "Finalize"}`` (flush: finalize everything sent so far) and
  ``{"type": "CloseStream"}`` (flush, send ``Metadata``, close);
* the server sends ``Results`` (``channel.alternatives[0].transcript``, ``is_final``: this span
  will not change, ``speech_final``: its endpointing saw the speaker stop, ``from_finalize``: the
  answer to a Finalize), ``UtteranceEnd`` (``last_word_end``), ``SpeechStarted``, ``Metadata``
  (``request_id``, ``duration``) and, on failure, an ``Error`` or a close code >= 4000.

:class:`DeepgramProtocol` is that protocol without I/O (strings and bytes in, events out) and is
what the tests drive directly; :class:`DeepgramStream` puts it on an aiohttp WebSocket, with a
keep-alive timer; :class:`DeepgramEngine` holds the key, the options and the HTTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlencode

import aiohttp
import orjson

from harken.errors import ConfigError, ProviderError, RemoteProtocolError
from harken.speech.stt.base import SAMPLE_RATE, SttEvent

__all__ = ["DEFAULT_URL", "DeepgramEngine", "DeepgramOptions", "DeepgramProtocol", "DeepgramStream"]

DEFAULT_URL: Final = "wss://api.deepgram.com/v1/listen"
PROVIDER: Final = "deepgram"
_CLOSED: Final = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


def _flag(value: bool) -> str:
    return "true" if value else "false"


@dataclass(frozen=True, slots=True)
class DeepgramOptions:
    """The stream's query parameters (Deepgram's names and meanings)."""

    model: str = "nova-2"
    language: str = "en-US"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1
    interim_results: bool = True
    endpointing: int | bool = 300
    utterance_end_ms: int | None = 1000
    punctuate: bool = True
    smart_format: bool = True
    vad_events: bool = False

    def query(self) -> dict[str, str]:
        q = {
            "encoding": "linear16",
            "sample_rate": str(self.sample_rate),
            "channels": str(self.channels),
            "model": self.model,
            "language": self.language,
            "interim_results": _flag(self.interim_results),
            "punctuate": _flag(self.punctuate),
            "smart_format": _flag(self.smart_format),
            "vad_events": _flag(self.vad_events),
        }
        if isinstance(self.endpointing, bool):
            q["endpointing"] = _flag(self.endpointing)
        else:
            q["endpointing"] = str(self.endpointing)
        if self.utterance_end_ms is not None:
            # Deepgram requires interim results for UtteranceEnd
            q["utterance_end_ms"] = str(self.utterance_end_ms)
        return q


class DeepgramProtocol:
    """Deepgram's live protocol, sans I/O."""

    KEEP_ALIVE: Final = '{"type":"KeepAlive"}'
    FINALIZE: Final = '{"type":"Finalize"}'
    CLOSE_STREAM: Final = '{"type":"CloseStream"}'

    def __init__(self) -> None:
        self.request_id: str | None = None
        self.metadata: dict[str, Any] | None = None
        self.audio_sent_s = 0.0
        self.sample_rate = SAMPLE_RATE

    @staticmethod
    def url(base: str, options: DeepgramOptions) -> str:
        sep = "&" if "?" in base else "?"
        return base + sep + urlencode(options.query())

    @staticmethod
    def headers(api_key: str) -> dict[str, str]:
        return {"Authorization": f"Token {api_key}"}

    def audio(self, pcm: bytes) -> bytes:
        """The binary message for a chunk of 16-bit PCM."""
        if len(pcm) & 1:
            raise ValueError("linear16 audio must have an even number of bytes")
        self.audio_sent_s += len(pcm) / 2 / self.sample_rate
        return pcm

    def receive(self, text: str | bytes) -> list[SttEvent]:
        """Events from one text message; raises on an error message or invalid JSON."""
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError(f"deepgram sent invalid JSON: {exc}") from exc
        if not isinstance(msg, dict):
            raise RemoteProtocolError("deepgram sent a JSON message that is not an object")
        kind = msg.get("type")
        if kind == "Results":
            return [self._results(msg)]
        if kind == "UtteranceEnd":
            end = msg.get("last_word_end")
            t = float(end) if isinstance(end, int | float) else 0.0
            return [SttEvent("", utterance_end=True, start=t, end=t)]
        if kind == "Metadata":
            self.metadata = msg
            rid = msg.get("request_id")
            self.request_id = str(rid) if rid is not None else None
            return []
        if kind == "Error":
            detail = msg.get("description") or msg.get("message") or msg.get("variant") or msg
            raise ProviderError(PROVIDER, None, str(detail))
        return []  # SpeechStarted and anything newer: not needed here

    def _results(self, msg: Mapping[str, Any]) -> SttEvent:
        channel = msg.get("channel")
        alternatives = channel.get("alternatives") if isinstance(channel, dict) else None
        if not isinstance(alternatives, list):
            raise RemoteProtocolError("deepgram Results without channel.alternatives")
        best = alternatives[0] if alternatives and isinstance(alternatives[0], dict) else {}
        transcript = best.get("transcript", "")
        if not isinstance(transcript, str):
            raise RemoteProtocolError("deepgram Results with a non-string transcript")
        confidence = best.get("confidence")
        start = msg.get("start", 0.0)
        duration = msg.get("duration", 0.0)
        start_f = float(start) if isinstance(start, int | float) else 0.0
        dur_f = float(duration) if isinstance(duration, int | float) else 0.0
        return SttEvent(
            transcript,
            final=bool(msg.get("is_final")),
            speech_final=bool(msg.get("speech_final")),
            flushed=bool(msg.get("from_finalize")),
            confidence=float(confidence) if isinstance(confidence, int | float) else None,
            start=start_f,
            end=start_f + dur_f,
        )


class DeepgramStream:
    """One live Deepgram stream on an aiohttp WebSocket (an :class:`~.base.SttStream`).

    A keep-alive is sent whenever no message went out for ``keepalive_s``.
    """

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, protocol: DeepgramProtocol, keepalive_s: float
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.keepalive_s = keepalive_s
        self.keepalives = 0
        self._last_sent = time.monotonic()
        self._closing = False
        self._keeper = asyncio.get_running_loop().create_task(
            self._keep_alive(), name="harken:deepgram-keepalive"
        )

    async def _keep_alive(self) -> None:
        while not self.ws.closed:
            idle = time.monotonic() - self._last_sent
            if idle >= self.keepalive_s:
                await self._send_text(DeepgramProtocol.KEEP_ALIVE)
                self.keepalives += 1
                idle = 0.0
            await asyncio.sleep(self.keepalive_s - idle)

    async def _send_text(self, text: str) -> None:
        try:
            await self.ws.send_str(text)
        except ConnectionError as exc:
            raise ProviderError(PROVIDER, None, f"connection lost: {exc}") from exc
        self._last_sent = time.monotonic()

    async def send(self, pcm: bytes) -> None:
        if self.ws.closed:
            raise ProviderError(PROVIDER, None, "the stream is closed")
        try:
            await self.ws.send_bytes(self.protocol.audio(pcm))
        except ConnectionError as exc:
            raise ProviderError(PROVIDER, None, f"connection lost: {exc}") from exc
        self._last_sent = time.monotonic()

    async def finalize(self) -> None:
        await self._send_text(DeepgramProtocol.FINALIZE)

    async def events(self) -> AsyncIterator[SttEvent]:
        ws = self.ws
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT:
                for event in self.protocol.receive(msg.data):
                    yield event
            elif msg.type == aiohttp.WSMsgType.ERROR:
                raise ProviderError(PROVIDER, None, f"websocket error: {ws.exception()}")
            elif msg.type in _CLOSED:
                code = ws.close_code
                if code is not None and code != 1000 and not self._closing:
                    reason = msg.extra if msg.type == aiohttp.WSMsgType.CLOSE else ""
                    raise ProviderError(PROVIDER, code, f"stream closed: {reason or code}")
                return

    async def aclose(self) -> None:
        """Send ``CloseStream`` and close (the server answers with Metadata and a close)."""
        self._closing = True
        self._keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._keeper
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError, ProviderError):
                await self._send_text(DeepgramProtocol.CLOSE_STREAM)
            await self.ws.close()


class DeepgramEngine:
    """Deepgram live transcription (:class:`~harken.speech.stt.base.StreamingSttEngine`).

    ``api_key`` defaults to ``$DEEPGRAM_API_KEY``; ``url`` to Deepgram's (or
    ``$HARKEN_DEEPGRAM_URL``).
    """

    name = "deepgram"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        api_key: str | None = None,
        *,
        url: str | None = None,
        options: DeepgramOptions | None = None,
        keepalive_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("DEEPGRAM_API_KEY", "")
        if not key:
            raise ConfigError("Deepgram needs an API key (api_key= or $DEEPGRAM_API_KEY)")
        self.api_key = key
        self.url = url or os.environ.get("HARKEN_DEEPGRAM_URL") or DEFAULT_URL
        self.options = options or DeepgramOptions()
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        self._session = session
        self._own_session = session is None

    async def warm_up(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def open_stream(self) -> DeepgramStream:
        await self.warm_up()
        assert self._session is not None
        url = DeepgramProtocol.url(self.url, self.options)
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                ws = await self._session.ws_connect(
                    url,
                    headers=DeepgramProtocol.headers(self.api_key),
                    timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                    autoping=True,
                    max_msg_size=0,
                )
        except aiohttp.WSServerHandshakeError as exc:
            headers = exc.headers
            detail = (headers.get("dg-error") if headers is not None else None) or exc.message
            raise ProviderError(PROVIDER, exc.status, f"connection refused: {detail}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(PROVIDER, None, f"cannot connect to {self.url}: {exc}") from exc
        protocol = DeepgramProtocol()
        protocol.sample_rate = self.options.sample_rate
        return DeepgramStream(ws, protocol, self.keepalive_s)

    async def aclose(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None
