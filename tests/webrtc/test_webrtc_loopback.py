"""Browser calls end to end over real WebRTC, with aiortc playing the browser (no Chromium):
signalling, audio both ways, the event channel, hang-up, admission, and the page's routes."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import numpy as np

from harken.frames import (
    AudioFrame,
    Frame,
    HangupFrame,
    StartFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import Stage
from harken.protocols.events import StreamStarted
from harken.transports.carrier import AgentFactory

from .conftest import MakeWorker, PythonPeer


def tone(seconds: float, lead_s: float = 0.0, hz: float = 440.0) -> np.ndarray[Any, Any]:
    t = np.arange(int(48000 * seconds)) / 48000
    voiced = (np.sin(2 * np.pi * hz * t) * 8000).astype(np.int16)
    return np.concatenate([np.zeros(int(48000 * lead_s), np.int16), voiced])


async def test_echo_over_webrtc_returns_the_callers_audio(webrtc_worker: MakeWorker) -> None:
    worker = await webrtc_worker()
    peer = PythonPeer(tone(1.0, lead_s=0.3))
    answer = await peer.call(worker)
    assert answer["status"] == 200 and answer["call_id"].startswith("webrtc-")
    assert "opus/48000" in answer["sdp"]
    try:
        await peer.wait_for(lambda: sum(p > 1000 for p in peer.peaks) >= 40)
        assert worker.manager.active == 1
        # aiortc's receive jitter buffer is tuned down to ordering only (docs/webrtc.md)
        assert worker.playground is not None
        (session,) = worker.playground.sessions
        assert session.pc is not None
        (receiver,) = [t.receiver for t in session.pc.getTransceivers() if t.kind == "audio"]
        buffer = receiver._RTCRtpReceiver__jitter_buffer  # type: ignore[attr-defined]
        assert (buffer.capacity, buffer._prefetch) == (8, 1)
        await peer.wait_for(lambda: bool(peer.of("call")))
        assert peer.of("call")[0]["rate_in"] == 16000
    finally:
        await peer.close()
    await peer.wait_for(lambda: worker.manager.active == 0)


class Goodbye(Stage):
    """Says 0.3 s of tone, then hangs up."""

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, StartFrame):
            asyncio.get_running_loop().call_soon(self._speak)

    def _speak(self) -> None:
        self.push_down(TTSStartedFrame(utterance_id=1))
        self.push_down(AudioFrame(tone(0.3).tobytes(), 48000))
        self.push_down(TTSStoppedFrame(utterance_id=1))
        self.push_down(HangupFrame(reason="done"))

    def on_down(self, frame: Frame) -> None:
        if not isinstance(frame, AudioFrame):
            self.push_down(frame)


def goodbye_agent() -> AgentFactory:
    def build(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        return [Goodbye("goodbye")]

    return build


async def test_agent_hang_up_plays_the_last_words_then_closes(webrtc_worker: MakeWorker) -> None:
    worker = await webrtc_worker(factory=goodbye_agent())
    peer = PythonPeer(tone(0.1))
    await peer.call(worker)
    try:
        await peer.wait_for(lambda: bool(peer.of("bye")))
        await peer.wait_for(lambda: peer.pc.connectionState == "closed", timeout=10)
        await peer.wait_for(lambda: worker.manager.active == 0)
        # the 300 ms went out before the hang-up (all but what aiortc's own jitter buffer
        # still held when the connection closed: it releases a frame 4 frames late)
        assert sum(p >= 3000 for p in peer.peaks) >= 10
    finally:
        await peer.close()


async def test_a_full_worker_answers_503_and_bad_offers_400(webrtc_worker: MakeWorker) -> None:
    worker = await webrtc_worker(server={"max_calls": 1})
    url = f"http://127.0.0.1:{worker.http_port}/webrtc/offer"
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=b"not json") as resp:
            assert resp.status == 400
        async with http.post(url, json={"sdp": "v=0\r\n", "type": "offer"}) as resp:
            assert resp.status == 400 and "audio" in (await resp.json())["error"]
        broken = "v=0\r\nm=audio\r\n"  # an audio section aiortc cannot parse
        async with http.post(url, json={"sdp": broken, "type": "offer"}) as resp:
            assert resp.status == 400 and "unusable" in (await resp.json())["error"]
    assert worker.manager.active == 0
    first = PythonPeer(tone(0.1))
    second = PythonPeer(tone(0.1))
    try:
        assert (await first.call(worker))["status"] == 200
        refused = await second.call(worker)
        assert refused["status"] == 503 and "capacity" in refused["error"]
    finally:
        await first.close()
        await second.close()


async def test_the_page_and_its_files_are_served_locally(webrtc_worker: MakeWorker) -> None:
    worker = await webrtc_worker(webrtc={"ice_servers": ["stun:stun.example.net:3478"]})
    base = f"http://127.0.0.1:{worker.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/", allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/playground"
        async with http.get(base + "/playground") as resp:
            html = await resp.text()
            assert resp.status == 200 and "Start talking" in html
            for remote in ('src="http', "src='http", 'href="http', "href='http", "url(http"):
                assert remote not in html  # no CDN: everything is served from here
        for name in ("playground.js", "playground.css"):
            async with http.get(f"{base}/playground/static/{name}") as resp:
                assert resp.status == 200, name
        async with http.get(base + "/webrtc/config") as resp:
            assert (await resp.json())["ice_servers"] == ["stun:stun.example.net:3478"]
