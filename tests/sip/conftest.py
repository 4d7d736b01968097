"""SIP test fixtures: an in-process SipServer, a scripted SIP/RTP peer over real UDP, test agents.

The peer is a small sans-I/O client over two real UDP sockets (SIP and RTP) on 127.0.0.1: it
sends what a phone would (INVITE with SDP, ACK, RTP at 20 ms, RFC 4733 digits, BYE) and records
everything it receives, with arrival times.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from harken.agent.echo import EchoAgent
from harken.audio.dtmf import event_packets
from harken.audio.g711 import ulaw_encode
from harken.frames import (
    AudioFrame,
    DTMFFrame,
    Frame,
    HangupFrame,
    PausePlaybackFrame,
    ResumePlaybackFrame,
    StartFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import Stage
from harken.protocols.events import StreamStarted
from harken.protocols.rtp import RtpPacket, build_rtp, parse_rtp
from harken.protocols.sip import SipRequest, SipResponse, parse_message, parse_name_addr
from harken.testing import Recorder
from harken.transports.carrier import CallManager
from harken.transports.sip_server import SipServer

RATE = 8000
_ids = itertools.count(1)


def tone(seconds: float, freq: float = 440.0, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, on: Callable[[bytes, tuple[str, int]], None]) -> None:
        self.on = on
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on(data, (addr[0], addr[1]))


class SipPeer:
    """A phone on 127.0.0.1 calling the server (see the module docstring)."""

    def __init__(self, server_port: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.messages: asyncio.Queue[SipRequest | SipResponse] = asyncio.Queue()
        self.all_messages: list[SipRequest | SipResponse] = []
        self.rtp: list[tuple[float, RtpPacket]] = []
        self.rtp_from: set[tuple[str, int]] = set()
        self.call_id = f"peer-{next(_ids)}@127.0.0.1"
        self.tag = f"peer{next(_ids)}"
        self.to_tag = ""
        self.cseq = 1
        self.seq = 1000
        self.ts = 50_000
        self.ssrc = 0x1234
        self.auto_answer_bye = True
        self.remote_media: tuple[str, int] | None = None
        self._sip: Any = None
        self._rtp: Any = None

    async def start(self) -> SipPeer:
        loop = asyncio.get_running_loop()
        self._sip, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_sip), local_addr=("127.0.0.1", 0)
        )
        self._rtp, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._on_rtp), local_addr=("127.0.0.1", 0)
        )
        return self

    @property
    def sip_port(self) -> int:
        return int(self._sip.get_extra_info("sockname")[1])

    @property
    def rtp_port(self) -> int:
        return int(self._rtp.get_extra_info("sockname")[1])

    def close(self) -> None:
        for t in (self._sip, self._rtp):
            if t is not None:
                t.close()

    # --- SIP ---------------------------------------------------------------------------------

    def _on_sip(self, data: bytes, addr: tuple[str, int]) -> None:
        msg = parse_message(data)
        self.all_messages.append(msg)
        if isinstance(msg, SipRequest) and msg.method == "BYE" and self.auto_answer_bye:
            self.send_raw(self.response(msg, 200))
        self.messages.put_nowait(msg)

    def _on_rtp(self, data: bytes, addr: tuple[str, int]) -> None:
        self.rtp_from.add(addr)
        self.rtp.append((asyncio.get_running_loop().time(), parse_rtp(data)))

    def send_raw(self, data: bytes) -> None:
        self._sip.sendto(data, self.server)

    def sdp(self, pts: str = "0 101", port: int | None = None, extra: str = "") -> bytes:
        port = self.rtp_port if port is None else port
        lines = [
            "v=0",
            "o=peer 1 1 IN IP4 127.0.0.1",
            "s=-",
            "c=IN IP4 127.0.0.1",
            "t=0 0",
            f"m=audio {port} RTP/AVP {pts}",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
        ]
        return ("\r\n".join(lines) + "\r\n" + extra).encode()

    def request(
        self, method: str, body: bytes = b"", branch: str | None = None, cseq: int | None = None
    ) -> bytes:
        branch = branch or f"z9hG4bK{method.lower()}{next(_ids)}"
        to = "<sip:agent@127.0.0.1>" + (f";tag={self.to_tag}" if self.to_tag else "")
        lines = [
            f"{method} sip:agent@127.0.0.1:{self.server[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.sip_port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:+15550001@127.0.0.1>;tag={self.tag}",
            f"To: {to}",
            f"Call-ID: {self.call_id}",
            f"CSeq: {self.cseq if cseq is None else cseq} {method}",
            f"Contact: <sip:peer@127.0.0.1:{self.sip_port}>",
            "X-Customer: 42",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def response(self, request: SipRequest, status: int) -> bytes:
        h = request.headers
        lines = [f"SIP/2.0 {status} OK"]
        lines += [f"Via: {v}" for v in h.get_all("Via")]
        lines += [f"From: {h.get('From')}", f"To: {h.get('To')}"]
        lines += [f"Call-ID: {h.get('Call-ID')}", f"CSeq: {h.get('CSeq')}", "Content-Length: 0"]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def expect(self, what: int | str, timeout: float = 5.0) -> SipRequest | SipResponse:
        """The next message that is response ``what`` (a status) or request ``what`` (a method);
        anything else on the way is skipped."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.messages.get()
                if isinstance(msg, SipResponse) and msg.status == what:
                    return msg
                if isinstance(msg, SipRequest) and msg.method == what:
                    return msg

    async def call(self, body: bytes | None = None) -> SipResponse:
        """INVITE, wait for the 200, ACK it; returns the 200 (its body is the SDP answer)."""
        self.send_raw(self.request("INVITE", self.sdp() if body is None else body))
        ok = await self.expect(200)
        assert isinstance(ok, SipResponse)
        self.to_tag = parse_name_addr(ok.headers.get("To") or "").tag
        self.ack()
        self.remote_media = _media_address(ok.body)
        return ok

    def ack(self, cseq: int = 1, body: bytes = b"") -> None:
        self.send_raw(self.request("ACK", body, cseq=cseq))

    async def bye(self) -> SipResponse:
        self.cseq += 1
        self.send_raw(self.request("BYE"))
        ok = await self.expect(200)
        assert isinstance(ok, SipResponse)
        return ok

    # --- RTP ---------------------------------------------------------------------------------

    def send_rtp(
        self, payload: bytes, pt: int = 0, *, marker: bool = False, ts: int | None = None
    ) -> None:
        assert self.remote_media is not None
        ts = self.ts if ts is None else ts
        packet = build_rtp(pt, self.seq, ts, self.ssrc, payload, marker=marker)
        self._rtp.sendto(packet, self.remote_media)
        self.seq += 1

    async def play(self, pcm: np.ndarray) -> None:
        """Send ``pcm`` as PCMU, paced at 20 ms per packet."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(len(pcm) // 160):
            self.send_rtp(ulaw_encode(pcm[i * 160 : (i + 1) * 160].tobytes()))
            self.ts += 160
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - loop.time()))

    async def digit(self, digit: str, duration_ms: int = 100) -> None:
        """One RFC 4733 event: updates every 50 ms, then the end packet three times."""
        for packet in event_packets(digit, duration_ms):
            self.send_rtp(packet.payload, 101, marker=packet.marker, ts=self.ts)
            await asyncio.sleep(0.02 if not packet.end else 0.002)
        self.ts += duration_ms * 8

    def audio_packets(self, pt: int = 0) -> list[tuple[float, RtpPacket]]:
        return [(t, p) for t, p in self.rtp if p.payload_type == pt]


def _media_address(sdp: bytes) -> tuple[str, int]:
    from harken.protocols.sdp import parse_sdp

    desc = parse_sdp(sdp)
    m = desc.media[0]
    return (m.connection or desc.connection or "127.0.0.1", m.port)


class Speaker(Stage):
    """A test agent: speaks ``seconds`` of tone at once (as TTS does) when the call starts, and
    on the caller's keys: ``1`` pause, ``2`` resume, ``*`` barge in, ``#`` hang up, ``9`` speak
    again. Everything it sees is recorded."""

    def __init__(self, seconds: float = 2.0) -> None:
        super().__init__("speaker")
        self.seconds = seconds
        self.system: list[SystemFrame] = []
        self.info: StreamStarted | None = None
        self._uid = 0

    def speak(self, seconds: float) -> None:
        self._uid += 1
        self.push_down(TTSStartedFrame(utterance_id=self._uid))
        pcm = tone(seconds, 600.0)
        for i in range(0, len(pcm), 160):
            self.push_down(AudioFrame(pcm[i : i + 160].tobytes(), RATE))
        self.push_down(TTSStoppedFrame(utterance_id=self._uid))

    def on_down(self, frame: Frame) -> None:
        if not isinstance(frame, AudioFrame):  # the caller's audio stops here
            self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        self.system.append(frame)
        loop = asyncio.get_running_loop()
        if isinstance(frame, StartFrame) and self.seconds:
            loop.call_soon(self.speak, self.seconds)
        elif isinstance(frame, DTMFFrame):
            call = self.call
            assert call is not None
            if frame.digit == "1":
                call.system(PausePlaybackFrame())
            elif frame.digit == "2":
                call.system(ResumePlaybackFrame())
            elif frame.digit == "*":
                call.interrupt()
            elif frame.digit == "#":
                self.push_down(HangupFrame(reason="caller pressed #"))
            elif frame.digit == "9":
                self.speak(0.5)

    def of(self, kind: type) -> list[Any]:
        return [f for f in self.system if isinstance(f, kind)]


@pytest.fixture
def speaking_agent() -> Callable[..., tuple[Any, list[Speaker]]]:
    """``agent, speakers = speaking_agent(seconds)``: an agent factory of :class:`Speaker`."""

    def make(seconds: float = 2.0) -> tuple[Any, list[Speaker]]:
        speakers: list[Speaker] = []

        def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
            speaker = Speaker(seconds)
            speaker.info = info
            speakers.append(speaker)
            return [speaker]

        return agent, speakers

    return make


@pytest.fixture
def echo_agent() -> Callable[[], tuple[Any, list[Recorder]]]:
    """``agent, spies = echo_agent()``: the echo agent behind a recording spy stage."""

    def make() -> tuple[Any, list[Recorder]]:
        spies: list[Recorder] = []

        def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
            spy = Recorder()
            spies.append(spy)
            return [spy, EchoAgent(rate_in, 0.5)]

        return agent, spies

    return make


@pytest.fixture
async def sip_server() -> AsyncIterator[Callable[..., Any]]:
    """``await sip_server(agent, **options)``: a SipServer on 127.0.0.1 with its own manager."""
    servers: list[SipServer] = []

    async def make(agent: Any, **options: Any) -> SipServer:
        manager = CallManager(max_calls=options.pop("max_calls", 20))
        manager.idle.set()
        low = 31000 + 200 * (next(_ids) % 40)
        server = SipServer(
            manager, agent, host="127.0.0.1", port=0, rtp_ports=(low, low + 199), **options
        )
        await server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()
    await asyncio.sleep(0.05)


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[int], Any]]:
    """``await peer(server_port)``: a started :class:`SipPeer`."""
    peers: list[SipPeer] = []

    async def make(port: int) -> SipPeer:
        p = await SipPeer(port).start()
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
