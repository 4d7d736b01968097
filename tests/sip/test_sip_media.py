"""SIP calls end to end over real UDP on 127.0.0.1: a scripted peer against an in-process
SipServer (media, DTMF, pacing, barge-in, hold, hang-up, symmetric RTP, refusals, garbage)."""

from __future__ import annotations

import asyncio
import itertools
import statistics
from typing import Any

import numpy as np
import pytest

from harken.audio.g711 import ulaw_decode
from harken.frames import AgentStoppedSpeakingFrame, DTMFFrame
from harken.protocols.sip import SipRequest, SipResponse
from harken.transports.rtp_session import RtpCodec

from .conftest import tone

MakeServer = Any
MakePeer = Any


def rms(payload: bytes) -> float:
    pcm = np.frombuffer(ulaw_decode(payload), np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2)))


def speech(packets: list[tuple[float, Any]]) -> list[tuple[float, Any]]:
    return [(t, p) for t, p in packets if rms(p.payload) > 300]


async def until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_echo_call_media_dtmf_and_bye(
    sip_server: MakeServer, peer: MakePeer, echo_agent: Any
) -> None:
    agent, spies = echo_agent()
    server = await sip_server(agent)
    p = await peer(server.port)
    p.send_raw(p.request("INVITE", p.sdp()))
    assert isinstance(await p.expect(100), SipResponse)
    assert isinstance(await p.expect(180), SipResponse)
    ok = await p.expect(200)
    assert b"m=audio" in ok.body and b"a=rtpmap:0 PCMU/8000" in ok.body
    p.to_tag = ok.headers.get("To").split("tag=")[1]  # type: ignore[union-attr]
    p.ack()
    from .conftest import _media_address

    p.remote_media = _media_address(ok.body)
    await p.play(tone(1.0))
    await p.digit("5")
    await p.play(np.zeros(1600, np.int16))
    # ~50 packets of echoed tone (a stall on a loaded machine may trim some live audio)
    await until(lambda: len(speech(p.audio_packets())) >= 35, 8.0)
    assert [f.digit for f in spies[0].of(DTMFFrame)] == ["5"]  # three end packets, one digit
    call = next(iter(server.calls.values()))
    assert call.info.custom_parameters == {"Customer": "42"}
    assert call.info.from_number == "+15550001" and call.info.to_number == "agent"
    await p.bye()
    await until(lambda: not server.calls and server.manager.active == 0)
    audio = p.audio_packets()
    # our stream: one SSRC, sequence +1 each, timestamp +160 each (continuous: comfort silence)
    assert len({pk.ssrc for _, pk in audio}) == 1
    seqs = [pk.sequence for _, pk in audio]
    assert all((b - a) % 65536 == 1 for a, b in itertools_pairwise(seqs))
    # timestamps: +160 per packet; a jump (a stall over 60 ms, under load) carries the marker
    for (_, a), (_, b) in itertools.pairwise(audio):
        assert (b.timestamp - a.timestamp) % (1 << 32) == 160 or b.marker
    assert audio[0][1].marker
    heard = np.concatenate([np.frombuffer(ulaw_decode(pk.payload), np.int16) for _, pk in audio])
    assert np.abs(heard).max() > 6000  # the tone came back


def itertools_pairwise(xs: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(xs))


async def test_outbound_pacing_is_20ms_with_a_bounded_lead(
    sip_server: MakeServer, peer: MakePeer, speaking_agent: Any
) -> None:
    agent, _ = speaking_agent(2.0)  # 2 s of "TTS" pushed at once
    server = await sip_server(agent)
    p = await peer(server.port)
    await p.call()
    await until(lambda: len(speech(p.audio_packets())) >= 100, 6.0)
    spoken = speech(p.audio_packets())[:100]
    t0, first = spoken[0]
    # never more than the lead (40 ms) + one tick ahead of real time
    ahead = [(pk.timestamp - first.timestamp) / 8000 - (t - t0) for t, pk in spoken]
    assert max(ahead) <= 0.04 + 0.03
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(spoken)]
    assert statistics.median(gaps) == pytest.approx(0.02, abs=0.006)
    assert spoken[-1][0] - t0 == pytest.approx(99 * 0.02, abs=0.1)  # real time, not a burst
    await p.bye()


async def test_barge_in_flushes_queued_audio_at_once(
    sip_server: MakeServer, peer: MakePeer, speaking_agent: Any
) -> None:
    agent, speakers = speaking_agent(3.0)
    server = await sip_server(agent)
    p = await peer(server.port)
    await p.call()
    await until(lambda: len(speech(p.audio_packets())) >= 25)
    loop = asyncio.get_running_loop()
    await p.digit("*")  # the speaker interrupts itself on '*'
    await until(lambda: speakers[0].of(AgentStoppedSpeakingFrame))
    cut = loop.time()
    await asyncio.sleep(0.5)
    late = [t for t, _ in speech(p.audio_packets()) if t > cut + 0.06]
    assert late == []  # nothing queued was sent after the barge-in (only what was in flight)
    stopped = speakers[0].of(AgentStoppedSpeakingFrame)[0]
    assert stopped.interrupted and 0.4 < stopped.played_s < 2.0
    silence = [t for t, pk in p.audio_packets() if t > cut + 0.06]
    assert len(silence) >= 15  # the stream goes on with comfort silence
    await p.bye()


