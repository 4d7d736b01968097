"""Remote STT clients against local servers that speak the providers' protocols.

The servers really transcribe: they run the local Whisper engine on the audio they receive, so
a test passes only if the client's audio arrived intact (encoding, rate, framing, WAV header).
"""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import WSMsgType, web

from harken.bench.stt_corpus import SENTENCES, synthesize, wer
from harken.errors import ProviderError, RemoteProtocolError
from harken.frames import (
    AudioFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Call
from harken.speech.stt.deepgram import DeepgramEngine, DeepgramOptions, DeepgramProtocol
from harken.speech.stt.openai import OpenAITranscriptionEngine
from harken.speech.stt.service import SttService
from harken.speech.stt.whisper import WhisperEngine

KEY = "test-key"
TEXT = SENTENCES[2]  # "My order never arrived and I need a refund."


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    engine = WhisperEngine()
    engine.warm_up_sync()
    return engine


@pytest.fixture(scope="module")
def speech() -> bytes:
    return synthesize(TEXT, "espeak").tobytes()


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


# --------------------------------------------------------------------------------------------
# Deepgram


@dataclass
class DeepgramServer:
    """Deepgram's live endpoint, enough of it: auth, query, audio, control, results."""

    whisper: WhisperEngine
    close_with: tuple[int, str] | None = None
    queries: list[dict[str, str]] = field(default_factory=list)
    control: list[str] = field(default_factory=list)
    audio_bytes: int = 0

    async def listen(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Token {KEY}":
            return web.Response(status=401, headers={"dg-error": "Invalid credentials."})
        self.queries.append(dict(request.query))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        audio = bytearray()
        interim_at = 16000  # bytes: an interim result every half second of audio
        start = 0.0
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                audio += msg.data
                self.audio_bytes += len(msg.data)
                if self.close_with is not None:
                    await ws.close(code=self.close_with[0], message=self.close_with[1].encode())
                    break
                if len(audio) >= interim_at:
                    interim_at += 16000
                    text = (await self.whisper.transcribe(bytes(audio))).text
                    await ws.send_str(self.results(text, start, len(audio), final=False))
            elif msg.type == WSMsgType.TEXT:
                kind = orjson.loads(msg.data)["type"]
                self.control.append(kind)
                if kind == "Finalize":
                    text = (await self.whisper.transcribe(bytes(audio))).text if audio else ""
                    await ws.send_str(self.results(text, start, len(audio), final=True, flush=True))
                    end = start + len(audio) / 32000
                    await ws.send_str(
                        orjson.dumps(
                            {"type": "UtteranceEnd", "channel": [0, 1], "last_word_end": end}
                        ).decode()
                    )
                    start, audio = end, bytearray()
                elif kind == "CloseStream":
                    await ws.send_str(
                        orjson.dumps(
                            {"type": "Metadata", "request_id": "req-1", "duration": start}
                        ).decode()
                    )
                    await ws.close()
        return ws

    @staticmethod
    def results(text: str, start: float, nbytes: int, *, final: bool, flush: bool = False) -> str:
        return orjson.dumps(
            {
                "type": "Results",
                "channel_index": [0, 1],
                "start": start,
                "duration": nbytes / 32000,
                "is_final": final,
                "speech_final": final,
                "from_finalize": flush,
                "channel": {"alternatives": [{"transcript": text, "confidence": 0.9, "words": []}]},
                "metadata": {"request_id": "req-1"},
            }
        ).decode()


@pytest.fixture
async def deepgram(whisper: WhisperEngine) -> AsyncIterator[tuple[DeepgramServer, str]]:
    server = DeepgramServer(whisper)
    app = web.Application()
    app.router.add_get("/v1/listen", server.listen)
    async for host in serve(app):
        yield server, f"ws://{host}/v1/listen"


async def test_deepgram_through_the_service(
    deepgram: tuple[DeepgramServer, str], speech: bytes
) -> None:
    server, url = deepgram
    engine = DeepgramEngine(KEY, url=url, options=DeepgramOptions(endpointing=300))
    down: list[Any] = []
    service = SttService(engine)
    call = Call(service, on_down=down.append)
    await call.start()
    call.system(UserStartedSpeakingFrame(0.0))
    for i in range(0, len(speech), 640):
        call.feed(AudioFrame(speech[i : i + 640], 16000))
        await asyncio.sleep(0.001)
    async with asyncio.timeout(60):  # interim results come while the caller still talks
        while not any(isinstance(f, TranscriptFrame) for f in down):
            await asyncio.sleep(0.01)
    call.system(UserStoppedSpeakingFrame(1.0))
    call.system(UserTurnEndFrame(1.0))
    await service.drain()
    call.cancel()
    await call.wait()
    await engine.aclose()
    q = server.queries[0]
    assert q["encoding"] == "linear16" and q["sample_rate"] == "16000" and q["channels"] == "1"
    assert q["interim_results"] == "true" and q["endpointing"] == "300"
    assert q["utterance_end_ms"] == "1000" and q["model"] == "nova-2"
    assert server.audio_bytes == len(speech)
    assert server.control[:1] == ["Finalize"] and server.control[-1] == "CloseStream"
    transcripts = [f for f in down if isinstance(f, TranscriptFrame)]
    finals = [f.text for f in transcripts if f.final]
    assert len(finals) == 1 and wer([(TEXT, finals[0])]) <= 0.1, finals
    assert any(not f.final for f in transcripts)


async def test_deepgram_keepalive_when_idle(deepgram: tuple[DeepgramServer, str]) -> None:
    server, url = deepgram
    engine = DeepgramEngine(KEY, url=url, keepalive_s=0.05)
    stream = await engine.open_stream()
    await asyncio.sleep(0.4)
    await stream.aclose()
    await engine.aclose()
    assert server.control.count("KeepAlive") >= 3
    assert server.control[-1] == "CloseStream"
    assert stream.keepalives == server.control.count("KeepAlive")


async def test_deepgram_refused_and_closed_streams_raise_provider_errors(
    deepgram: tuple[DeepgramServer, str],
) -> None:
    server, url = deepgram
    bad = DeepgramEngine("wrong", url=url)
    with pytest.raises(ProviderError) as refused:
        await bad.open_stream()
    await bad.aclose()
    assert refused.value.status == 401 and "Invalid credentials" in str(refused.value)

    server.close_with = (1011, "NET-0001")
    engine = DeepgramEngine(KEY, url=url)
    stream = await engine.open_stream()
    await stream.send(b"\x00\x00" * 320)
    with pytest.raises(ProviderError) as closed:
        async for _ in stream.events():
            pass
    await stream.aclose()
    await engine.aclose()
    assert closed.value.status == 1011 and "NET-0001" in str(closed.value)


def test_deepgram_protocol_sans_io() -> None:
    p = DeepgramProtocol()
    url = p.url(
        "wss://api.deepgram.com/v1/listen",
        DeepgramOptions(endpointing=False, utterance_end_ms=None),
    )
    assert url.startswith("wss://api.deepgram.com/v1/listen?encoding=linear16&sample_rate=16000")
    assert "endpointing=false" in url and "utterance_end_ms" not in url
    assert p.headers("k") == {"Authorization": "Token k"}
    assert p.audio(b"\x01\x00" * 160) == b"\x01\x00" * 160 and p.audio_sent_s == pytest.approx(0.01)
    with pytest.raises(ValueError):
        p.audio(b"\x00")
    assert orjson.loads(p.KEEP_ALIVE) == {"type": "KeepAlive"}
    assert orjson.loads(p.FINALIZE) == {"type": "Finalize"}
    assert orjson.loads(p.CLOSE_STREAM) == {"type": "CloseStream"}
    [ev] = p.receive(DeepgramServer.results("hello there", 1.0, 32000, final=True))
    assert (ev.text, ev.final, ev.speech_final, ev.flushed) == ("hello there", True, True, False)
    assert (ev.start, ev.end, ev.confidence) == (1.0, 2.0, 0.9)
    [ue] = p.receive('{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.5}')
    assert ue.utterance_end and ue.text == "" and ue.end == 2.5
    assert p.receive('{"type":"SpeechStarted","channel":[0],"timestamp":0.1}') == []
    assert p.receive('{"type":"Metadata","request_id":"r-9","duration":3.0}') == []
    assert p.request_id == "r-9"
    with pytest.raises(ProviderError, match="bad audio"):
        p.receive('{"type":"Error","description":"bad audio","message":"x"}')
    with pytest.raises(RemoteProtocolError):
        p.receive("{not json")
    with pytest.raises(RemoteProtocolError):
        p.receive('{"type":"Results","channel":{}}')


# --------------------------------------------------------------------------------------------
# OpenAI-compatible transcription


@dataclass
class TranscriptionServer:
    whisper: WhisperEngine
    fail_first: list[int] = field(default_factory=list)
    forms: list[list[tuple[str, str | None, str | None, bytes]]] = field(default_factory=list)
    requests: int = 0

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response(
                {"error": {"message": "Incorrect API key provided"}}, status=401
            )
        if self.fail_first:
            status = self.fail_first.pop(0)
            headers = {"Retry-After": "0"} if status == 429 else {}
            return web.json_response({"error": {"message": "busy"}}, status=status, headers=headers)
        assert request.content_type == "multipart/form-data"
        reader = await request.multipart()
        parts = []
        async for part in reader:
            parts.append(
                (part.name, part.filename, part.headers.get("Content-Type"), await part.read())
            )  # type: ignore[union-attr]
        self.forms.append(parts)
        fields = {name: data for name, _, _, data in parts}
        with wave.open(io.BytesIO(fields["file"])) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
            pcm = w.readframes(w.getnframes())
        text = (await self.whisper.transcribe(pcm)).text
        if fields["response_format"] == b"verbose_json":
            return web.json_response(
                {
                    "text": text,
                    "language": "english",
                    "duration": len(pcm) / 32000,
                    "segments": [{"avg_logprob": -0.1}],
                }
            )
        return web.json_response({"text": text})


@pytest.fixture
async def openai_server(whisper: WhisperEngine) -> AsyncIterator[tuple[TranscriptionServer, str]]:
    server = TranscriptionServer(whisper)
    app = web.Application()
    app.router.add_post("/v1/audio/transcriptions", server.transcriptions)
    async for host in serve(app):
        yield server, f"http://{host}"


async def test_openai_multipart_form_exactly(
    openai_server: tuple[TranscriptionServer, str], speech: bytes
) -> None:
    server, base = openai_server
    engine = OpenAITranscriptionEngine(KEY, base_url=base + "/v1", model="whisper-1")
    result = await engine.transcribe(speech, prompt="Customer service call.")
    await engine.aclose()
    assert wer([(TEXT, result.text)]) <= 0.1, result
    [form] = server.forms
    assert [(name, filename, ctype) for name, filename, ctype, _ in form] == [
        ("file", "audio.wav", "audio/wav"),
        ("model", None, "text/plain; charset=utf-8"),
        ("language", None, "text/plain; charset=utf-8"),
        ("response_format", None, "text/plain; charset=utf-8"),
        ("temperature", None, "text/plain; charset=utf-8"),
        ("prompt", None, "text/plain; charset=utf-8"),
    ]
    fields = {name: data for name, _, _, data in form}
    assert fields["model"] == b"whisper-1" and fields["language"] == b"en"
    assert fields["response_format"] == b"json" and fields["temperature"] == b"0"
    assert fields["prompt"] == b"Customer service call."
    assert fields["file"][:4] == b"RIFF" and fields["file"][44:] == speech


async def test_openai_verbose_json_and_retries(
    openai_server: tuple[TranscriptionServer, str], speech: bytes
) -> None:
    server, base = openai_server
    server.fail_first = [503, 429]
    engine = OpenAITranscriptionEngine(
        KEY, base_url=base, response_format="verbose_json", backoff_s=0.01
    )
    result = await engine.transcribe(speech)
    await engine.aclose()
    assert server.requests == 3 and engine.retries == 2
    assert result.language == "english" and result.confidence == pytest.approx(np.exp(-0.1))
    assert wer([(TEXT, result.text)]) <= 0.1


async def test_openai_errors(openai_server: tuple[TranscriptionServer, str], speech: bytes) -> None:
    server, base = openai_server
    engine = OpenAITranscriptionEngine("wrong", base_url=base, backoff_s=0.01)
    with pytest.raises(ProviderError) as denied:
        await engine.transcribe(speech)
    assert denied.value.status == 401 and "Incorrect API key" in str(denied.value)
    assert server.requests == 1  # not retried
    await engine.aclose()

    server.fail_first = [500, 502, 503]
    engine = OpenAITranscriptionEngine(KEY, base_url=base, backoff_s=0.01, max_retries=2)
    with pytest.raises(ProviderError) as gave_up:
        await engine.transcribe(speech)
    assert gave_up.value.status == 503 and server.requests == 4
    await engine.aclose()
