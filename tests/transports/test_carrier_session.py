"""A Twilio stream driven through CarrierSession with a fake socket (no network)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import numpy as np
import pytest

from harken.agent.echo import EchoAgent
from harken.audio.g711 import alaw_decode, ulaw_decode
from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    DTMFFrame,
    InterruptionFrame,
    PausePlaybackFrame,
    ResumePlaybackFrame,
    TransferFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import CallState, Stage
from harken.protocols.events import StreamStarted
from harken.protocols.twilio import TwilioCodec
from harken.testing import Recorder
from harken.transports.carrier import CallManager, CarrierSession
from harken.transports.output import PlaybackSettings

SID = "MZ" + "a" * 32


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []
        self.closed: tuple[int, str] | None = None
        self.paused = False

    def send_text(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def send_bytes(self, data: bytes) -> None:
        raise AssertionError("twilio never gets binary frames")

    def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def of(self, event: str) -> list[dict[str, object]]:
        return [m for m in self.sent if m["event"] == event]


def start_msg(params: dict[str, str] | None = None, encoding: str = "audio/x-mulaw") -> str:
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": SID,
            "start": {
                "streamSid": SID,
                "accountSid": "AC" + "b" * 32,
                "callSid": "CA" + "c" * 32,
                "tracks": ["inbound"],
                "customParameters": params or {},
                "mediaFormat": {"encoding": encoding, "sampleRate": 8000, "channels": 1},
            },
        }
    )


def media_msg(i: int, payload: bytes = b"\x7f" * 160) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(i + 2),
            "streamSid": SID,
            "media": {
                "track": "inbound",
                "chunk": str(i + 1),
                "timestamp": str(i * 20),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def twilio_media_msg(i: int, payload: bytes = b"\x7f" * 160) -> bytes:
    """A media message as Twilio sends it (its key order, compact, bytes): the fast path."""
    return (
        b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
        b'"timestamp":"%d","payload":"%b"},"streamSid":"%b"}'
        % (i + 2, i + 1, i * 20, base64.b64encode(payload), SID.encode())
    )


def twilio_mark_msg(name: str) -> bytes:
    """A mark echo as Twilio sends it: the mark fast path."""
    return b'{"event":"mark","sequenceNumber":"9","streamSid":"%b","mark":{"name":"%b"}}' % (
        SID.encode(),
        name.encode(),
    )


def mark_msg(name: str) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": "9", "streamSid": SID, "mark": {"name": name}}
    )


def session(
    manager: CallManager | None = None, secret: str = "", **playback: float
) -> tuple[CarrierSession, FakeLink, Recorder]:
    link = FakeLink()
    spy = Recorder()

    def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        return [spy, EchoAgent(rate_in, utterance_s=0.2)]

    s = CarrierSession(
        TwilioCodec(),
        link,
        manager or CallManager(),
        agent,
        playback=PlaybackSettings(**playback),  # type: ignore[arg-type]
        stream_secret=secret,
    )
    return s, link, spy


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize("message", [media_msg, twilio_media_msg])
async def test_echo_audio_returns_with_marks_and_completion_by_mark_echo(
    message: Callable[[int, bytes], str | bytes],
) -> None:
    s, link, spy = session(deadman_margin_s=5.0)
    s.receive_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    s.receive_text(start_msg())
    tone = (np.sin(np.arange(160) / 3) * 100 + 128).astype(np.uint8).tobytes()
    for i in range(10):  # 200 ms = one echo utterance, paced as the carrier sends it
        s.receive_text(message(i, tone))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    media = link.of("media")
    assert len(media) == 10
    echoed = b"".join(base64.b64decode(m["media"]["payload"]) for m in media)  # type: ignore[index]
    # mu-law -> PCM -> mu-law is lossless up to the sign of zero (0x7f and 0xff both mean 0)
    assert ulaw_decode(echoed) == ulaw_decode(tone * 10)
    marks = [m["mark"]["name"] for m in link.of("mark")]  # type: ignore[index]
    assert marks[-1].endswith(".end") and len(marks) >= 2
    started = spy.of(AgentStartedSpeakingFrame)
    assert len(started) == 1
    for name in marks:  # Twilio plays the audio and echoes every mark
        s.receive_text(mark_msg(name) if message is media_msg else twilio_mark_msg(name))
    stopped = spy.of(AgentStoppedSpeakingFrame)
    assert len(stopped) == 1
    assert stopped[0].strategy == "mark" and not stopped[0].interrupted
    assert stopped[0].played_s == pytest.approx(0.2)
    assert s.codec.last_sequence == 11 and s.codec.sequence_gaps == 0
    s.receive_text(json.dumps({"event": "stop", "sequenceNumber": "20", "streamSid": SID}))
    assert s.task is not None
    await asyncio.wait_for(s.task, 1)
    assert s.call is not None and s.call.state is CallState.ENDED
    assert link.closed is not None and link.closed[0] == 1000


async def test_interruption_clears_and_reports_what_was_heard() -> None:
    s, link, spy = session(mark_interval_s=0.1, deadman_margin_s=5.0)
    s.receive_text(start_msg())
    await settle()
    out = s.output
    assert out is not None and s.call is not None
    # an agent utterance of one second arrives at once (a TTS burst)
    out.on_down(TTSStartedFrame(utterance_id=5))
    out.on_down(AudioFrame(b"\x00\x00" * 8000, 8000))
    out.on_down(TTSStoppedFrame(utterance_id=5))
    sent_before = len(link.of("media"))
    assert sent_before == 4  # only the lead (80 ms) leaves at once
    await asyncio.sleep(0.15)
    # Twilio played the first 100 ms: it echoes the first intermediate mark
    first_mark = link.of("mark")[0]["mark"]["name"]  # type: ignore[index]
    s.receive_text(mark_msg(first_mark))  # type: ignore[arg-type]
    s.call.system(InterruptionFrame())
    assert link.sent[-1]["event"] == "clear"
    await settle()
    stopped = spy.of(AgentStoppedSpeakingFrame)
    assert len(stopped) == 1
    assert stopped[0].interrupted and stopped[0].utterance_id == 5
    assert stopped[0].played_s == pytest.approx(0.1)
    n = len(link.of("media"))
    await asyncio.sleep(0.1)
    assert len(link.of("media")) == n  # nothing more of that utterance leaves
    # Twilio echoes the pending marks because of the clear: flushed, not played, no completion
    for m in link.of("mark")[1:]:
        s.receive_text(mark_msg(m["mark"]["name"]))  # type: ignore[index]
    assert len(spy.of(AgentStoppedSpeakingFrame)) == 1


async def test_deadman_fires_when_marks_never_come_back() -> None:
    s, _, spy = session(deadman_margin_s=0.05)
    s.receive_text(start_msg())
    for i in range(10):
        s.receive_text(media_msg(i))
    await asyncio.sleep(0.4)
    stopped = spy.of(AgentStoppedSpeakingFrame)
    assert [f.strategy for f in stopped] == ["deadman"]
    assert s.output is not None and s.output.tracker.deadman_fires == 1


async def test_dtmf_becomes_a_frame() -> None:
    s, _, spy = session()
    s.receive_text(start_msg())
    await settle()
    s.receive_text(
        json.dumps(
            {
                "event": "dtmf",
                "streamSid": SID,
                "sequenceNumber": "3",
                "dtmf": {"track": "inbound_track", "digit": "7"},
            }
        )
    )
    digits = [f.digit for f in spy.of(DTMFFrame)]
    assert digits == ["7"]


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        '{"event":"media","streamSid":"MZx","media":{"payload":"@@@"}}',
        '{"event":"media"}',
        "[1,2,3]",
        twilio_media_msg(0).replace(b'"payload":"', b'"payload":"@'),  # the fast path's shape
        twilio_media_msg(0).replace(b'"chunk":"1"', b'"chunk":"-1"'),
    ],
)
async def test_a_malformed_message_ends_only_that_call(bad: str | bytes) -> None:
    manager = CallManager()
    s1, link1, _ = session(manager)
    s2, link2, _ = session(manager)
    s1.receive_text(start_msg())
    s2.receive_text(start_msg())
    await settle()
    s1.receive_text(bad)
    assert link1.closed is not None and link1.closed[0] == 1008
    s2.receive_text(media_msg(0))
    await settle()
    assert link2.closed is None
    assert s2.call is not None and s2.call.state is CallState.RUNNING
    assert s1.task is not None
    await asyncio.wait_for(s1.task, 1)
    assert manager.active == 1


async def test_stream_secret_and_capacity_refusals() -> None:
    manager = CallManager(max_calls=1)
    bad, link, _ = session(manager, secret="s3cret")
    bad.receive_text(start_msg({"token": "wrong"}))
    assert link.closed is not None and link.closed[0] == 1008 and bad.call is None
    good, link_ok, _ = session(manager, secret="s3cret")
    good.receive_text(start_msg({"token": "s3cret"}))
    assert good.call is not None and link_ok.closed is None
    third, link3, _ = session(manager, secret="s3cret")
    third.receive_text(start_msg({"token": "s3cret"}))
    assert link3.closed is not None and link3.closed[0] == 1013 and third.call is None


async def test_socket_closing_without_stop_ends_the_call() -> None:
    s, _, _ = session()
    s.receive_text(start_msg())
    s.receive_text(media_msg(0))
    await settle()
    s.socket_closed()
    assert s.task is not None
    await asyncio.wait_for(s.task, 1)
    assert s.call is not None and s.call.state is CallState.ENDED


async def test_a_stall_does_not_add_lasting_latency_to_live_audio() -> None:
    s, link, _ = session()
    s.receive_text(start_msg())
    for i in range(5):  # steady state: one frame every 20 ms
        s.receive_text(media_msg(i))
        await asyncio.sleep(0.02)
    sent = len(link.of("media"))
    assert sent == 5
    # the loop stalls for 200 ms: ten inbound frames are read at once
    for i in range(5, 15):
        s.receive_text(media_msg(i))
    out = s.output
    assert out is not None
    now = asyncio.get_running_loop().time()
    # stale audio was dropped: at most two frames stand between the caller and the newest one
    assert out.pacer.queued_s + out.pacer.far_queue_s(now) <= out.live_max_s + 1e-9
    dropped = out.pacer.dropped_bytes
    assert dropped > 0
    # and from then on each new frame leaves at once again
    for i in range(15, 20):
        await asyncio.sleep(0.02)
        before = len(link.of("media"))
        s.receive_text(media_msg(i))
        assert len(link.of("media")) >= before + 1
    assert out.pacer.dropped_bytes == dropped  # nothing more dropped once back in step


async def test_pause_holds_audio_without_loss_and_resume_continues() -> None:
    s, link, spy = session(deadman_margin_s=0.2)
    s.receive_text(start_msg())
    await settle()
    out = s.output
    assert out is not None and s.call is not None
    out.on_down(TTSStartedFrame(utterance_id=7))
    out.on_down(AudioFrame(b"\x00\x00" * 4000, 8000))  # 0.5 s
    out.on_down(TTSStoppedFrame(utterance_id=7))
    assert len(link.of("media")) == 4
    s.call.system(PausePlaybackFrame())
    await asyncio.sleep(0.5)  # longer than the deadman margin: it must not fire while held
    assert len(link.of("media")) == 4 and not link.of("clear")
    assert spy.of(AgentStoppedSpeakingFrame) == []
    s.call.system(ResumePlaybackFrame())
    async with asyncio.timeout(3):
        while len(link.of("media")) < 25:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(link.of("media")) == 25  # every chunk of the utterance, nothing dropped
    for m in link.of("mark"):
        s.receive_text(mark_msg(m["mark"]["name"]))  # type: ignore[index]
    stopped = spy.of(AgentStoppedSpeakingFrame)
    assert [(f.strategy, f.interrupted) for f in stopped] == [("mark", False)]


async def test_interruption_while_paused_clears_and_drops_the_held_audio() -> None:
    s, link, spy = session(deadman_margin_s=5.0)
    s.receive_text(start_msg())
    await settle()
    out = s.output
    assert out is not None and s.call is not None
    out.on_down(TTSStartedFrame(utterance_id=8))
    out.on_down(AudioFrame(b"\x00\x00" * 8000, 8000))
    s.call.system(PausePlaybackFrame())
    await asyncio.sleep(0.1)
    s.call.system(InterruptionFrame())
    assert link.sent[-1]["event"] == "clear"
    await settle()
    stopped = spy.of(AgentStoppedSpeakingFrame)
    assert len(stopped) == 1 and stopped[0].interrupted
    assert stopped[0].played_s <= 0.08 + 1e-9  # only what left before the pause
    n = len(link.of("media"))
    await asyncio.sleep(0.1)
    assert len(link.of("media")) == n
    assert not out.pacer.paused


async def test_transfer_waits_for_playback_then_calls_the_carrier() -> None:
    targets: list[str] = []

    async def transfer(info: StreamStarted, target: str) -> None:
        targets.append(target)

    s, link, _ = session(deadman_margin_s=0.05)
    s.transfer_handler = transfer
    s.receive_text(start_msg())
    await settle()
    out = s.output
    assert out is not None and s.call is not None
    out.on_down(TTSStartedFrame(utterance_id=9))
    out.on_down(AudioFrame(b"\x00\x00" * 1600, 8000))  # 0.2 s
    s.call.feed(TransferFrame(target="+15550100"))
    await settle()
    assert targets == []  # not before the words are heard
    await asyncio.sleep(0.5)
    assert targets == ["+15550100"]
    assert s.outcome == "transfer" and link.closed is not None


async def test_an_alaw_stream_is_decoded_and_echoed_as_alaw() -> None:
    s, link, spy = session(deadman_margin_s=5.0)
    s.receive_text(start_msg(encoding="audio/x-alaw"))
    await settle()
    tone = (np.sin(np.arange(160) / 3) * 100 + 128).astype(np.uint8).tobytes()
    s.receive_text(media_msg(0, tone))
    await settle()
    (frame,) = spy.of(AudioFrame)
    assert frame.pcm == alaw_decode(tone)  # decoded with the law the stream announced
    (media,) = link.of("media")
    echoed = base64.b64decode(media["media"]["payload"])  # type: ignore[index]
    assert alaw_decode(echoed) == alaw_decode(tone)


class BatchLink(FakeLink):
    """A link that sends several texts in one write (as PicowsLink does)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[list[str]] = []

    def send_text(self, text: str) -> None:
        self.send_texts([text])

    def send_texts(self, texts: list[str]) -> None:
        self.writes.append([json.loads(t)["event"] for t in texts])
        for text in texts:
            super().send_text(text)


async def test_an_audio_chunk_and_its_mark_go_out_in_one_write() -> None:
    link = BatchLink()
    s = CarrierSession(
        TwilioCodec(),
        link,
        CallManager(),
        lambda info, rate_in, rate_out: [EchoAgent(rate_in, utterance_s=0.2)],
        playback=PlaybackSettings(mark_interval_s=0.04),
    )
    s.receive_text(start_msg())
    await settle()
    for i in range(10):
        s.receive_text(twilio_media_msg(i))
        await asyncio.sleep(0.02)
    events = [e for write in link.writes for e in write]
    assert events == [m["event"] for m in link.sent]  # nothing lost or reordered
    assert events.count("media") == 10
    # a mark every 2 frames rides with the frame before it; the end mark follows on its own
    assert link.writes[:4] == [["media"], ["media", "mark"], ["media"], ["media", "mark"]]
    assert link.writes[-2:] == [["media", "mark"], ["mark"]]
