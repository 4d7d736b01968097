"""WebRTC fixtures: an in-process worker with browser calls on, and a Python peer (aiortc) that
plays a browser's part without a browser."""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from harken.server import config as config_mod
from harken.server.worker import Worker
from harken.transports.carrier import AgentFactory

MakeWorker = Callable[..., Any]


@pytest.fixture
async def webrtc_worker() -> AsyncIterator[MakeWorker]:
    workers: list[Worker] = []

    async def make(
        agent: dict[str, Any] | None = None,
        *,
        factory: AgentFactory | None = None,
        server: dict[str, Any] | None = None,
        webrtc: dict[str, Any] | None = None,
    ) -> Worker:
        data: dict[str, Any] = {
            "server": {"port": 0, "media_port": 0, **(server or {})},
            "agent": agent or {"kind": "echo"},
            "records": {"enabled": False},
            "webrtc": {"enabled": True, **(webrtc or {})},
        }
        cfg = config_mod.validate(config_mod._build(config_mod.Config, data, "config"))
        worker = Worker(cfg, agent=factory)
        await worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.manager.draining = True
        await worker.close()
        if worker._media is not None:
            worker._media.close()


class PcmTrack(MediaStreamTrack):
    """A microphone that plays ``pcm`` (48 kHz mono int16) in real time, then silence."""

    kind = "audio"

    def __init__(self, pcm: npt.NDArray[np.int16]) -> None:
        super().__init__()
        self.pcm = pcm
        self.n = 0
        self.t0: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        if self.t0 is None:
            self.t0 = loop.time()
        due = self.t0 + self.n * 0.02
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        chunk = self.pcm[self.n * 960 : (self.n + 1) * 960]
        if chunk.size < 960:
            chunk = np.zeros(960, np.int16)
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 1
        return frame


class PythonPeer:
    """The browser's side of a call, in aiortc: mic track, negotiated event channel, and the
    agent's audio levels as they arrive."""

    def __init__(self, pcm: npt.NDArray[np.int16]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.events: list[dict[str, Any]] = []
        self.peaks: list[int] = []  # per received frame
        self.channel = self.pc.createDataChannel("events", negotiated=True, id=0)
        self.channel.on("message", lambda m: self.events.append(json.loads(m)))
        self.pc.addTrack(PcmTrack(pcm))
        self.pc.on("track", self._track)
        self._tasks: set[asyncio.Task[None]] = set()

    def _track(self, track: MediaStreamTrack) -> None:
        async def read() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    self.peaks.append(int(np.abs(frame.to_ndarray()).max()))  # type: ignore[union-attr]

        task = asyncio.get_running_loop().create_task(read())
        self._tasks.add(task)

    async def call(self, worker: Worker) -> dict[str, Any]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        offer = self.pc.localDescription
        url = f"http://127.0.0.1:{worker.http_port}/webrtc/offer"
        async with (
            aiohttp.ClientSession() as http,
            http.post(url, json={"sdp": offer.sdp, "type": offer.type}) as resp,
        ):
            answer: dict[str, Any] = await resp.json()
            answer["status"] = resp.status
        if resp.status == 200:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp"], type=answer["type"])
            )
        return answer

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]

    async def wait_for(self, test: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not test():
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
