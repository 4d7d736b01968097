"""The Twilio Media Streams carrier emulator against a small local WebSocket bot (aiohttp).

Timing assertions only use bounds that lateness cannot break (nothing is early, a mark is not
echoed before its audio has played) plus generous upper bounds, so a loaded machine passes.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from harken.testing import MarkEcho, PlaybackBuffer, TwilioEmulator, ulaw_decode, ulaw_encode

SID = re.compile(r"^(MZ|CA|AC)[0-9a-f]{32}$")


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(round(seconds * 8000)) / 8000
    return (8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


class Bot:
    """A minimal server side: records what the emulator sends, can echo media, and lets the
    test send arbitrary frames."""

    def __init__(self) -> None:
        self.msgs: list[tuple[float, dict[str, Any]]] = []
        self.ws: web.WebSocketResponse | None = None
        self.echo = False
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        loop = asyncio.get_running_loop()
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.msgs.append((loop.time(), data))
            self._changed.set()
            if self.echo and data["event"] == "media":
                out = {"event": "media", "streamSid": data["streamSid"], "media": {}}
                out["media"]["payload"] = data["media"]["payload"]
                await ws.send_str(json.dumps(out))
        self.closed.set()
        return ws

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [m for _, m in self.msgs if name is None or m["event"] == name]

    async def wait(self, pred: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self._changed.clear()
                await self._changed.wait()

    async def send(self, obj: Any) -> None:
        assert self.ws is not None
        if isinstance(obj, bytes):
            await self.ws.send_bytes(obj)
        else:
            await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def send_audio(self, sid: str, ulaw: bytes) -> None:
        payload = base64.b64encode(ulaw).decode()
        await self.send({"event": "media", "streamSid": sid, "media": {"payload": payload}})

    async def mark(self, sid: str, name: str) -> None:
        await self.send({"event": "mark", "streamSid": sid, "mark": {"name": name}})


@pytest.fixture
async def bot() -> AsyncIterator[tuple[Bot, str]]:
    b = Bot()
    app = web.Application()
    app.router.add_get("/ws", b.handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield b, str(server.make_url("/ws")).replace("http", "ws", 1)
    finally:
        await server.close()


def watch_loop(seen: list[dict[str, Any]]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: seen.append(ctx))


# ---- µ-law -------------------------------------------------------------------------------


def test_ulaw_matches_reference_g711() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    pcm = np.arange(-32768, 32768, dtype=np.int16)
    assert ulaw_encode(pcm) == audioop.lin2ulaw(pcm.tobytes(), 2)
    codes = bytes(range(256))
    assert ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)


def test_ulaw_properties() -> None:
    assert ulaw_encode(np.zeros(4, np.int16)) == b"\xff" * 4
    codes = np.array([c for c in range(256) if c != 0x7F], dtype=np.uint8)  # 0x7F is -0
    assert ulaw_encode(ulaw_decode(codes.tobytes())) == codes.tobytes()
    x = tone(0.1, 300.0)
    err = np.abs(ulaw_decode(ulaw_encode(x)).astype(int) - x)
    assert err.max() <= np.abs(x).max() / 16 + 8
    assert ulaw_encode(x.tobytes()) == ulaw_encode(x)
    with pytest.raises(TypeError):
        ulaw_encode(np.zeros(4, np.float32))


# ---- what the emulator sends ---------------------------------------------------------------


async def test_message_shapes_and_sequence(bot: tuple[Bot, str]) -> None:
    b, url = bot
    async with TwilioEmulator(url, custom_parameters={"tenant": "acme"}) as em:
        assert await em.play(tone(0.09)) == 5  # padded to whole 20 ms frames
        await em.dtmf("5")
        with pytest.raises(ValueError):
            await em.dtmf("55")
    await asyncio.wait_for(b.closed.wait(), 5)

    msgs = b.events()
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert [m["event"] for m in msgs[1:]] == ["start"] + ["media"] * 5 + ["dtmf", "stop"]
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, 9)]
    assert all(m["streamSid"] == em.stream_sid for m in msgs[1:])

    start = msgs[1]["start"]
    assert start["streamSid"] == em.stream_sid and start["callSid"] == em.call_sid
    assert all(SID.match(s) for s in (start["streamSid"], start["callSid"], start["accountSid"]))
    assert start["tracks"] == ["inbound"]
    assert start["customParameters"] == {"tenant": "acme"}
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    media = [m["media"] for m in b.events("media")]
    assert [m["chunk"] for m in media] == ["1", "2", "3", "4", "5"]
    assert all(m["track"] == "inbound" for m in media)
    stamps = [int(m["timestamp"]) for m in media]
    assert stamps[0] >= 0 and np.all(np.diff(stamps) == 20)
    sent = b"".join(base64.b64decode(m["payload"]) for m in media)
    padded = np.concatenate([tone(0.09), np.zeros(80, np.int16)])
    assert len(sent) == 800 and sent == ulaw_encode(padded)

    assert b.events("dtmf")[0]["dtmf"] == {"track": "inbound_track", "digit": "5"}
    stop = b.events("stop")[0]
    assert stop["stop"] == {"accountSid": em.account_sid, "callSid": em.call_sid}
    assert em.closed and em.stats.sent_frames == 5


async def test_media_follows_absolute_schedule(bot: tuple[Bot, str]) -> None:
    _, url = bot
    loop = asyncio.get_running_loop()
    async with TwilioEmulator(url, trace_sends=True) as em:
        t0 = loop.time()
        await em.play(tone(0.4))
        assert loop.time() - t0 >= 0.38 - 0.002  # 20 frames: the last one is due at +380 ms
    assert em.send_trace is not None and len(em.send_trace) == 20
    chunks, dues, sends = (np.array(col) for col in zip(*em.send_trace, strict=True))
    assert list(chunks) == list(range(1, 21))
    assert np.allclose(dues - dues[0], np.arange(20) * 0.02, atol=1e-9)
    assert np.all(sends >= dues - 0.002)  # never early


async def test_falling_behind_sends_late_instead_of_skipping(bot: tuple[Bot, str]) -> None:
    b, url = bot

    async def stall() -> None:
        await asyncio.sleep(0.1)
        time.sleep(0.3)  # block the whole loop: 15 frames' slots pass unsent

    async with TwilioEmulator(url, trace_sends=True) as em:
        stalling = asyncio.create_task(stall())
        assert await em.play(tone(0.8)) == 40
        await stalling
        await b.wait(lambda: len(b.events("media")) == 40)
    assert em.stats.late_sends >= 5 and em.stats.max_late_s >= 0.1
    media = b.events("media")
    assert [m["media"]["chunk"] for m in media] == [str(i) for i in range(1, 41)]
    assert np.all(np.diff([int(m["media"]["timestamp"]) for m in media]) == 20)
    # caught up on the original schedule instead of shifting it by the stall
    times = [t for t, m in b.msgs if m["event"] == "media"]
    assert times[-1] - times[0] < 0.78 + 0.2
    assert em.send_trace is not None
    assert min(s - d for _, d, s in em.send_trace[-5:]) < 0.1


async def test_background_silence_keeps_one_schedule(bot: tuple[Bot, str]) -> None:
    b, url = bot
    async with TwilioEmulator(url, background_silence=True, trace_sends=True) as em:
        await b.wait(lambda: len(b.events("media")) >= 5)
        await em.play(tone(0.1))
        em.set_background_silence(False)
    assert em.send_trace is not None
    dues = np.array([d for _, d, _ in em.send_trace])
    assert np.allclose(dues - dues[0], np.arange(len(dues)) * 0.02, atol=1e-9)
    payloads = [base64.b64decode(m["media"]["payload"]) for m in b.events("media")]
    assert payloads[0] == b"\xff" * 160
    assert ulaw_encode(tone(0.1)) in b"".join(payloads)


async def test_script_puts_dtmf_between_media(bot: tuple[Bot, str]) -> None:
    b, url = bot
    async with TwilioEmulator(url) as em:
        assert await em.play_script([tone(0.04), 0.04, "12", tone(0.02).tobytes()]) == 5
    kinds = [m["event"] for m in b.events()[2:]]
    assert kinds == ["media"] * 4 + ["dtmf", "dtmf", "media", "stop"]
    assert [m["dtmf"]["digit"] for m in b.events("dtmf")] == ["1", "2"]


# ---- what the emulator does with the server's messages -------------------------------------


async def test_echoed_audio_is_recorded_and_played_in_real_time(bot: tuple[Bot, str]) -> None:
    b, url = bot
    b.echo = True
    x = tone(0.3)
    async with TwilioEmulator(url) as em:
        await em.play(x)
        await em.wait_for(lambda: em.received_samples >= 2400, timeout=5)
    assert np.array_equal(em.received_pcm(), ulaw_decode(ulaw_encode(x)))
    assert em.stats.recv_frames == len(em.received) == 15 and em.stats.recv_bytes == 2400
    spans = em.played
    assert sum(s.n_samples for s in spans) == 2400 and not any(s.cut for s in spans)
    for rec, span in zip(em.received, spans, strict=True):
        assert span.first_sample == rec.first_sample and span.start >= rec.time
    for a, c in itertools.pairwise(spans):
        assert c.start >= a.end - 1e-9  # one sample at a time, never overlapping
    assert np.array_equal(em.played_pcm(), em.received_pcm())


async def test_mark_echo_waits_for_queued_audio(bot: tuple[Bot, str]) -> None:
    b, url = bot
    async with TwilioEmulator(url) as em:
        await b.wait(lambda: bool(b.events("start")))
        await b.send_audio(em.stream_sid, b"\x7f" * 8000)  # one second in one message
        await b.mark(em.stream_sid, "after-1s")
        (echo,) = await em.wait_marks(1, timeout=5)
        assert echo.name == "after-1s" and not echo.cleared
        arrived = em.received[0].time
        assert echo.due >= arrived + 1.0 - 1e-6 and echo.sent >= echo.due - 0.002
        assert echo.sent - arrived < 3.0

        await b.mark(em.stream_sid, "idle")  # nothing queued: echoed at once
        echo2 = (await em.wait_marks(2, timeout=5))[1]
        assert echo2.name == "idle" and echo2.due == echo2.received
        assert echo2.sent - echo2.received < 0.5
        await b.wait(lambda: len(b.events("mark")) == 2)
    marks = b.events("mark")
    assert [m["mark"] for m in marks] == [{"name": "after-1s"}, {"name": "idle"}]
    assert all(m["streamSid"] == em.stream_sid for m in marks)
    seqs = [int(m["sequenceNumber"]) for m in b.events()[1:]]
    assert seqs == list(range(1, len(seqs) + 1))


async def test_clear_drops_audio_and_releases_pending_marks(bot: tuple[Bot, str]) -> None:
    b, url = bot
    async with TwilioEmulator(url) as em:
        await b.wait(lambda: bool(b.events("start")))
        sid = em.stream_sid
        await b.send_audio(sid, b"\x7f" * 16000)
        await b.mark(sid, "a")
        await b.send_audio(sid, b"\x7f" * 4000)
        await b.mark(sid, "b")
        await em.wait_for(lambda: em.received_samples == 20000, timeout=5)
        await asyncio.sleep(0.3)
        await b.send({"event": "clear", "streamSid": sid})
        echoes = await em.wait_marks(2, timeout=5)
        assert [e.name for e in echoes] == ["a", "b"] and all(e.cleared for e in echoes)
        (cleared_at,) = em.clears
        assert all(e.due == cleared_at and e.sent - cleared_at < 0.5 for e in echoes)
        played = sum(s.n_samples for s in em.played)
        assert 0.25 * 8000 <= played < 2.0 * 8000
        assert abs(played - (cleared_at - em.played[0].start) * 8000) <= 1
        assert em.played[1].n_samples == 0 and em.played[1].cut
        assert len(em.played_pcm()) == played and em.playback_end == cleared_at

        await b.send_audio(sid, b"\x7f" * 800)  # after a clear, new audio plays at once
        await b.mark(sid, "c")
        echo = (await em.wait_marks(3, timeout=5))[2]
        assert not echo.cleared and em.played[-1].start == em.received[-1].time
        assert echo.due == pytest.approx(em.received[-1].time + 0.1)


async def test_bad_server_messages_are_recorded_not_raised(bot: tuple[Bot, str]) -> None:
    b, url = bot
    seen: list[dict[str, Any]] = []
    watch_loop(seen)
    async with TwilioEmulator(url) as em:
        await b.wait(lambda: bool(b.events("start")))
        sid = em.stream_sid
        bad: list[Any] = [
            "not json",
            b"\x00\x01",
            "[1, 2]",
            {"event": "bogus", "streamSid": sid},
            {"event": "media", "streamSid": "MZwrong", "media": {"payload": "/w=="}},
            {"event": "media", "streamSid": sid, "media": {"payload": "***"}},
            {"event": "media", "streamSid": sid, "media": {}},
            {"event": "mark", "streamSid": sid, "mark": {}},
            {"event": "mark", "streamSid": sid},
        ]
        for msg in bad:
            await b.send(msg)
        await b.mark(sid, "still-alive")
        await em.wait_marks(1, timeout=5)
        assert not em.closed
    reasons = [e.reason for e in em.protocol_errors]
    assert len(reasons) == len(bad) == em.stats.errors
    for want in ("binary", "invalid JSON", "not a JSON object", "unknown event", "streamSid"):
        assert any(want in r for r in reasons), want
    assert em.stats.recv_frames == 0 and not seen


async def test_server_hanging_up_ends_the_call(bot: tuple[Bot, str]) -> None:
    b, url = bot
    seen: list[dict[str, Any]] = []
    watch_loop(seen)
    async with TwilioEmulator(url) as em:
        await b.wait(lambda: bool(b.events("start")))
        playing = asyncio.create_task(em.play(tone(2.0)))
        await b.wait(lambda: len(b.events("media")) >= 3)
        assert b.ws is not None
        await b.ws.close()
        with pytest.raises(ConnectionResetError):
            await playing
        await em.wait_closed(timeout=5)
        assert em.closed
        with pytest.raises(ConnectionResetError):
            await em.wait_marks(1, timeout=1)
        with pytest.raises(ConnectionResetError):
            await em.send_silence(0.1)
    assert not b.events("stop") and not seen


async def test_stop_cuts_a_pending_play_short(bot: tuple[Bot, str]) -> None:
    b, url = bot
    em = TwilioEmulator(url)
    await em.connect()
    playing = asyncio.create_task(em.play(tone(2.0)))
    await b.wait(lambda: len(b.events("media")) >= 3)
    await em.stop()
    sent = await playing
    assert 3 <= sent < 100 and sent == em.stats.sent_frames
    await asyncio.wait_for(b.closed.wait(), 5)
    assert b.events()[-1]["event"] == "stop"
    assert b.events()[-1]["sequenceNumber"] == str(sent + 2)


# ---- the playback buffer model on its own (no socket, explicit clock) ----------------------


async def test_playback_buffer_model() -> None:
    released: list[MarkEcho] = []
    buf = PlaybackBuffer(released.append, max_buffer_s=0.5)
    t = asyncio.get_running_loop().time() + 100.0  # in the future: no timer fires meanwhile
    assert buf.media(b"\x7f" * 1600, t) and buf.play_end == t + 0.2
    buf.mark("a", t)
    assert buf.media(b"\x7f" * 800, t + 0.05) and buf.played[1].start == t + 0.2
    buf.mark("b", t + 0.05)
    assert not released  # both wait for their audio
    buf.clear(t + 0.25)  # "a" had played already; "b" is released by the clear
    assert [(e.name, e.cleared, e.due) for e in released] == [
        ("a", False, t + 0.2),
        ("b", True, t + 0.25),
    ]
    assert [s.n_samples for s in buf.played] == [1600, 400] and buf.played[1].cut
    buf.mark("c", t + 0.3)  # idle buffer: at once
    assert released[-1].name == "c" and released[-1].due == t + 0.3
    buf.close()

    full = PlaybackBuffer(released.append, max_buffer_s=0.5)  # Twilio's limit is 10 minutes
    assert full.media(b"\x7f" * 8000, t)  # 0 s buffered before it: accepted
    assert not full.media(b"\x7f" * 160, t + 0.1)  # 0.9 s buffered: no more data accepted
    assert len(full.received) == 2 and len(full.played) == 1 and full.play_end == t + 1.0
