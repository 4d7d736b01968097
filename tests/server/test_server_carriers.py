"""Every non-Twilio carrier end to end through the server: start, media in, echo out, marks.

The messages are the carriers' documented shapes (the protocol golden fixtures), sent over a
real WebSocket; the far end's playback acknowledgement is emulated by echoing the final marker.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from harken.agent.echo import EchoAgent
from harken.audio import g711
from harken.frames import AgentStoppedSpeakingFrame
from harken.pipeline import Stage
from harken.protocols.events import StreamStarted
from harken.testing import Recorder

FIXTURES = Path(__file__).resolve().parents[1] / "protocols" / "fixtures"


def fixture(carrier: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / carrier / f"{name}.json").read_text())


# carrier -> (rate, wire encoding, sequence key, outbound media event, mark event, echo name)
CARRIERS = {
    "telnyx": (8000, "mulaw", "sequence_number", "media", "mark", "mark"),
    "plivo": (8000, "mulaw", "sequenceNumber", "playAudio", "checkpoint", "played_stream"),
    "exotel": (8000, "l16", "sequence_number", "media", "mark", "mark"),
    "vonage": (16000, "l16", "", "", "notify", "notify"),
}


def encode(pcm: np.ndarray, encoding: str) -> bytes:
    return g711.ulaw_encode(pcm.tobytes()) if encoding == "mulaw" else pcm.astype("<i2").tobytes()


def decode(data: bytes, encoding: str) -> np.ndarray:
    raw = g711.ulaw_decode(data) if encoding == "mulaw" else data
    return np.frombuffer(raw, dtype="<i2")


def media_message(carrier: str, i: int, payload: bytes) -> str | bytes:
    if carrier == "vonage":
        return payload
    seq_key = CARRIERS[carrier][2]
    msg = copy.deepcopy(fixture(carrier, "media"))
    seq = i + 2
    msg[seq_key] = seq if isinstance(msg[seq_key], int) else str(seq)
    media = msg["media"]
    media["payload"] = base64.b64encode(payload).decode()
    if "chunk" in media:
        media["chunk"] = (i + 1) if isinstance(media["chunk"], int) else str(i + 1)
    if "timestamp" in media:
        media["timestamp"] = str(int(media["timestamp"]) + 20 * i)
    return json.dumps(msg)


def mark_echo(carrier: str, name: str) -> str:
    msg = fixture(carrier, CARRIERS[carrier][5])
    if carrier == "plivo":
        msg["name"] = name
    elif carrier == "vonage":
        msg["payload"] = {"name": name}
    else:
        msg["mark"]["name"] = name
        seq_key = CARRIERS[carrier][2]
        msg[seq_key] = "900"
    return json.dumps(msg)


@pytest.mark.parametrize("carrier", sorted(CARRIERS))
async def test_carrier_echo_with_marks(make_worker: Any, carrier: str) -> None:
    rate, encoding, *_, out_media, mark_event, _ = CARRIERS[carrier]
    spies: list[Recorder] = []

    def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        spies.append(Recorder())
        return [spies[-1], EchoAgent(rate_in, utterance_s=0.4)]

    worker = await make_worker(agent=agent)
    url = f"ws://127.0.0.1:{worker.media_port}/stream/{carrier}"
    frame_samples = rate // 50
    t = np.arange(frame_samples * 25) / rate
    sent = (np.sin(2 * np.pi * 440 * t) * 6000).astype(np.int16)
    received: list[bytes] = []
    marks: list[str] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        if (FIXTURES / carrier / "connected.json").exists() and carrier != "vonage":
            await ws.send_str(json.dumps(fixture(carrier, "connected")))
        start = fixture(carrier, "connected" if carrier == "vonage" else "start")
        await ws.send_str(json.dumps(start))

        async def reader() -> None:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    received.append(bytes(msg.data))
                    continue
                data = json.loads(msg.data)
                kind = data.get("event") or data.get("action")
                if kind == out_media:
                    received.append(base64.b64decode(data["media"]["payload"]))
                elif kind == mark_event:
                    name = data.get("name") or (data.get("mark") or data.get("payload"))["name"]
                    marks.append(name)

        task = asyncio.create_task(reader())
        for i in range(25):
            chunk = sent[i * frame_samples : (i + 1) * frame_samples]
            message = media_message(carrier, i, encode(chunk, encoding))
            if isinstance(message, bytes):
                await ws.send_bytes(message)
            else:
                await ws.send_str(message)
            await asyncio.sleep(0.02)
        for _ in range(100):
            if any(m.endswith(".end") for m in marks) and sum(map(len, received)) >= len(
                encode(sent, encoding)
            ):
                break
            await asyncio.sleep(0.02)
        final = next(m for m in marks if m.endswith(".end"))
        await ws.send_str(mark_echo(carrier, final))
        for _ in range(100):
            if any(isinstance(f, AgentStoppedSpeakingFrame) for f in spies[0].system):
                break
            await asyncio.sleep(0.02)
        await ws.close()
        task.cancel()
    echoed = np.concatenate([decode(r, encoding) for r in received])[: len(sent)]
    err = echoed.astype(np.float64) - sent
    snr = 10 * np.log10(np.sum(sent.astype(np.float64) ** 2) / max(np.sum(err**2), 1.0))
    assert snr > 30, carrier
    stopped = [f for f in spies[0].system if isinstance(f, AgentStoppedSpeakingFrame)]
    assert stopped and stopped[0].strategy == "mark" and not stopped[0].interrupted
    assert stopped[0].played_s == pytest.approx(0.4, abs=0.021)