async def test_pause_holds_and_resume_continues(
    sip_server: MakeServer, peer: MakePeer, speaking_agent: Any
) -> None:
    agent, speakers = speaking_agent(1.5)
    server = await sip_server(agent)
    p = await peer(server.port)
    await p.call()
    await until(lambda: len(speech(p.audio_packets())) >= 20)
    await p.digit("1")  # pause
    await asyncio.sleep(0.1)
    held_at = len(speech(p.audio_packets()))
    await asyncio.sleep(0.6)
    assert len(speech(p.audio_packets())) <= held_at + 3  # held: at most the lead went out
    await p.digit("2")  # resume: the rest plays, nothing was discarded
    await until(lambda: speakers[0].of(AgentStoppedSpeakingFrame), 5.0)
    stopped = speakers[0].of(AgentStoppedSpeakingFrame)[0]
    assert not stopped.interrupted and stopped.strategy == "drained"
    assert len(speech(p.audio_packets())) >= 70  # 1.5 s = 75 packets (edges may be quieter)
    await p.bye()


async def test_hangup_sends_bye_after_the_audio(
    sip_server: MakeServer, peer: MakePeer, speaking_agent: Any
) -> None:
    agent, _ = speaking_agent(0.0)
    server = await sip_server(agent)
    p = await peer(server.port)
    await p.call()
    await asyncio.sleep(0.1)
    await p.digit("9")  # speak 0.5 s ...
    await p.digit("#")  # ... then hang up
    bye = await p.expect("BYE", 5.0)
    assert isinstance(bye, SipRequest)
    spoken = speech(p.audio_packets())
    assert len(spoken) >= 22  # the whole utterance went out before the BYE
    received = p.all_messages.index(bye)
    assert received >= 0
    await until(lambda: server.manager.active == 0)


async def test_symmetric_rtp_follows_the_source(
    sip_server: MakeServer, peer: MakePeer, echo_agent: Any
) -> None:
    agent, _ = echo_agent()
    server = await sip_server(agent)
    p = await peer(server.port)
    decoy = await peer(server.port)  # its RTP port is what our SDP claims
    await p.call(p.sdp(port=decoy.rtp_port))
    await p.play(tone(0.6))  # but the media comes from p's own RTP socket
    await until(lambda: len(speech(p.audio_packets())) >= 15)
    assert not speech(decoy.audio_packets())
    await p.bye()


async def test_no_common_codec_is_488(
    sip_server: MakeServer, peer: MakePeer, echo_agent: Any
) -> None:
    agent, spies = echo_agent()
    server = await sip_server(agent)
    p = await peer(server.port)
    p.send_raw(p.request("INVITE", p.sdp(pts="18 9")))
    reply = await p.expect(488)
    assert isinstance(reply, SipResponse)
    assert spies == [] and server.manager.active == 0


async def test_cancel_before_answer(
    sip_server: MakeServer, peer: MakePeer, echo_agent: Any
) -> None:
    agent, _ = echo_agent()
    server = await sip_server(agent, answer_delay_s=1.0)
    p = await peer(server.port)
    invite = p.request("INVITE", p.sdp(), branch="z9hG4bKinv1")
    p.send_raw(invite)
    await p.expect(180)
    p.send_raw(p.request("CANCEL", branch="z9hG4bKinv1"))
    await p.expect(200)
    await p.expect(487)
    await until(lambda: server.manager.active == 0 and not server.calls)
    await asyncio.sleep(1.2)  # past the answer delay: never a 200 for the INVITE
    assert not any(
        isinstance(m, SipResponse) and m.status == 200 and m.cseq[1] == "INVITE"
        for m in p.all_messages
    )


async def test_capacity_is_486(sip_server: MakeServer, peer: MakePeer, echo_agent: Any) -> None:
    agent, _ = echo_agent()
    server = await sip_server(agent, max_calls=1)
    first = await peer(server.port)
    await first.call()
    second = await peer(server.port)
    second.send_raw(second.request("INVITE", second.sdp()))
    await second.expect(486)
    await first.bye()


