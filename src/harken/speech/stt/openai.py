"""Transcription through any OpenAI-compatible ``/v1/audio/transcriptions`` endpoint.

``POST {base_url}/v1/audio/transcriptions`` as ``multipart/form-data`` with the fields
``file`` (a 16 kHz mono 16-bit WAV, ``audio.wav``, ``audio/wav``), ``model``, ``language``,
``response_format`` (``json``: ``{"text": ...}``; ``verbose_json`` adds ``language``,
``duration`` and ``segments`` with ``avg_logprob``), ``temperature`` and, when there is one,
``prompt``; ``Authorization: Bearer <key>``. OpenAI, Groq, a local faster-whisper server or
vLLM answer the same way.

Failures: 429 and 5xx answers, timeouts and connection errors are retried up to
``max_retries`` times with jittered exponential backoff (``Retry-After`` is honoured when the
server sends one); any other status raises :class:`~harken.errors.ProviderError` at once with
the server's ``error.message``.

This is a batch engine with ``partials = False``: a request per partial pass would be slow and
billed, so :class:`~harken.speech.stt.service.SttService` sends one request per stretch of
speech, when it ends.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import struct
import time
from typing import Any, Final

import aiohttp
import orjson

from harken.errors import ConfigError, ProviderError
from harken.speech.stt.base import SAMPLE_RATE, Transcription

__all__ = ["OpenAITranscriptionEngine", "wav_bytes"]

PROVIDER: Final = "openai"
_RETRY_STATUS: Final = frozenset({408, 409, 429, 500, 502, 503, 504})


def wav_bytes(pcm: bytes, sample_rate: int = SAMPLE_RATE) -> bytes:
    """A RIFF/WAVE file around 16-bit mono PCM."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        sample_rate,
        sample_rate * 2,
        2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm


def _error_message(body: bytes) -> str:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode(errors="replace") or "no body"
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return str(doc)[:200]


class OpenAITranscriptionEngine:
    """OpenAI-compatible transcription (:class:`~harken.speech.stt.base.SttEngine`)."""

    name = "openai"
    sample_rate = SAMPLE_RATE
    partials = False

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        model: str = "whisper-1",
        language: str | None = "en",
        response_format: str = "json",
        temperature: float = 0.0,
        timeout_s: float = 30.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        backoff_cap_s: float = 8.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY", "")
        if not key:
            raise ConfigError("the transcription API needs a key (api_key= or $OPENAI_API_KEY)")
        if response_format not in ("json", "verbose_json"):
            raise ConfigError(f"response_format must be json or verbose_json: {response_format!r}")
        base = base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com"
        base = base.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        self.url = base + "/v1/audio/transcriptions"
        self.api_key = key
        self.model = model
        self.language = language
        self.response_format = response_format
        self.temperature = temperature
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.backoff_cap_s = backoff_cap_s
        self.retries = 0
        self._session = session
        self._own_session = session is None
        self._random = random.Random()

    async def warm_up(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def aclose(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _form(self, pcm: bytes, prompt: str) -> aiohttp.FormData:
        form = aiohttp.FormData()
        form.add_field("file", wav_bytes(pcm), filename="audio.wav", content_type="audio/wav")
        form.add_field("model", self.model)
        if self.language:
            form.add_field("language", self.language)
        form.add_field("response_format", self.response_format)
        form.add_field("temperature", f"{self.temperature:g}")
        if prompt:
            form.add_field("prompt", prompt)
        return form

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(self.backoff_cap_s, max(0.0, float(retry_after)))
            except ValueError:
                pass
        base = min(self.backoff_cap_s, self.backoff_s * (2**attempt))
        return float(base * self._random.uniform(0.5, 1.5))

    async def transcribe(self, pcm: bytes, *, prompt: str = "", prefix: str = "") -> Transcription:
        """One request (retried as described above). ``prefix`` joins the prompt: the API has
        no forced prefix."""
        await self.warm_up()
        assert self._session is not None
        context = " ".join(p for p in (prompt.strip(), prefix.strip()) if p)
        headers = {"Authorization": f"Bearer {self.api_key}"}
        t0 = time.perf_counter()
        attempt = 0
        while True:
            retry_after: str | None = None
            try:
                async with self._session.post(
                    self.url, data=self._form(pcm, context), headers=headers, timeout=self.timeout
                ) as resp:
                    body = await resp.read()
                    if resp.status == 200:
                        return self._parse(body, len(pcm), time.perf_counter() - t0)
                    if resp.status not in _RETRY_STATUS or attempt >= self.max_retries:
                        raise ProviderError(PROVIDER, resp.status, _error_message(body))
                    retry_after = resp.headers.get("Retry-After")
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
                if attempt >= self.max_retries:
                    raise ProviderError(PROVIDER, None, f"request failed: {exc!r}") from exc
            attempt += 1
            self.retries += 1
            await asyncio.sleep(self._delay(attempt - 1, retry_after))

    def _parse(self, body: bytes, nbytes: int, elapsed: float) -> Transcription:
        try:
            doc: Any = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProviderError(PROVIDER, 200, f"invalid JSON in the answer: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
            raise ProviderError(PROVIDER, 200, "the answer has no 'text'")
        confidence: float | None = None
        segments = doc.get("segments")
        if isinstance(segments, list) and segments:
            logprobs = [
                float(s["avg_logprob"])
                for s in segments
                if isinstance(s, dict) and isinstance(s.get("avg_logprob"), int | float)
            ]
            if logprobs:
                confidence = math.exp(min(0.0, sum(logprobs) / len(logprobs)))
        language = doc.get("language")
        return Transcription(
            text=doc["text"].strip(),
            audio_s=nbytes / 2 / SAMPLE_RATE,
            elapsed_s=elapsed,
            confidence=confidence,
            language=language if isinstance(language, str) else self.language,
        )
