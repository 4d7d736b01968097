"""OpenAI-compatible speech: ``POST {base_url}/audio/speech``, raw PCM streamed as it arrives.

Works with OpenAI and with servers that copy its API (Kokoro-FastAPI, openedai-speech, vLLM-style
gateways...). ``base_url`` follows the OpenAI SDKs' convention and includes the version prefix
(``https://api.openai.com/v1``; a local server is typically ``http://host:8880/v1``).

The request asks for ``response_format: "pcm"`` (raw 16-bit little-endian mono; 24 kHz at
OpenAI, so ``sample_rate`` defaults to 24000) and the body is read incrementally: every chunk the
server flushes is yielded at once. Errors:

* 429 and 5xx statuses, and connection failures, are retried ``retries`` times with exponential
  backoff (``Retry-After`` is honoured up to ``max_backoff_s``), but **only before the first byte
  of audio**: once audio has gone downstream a retry would repeat it, so a broken stream raises;
* other statuses raise :class:`~harken.errors.ProviderError` at once, with the server's message;
* a stream that stalls longer than ``read_timeout_s`` raises ``ProviderError``.

One ``aiohttp.ClientSession`` per engine and event loop keeps connections alive between
utterances (``warm_up`` creates it); ``aclose()`` releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import aiohttp
import orjson

from harken.errors import ConfigError, ProviderError
from harken.speech.tts.base import TtsEngine, TtsStream

__all__ = ["OpenAITts"]

log = logging.getLogger("harken.speech.tts")

_RETRY_STATUSES: Final = frozenset({429, 500, 502, 503, 504})
_PROVIDER: Final = "openai-tts"


def _error_message(body: bytes) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body's start."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:300].decode("utf-8", "replace").strip() or "no message"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
    return body[:300].decode("utf-8", "replace")


class OpenAITts(TtsEngine):
    """Remote TTS over the OpenAI ``/audio/speech`` API, streamed as raw PCM."""

    name = "openai"
    local = False

    def __init__(
        self,
        *,
        base_url: str = "https://api.openai.com/v1",
        api_key: str | None = None,
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        speed: float | None = None,
        instructions: str | None = None,
        sample_rate: int = 24000,
        retries: int = 2,
        backoff_s: float = 0.2,
        max_backoff_s: float = 2.0,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 15.0,
        extra_body: Mapping[str, Any] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must be an http(s) URL, got {base_url!r}")
        if speed is not None and not 0.25 <= speed <= 4.0:
            raise ConfigError(f"speed must be 0.25-4.0, got {speed}")
        if retries < 0:
            raise ConfigError("retries must be >= 0")
        self.url = base_url.rstrip("/") + "/audio/speech"
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.model = model
        self.voice = voice
        self.speed = speed
        self.instructions = instructions
        self.sample_rate = sample_rate
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=read_timeout_s
        )
        self.extra_body = dict(extra_body or {})
        self._own_session = session is None
        self._session = session
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self.requests = 0  # HTTP requests sent, retries included

    def body(self, text: str) -> dict[str, Any]:
        """The JSON request body for ``text``."""
        body: dict[str, Any] = {
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "pcm",
        }
        if self.speed is not None:
            body["speed"] = self.speed
        if self.instructions:
            body["instructions"] = self.instructions
        body.update(self.extra_body)
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "audio/pcm, */*"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _client(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._session
        if not self._own_session:
            assert session is not None
            return session
        if session is None or session.closed or self._session_loop is not loop:
            session = self._session = aiohttp.ClientSession(timeout=self.timeout)
            self._session_loop = loop
        return session

    async def warm_up(self) -> None:
        """Create the connection pool (the first request still pays TCP/TLS set-up)."""
        self._client()

    async def aclose(self) -> None:
        if self._own_session and self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None if self._own_session else self._session

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay: float = self.backoff_s * (2**attempt)
        if retry_after:
            with contextlib.suppress(ValueError):
                delay = float(retry_after)
        return max(0.0, min(delay, self.max_backoff_s))

    async def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        payload = orjson.dumps(self.body(text))
        headers = self._headers()
        session = self._client()
        attempt = 0
        while True:
            sent = 0
            retry_after: str | None = None
            failure: ProviderError
            self.requests += 1
            try:
                async with session.post(
                    self.url, data=payload, headers=headers, timeout=self.timeout
                ) as resp:
                    if resp.status != 200:
                        body = await resp.read()
                        failure = ProviderError(_PROVIDER, resp.status, _error_message(body))
                        if resp.status not in _RETRY_STATUSES:
                            raise failure
                        retry_after = resp.headers.get("Retry-After")
                    else:
                        async for data in resp.content.iter_any():
                            sent += len(data)
                            yield data
                        return
            except ProviderError:
                raise
            except (TimeoutError, aiohttp.ClientError) as exc:
                reason = "timed out" if isinstance(exc, TimeoutError) else str(exc)
                if sent:
                    raise ProviderError(
                        _PROVIDER, None, f"audio stream broke after {sent} bytes: {reason}"
                    ) from exc
                failure = ProviderError(_PROVIDER, None, f"request failed: {reason or exc!r}")
                failure.__cause__ = exc
            if attempt >= self.retries:
                raise failure
            delay = self._delay(attempt, retry_after)
            attempt += 1
            log.info("%s: %s; retry %d in %.2f s", _PROVIDER, failure, attempt, delay)
            await asyncio.sleep(delay)