async def test_reinvite_hold_and_back(
    sip_server: MakeServer, peer: MakePeer, speaking_agent: Any
) -> None:
    agent, _ = speaking_agent(0.0)
    server = await sip_server(agent)
    p = await peer(server.port)
    ok = await p.call()
    p.cseq = 2
    p.send_raw(p.request("INVITE", p.sdp(extra="a=sendonly\r\n")))
    hold = await p.expect(200)
    assert b"a=recvonly" in hold.body
    p.ack(cseq=2)
    await asyncio.sleep(0.1)
    n = len(p.audio_packets())
    await asyncio.sleep(0.3)
    assert len(p.audio_packets()) == n  # on hold: nothing sent
    p.cseq = 3
    p.send_raw(p.request("INVITE", p.sdp()))
    back = await p.expect(200)
    assert b"a=sendrecv" in back.body and b"m=audio" in back.body
    p.ack(cseq=3)
    await until(lambda: len(p.audio_packets()) > n + 5)
    assert ok.body.split(b"m=audio")[1] == back.body.split(b"m=audio")[1]  # same stream again
    p.cseq = 4
    p.send_raw(p.request("INVITE", p.sdp(pts="8 101")))  # PCMA only: we keep PCMU, so 488
    await p.expect(488)
    p.cseq = 5
    await p.bye()


async def test_garbage_ends_nothing(
    sip_server: MakeServer, peer: MakePeer, echo_agent: Any
) -> None:
    agent, _ = echo_agent()
    server = await sip_server(agent)
    p = await peer(server.port)
    await p.call()
    assert p.remote_media is not None
    p._rtp.sendto(b"\x00garbage", p.remote_media)
    p._rtp.sendto(b"\x80" + bytes(5), p.remote_media)
    p.send_raw(b"INVITE \xff\xfe nonsense\r\n\r\n")
    p.cseq = 2
    p.send_raw(p.request("INVITE", b"v=0\r\nnot sdp"))  # a re-INVITE with broken SDP
    await p.expect(488)
    await p.play(tone(0.5))
    await until(lambda: len(speech(p.audio_packets())) >= 10)
    call = next(iter(server.calls.values()))
    assert call.rtp.malformed == 2
    await p.bye()


def test_rtp_codec_timestamps_follow_the_clock() -> None:
    codec = RtpCodec("mulaw", 0, ssrc=7)
    codec.sequence, codec.timestamp = 65535, (1 << 32) - 80
    from harken.protocols.rtp import parse_rtp

    a = parse_rtp(codec.packet(b"\xff" * 160, 10.0))
    b = parse_rtp(codec.packet(b"\xff" * 160, 10.01))  # in step (sent ahead: the lead)
    c = parse_rtp(codec.packet(b"\xff" * 160, 10.5))  # after a 460 ms gap
    assert (a.sequence, b.sequence, c.sequence) == (65535, 0, 1)
    assert a.marker and not b.marker and c.marker
    assert b.timestamp == (a.timestamp + 160) % (1 << 32)
    assert c.timestamp == (b.timestamp + 160 + 3680) % (1 << 32)


async def test_inbound_wraparound_reordering_and_digit_dedup() -> None:
    """RtpSession alone (datagrams handed in directly): sequence and timestamp wrap mid-stream,
    a reordered pair, and an RFC 4733 digit whose end packet comes three times (then late)."""
    from harken.audio.dtmf import event_packets
    from harken.audio.g711 import ulaw_encode
    from harken.protocols.rtp import build_rtp
    from harken.transports.rtp_session import RtpSession

    session = RtpSession()
    session.configure("mulaw", 0, 101, ("127.0.0.1", 9))
    frames: list[bytes] = []
    digits: list[str] = []
    session.on_audio = frames.append
    session.on_dtmf = lambda d: digits.append(d.digit)
    loop = asyncio.get_running_loop()
    src = ("127.0.0.1", 9)
    pcm = tone(2.0)
    seq0, ts0 = 65500, (1 << 32) - 8000
    order = list(range(100))
    order[40], order[41] = order[41], order[40]  # one reordered pair
    start = loop.time()
    session.start(start)
    for n, i in enumerate(order):  # a packet every 20 ms, ticks half a frame after them
        payload = ulaw_encode(pcm[i * 160 : (i + 1) * 160].tobytes())
        session.datagram_received(build_rtp(0, seq0 + i, ts0 + 160 * i, 5, payload), src)
        await asyncio.sleep(max(0.0, start + n * 0.02 + 0.01 - loop.time()))
        session.tick(loop.time())
        await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - loop.time()))
    ts = ts0 + 160 * 100
    for k, packet in enumerate(event_packets("7", 120)):
        data = build_rtp(101, seq0 + 100 + k, ts, 5, packet.payload, marker=packet.marker)
        session.datagram_received(data, src)
    session.datagram_received(data, src)  # a late duplicate of the end packet
    await asyncio.sleep(0.05)
    session.tick(loop.time())
    assert digits == ["7"]
    stats = session.jitter.stats
    assert stats.packets_lost == 0 and stats.reordered == 1
    assert stats.late_drops <= 10  # timer jitter (real clock, shared machine)
    assert stats.resyncs == 0  # the wrap was not mistaken for a jump
    heard = np.frombuffer(b"".join(frames[10:90]), np.int16)
    assert np.abs(heard).max() > 6000
    assert session.malformed == 0 and session.received == 100 + len(event_packets("7", 120)) + 1
