"""The server driven over real WebSockets exactly as Twilio drives it (the carrier emulator)."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from harken.agent.echo import EchoAgent
from harken.frames import (
    AgentStoppedSpeakingFrame,
    AudioFrame,
    DTMFFrame,
    Frame,
    StartFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import Stage
from harken.protocols import compute_signature
from harken.protocols.events import StreamStarted
from harken.testing import Recorder, TwilioEmulator

RATE = 8000


def tone(seconds: float, freq: float = 440.0, amp: int = 8000) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * freq * t) * amp).astype(np.int16)


def spying_echo(spies: list[Recorder], utterance_s: float = 0.5) -> Callable[..., list[Stage]]:
    def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        spy = Recorder()
        spies.append(spy)
        return [spy, EchoAgent(rate_in, utterance_s)]

    return agent


def media_url(worker: Any) -> str:
    return f"ws://127.0.0.1:{worker.media_port}/stream/twilio"


async def test_audio_returns_and_marks_resolve_completion(make_worker: Any) -> None:
    spies: list[Recorder] = []
    worker = await make_worker(agent=spying_echo(spies, utterance_s=0.5))
    async with TwilioEmulator(media_url(worker)) as em:
        sent = tone(1.0)
        await em.play(sent)
        await em.send_silence(0.4)
        await em.wait_for(lambda: len(spies[0].of(AgentStoppedSpeakingFrame)) >= 2, 5)
    got = em.received_pcm()
    assert len(got) >= len(sent)
    # The echo is the caller's audio, mu-law quantised twice, from the first sample on.
    echoed = got[: len(sent)].astype(np.float64)
    ref = sent.astype(np.float64)
    snr = 10 * np.log10(np.sum(ref**2) / np.sum((echoed - ref) ** 2))
    assert snr > 30
    stopped = spies[0].of(AgentStoppedSpeakingFrame)
    assert [f.strategy for f in stopped[:2]] == ["mark", "mark"]
    assert all(f.played_s == pytest.approx(0.5, abs=0.021) for f in stopped[:2])
    assert any(m.name.endswith(".end") and not m.cleared for m in em.marks_echoed)
    assert not em.protocol_errors


class Speaker(Stage):
    """Speaks a long utterance at start; DTMF '*' barges in (as a VAD would)."""

    def __init__(self, seconds: float) -> None:
        super().__init__("speaker")
        self.seconds = seconds

    def on_down(self, frame: Frame) -> None:
        if not isinstance(frame, AudioFrame):  # the caller's audio is listened to, not echoed
            self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, StartFrame):
            self.push_down(TTSStartedFrame(utterance_id=1))
            self.push_down(AudioFrame(tone(self.seconds, 300).tobytes(), RATE))
            self.push_down(TTSStoppedFrame(utterance_id=1))
        elif isinstance(frame, DTMFFrame) and frame.digit == "*":
            assert self.call is not None
            self.call.interrupt()


async def test_interruption_sends_clear_and_reports_what_was_heard(make_worker: Any) -> None:
    spies: list[Recorder] = []

    def agent(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        spies.append(Recorder())
        return [spies[-1], Speaker(3.0)]

    worker = await make_worker(agent=agent)
    async with TwilioEmulator(media_url(worker), background_silence=True) as em:
        await em.wait_for(lambda: em.received_samples >= RATE // 2, 5)  # 0.5 s received
        await asyncio.sleep(0.2)
        await em.dtmf("*")
        await em.wait_for(lambda: bool(em.clears), 5)
        await em.wait_for(lambda: bool(spies[0].of(AgentStoppedSpeakingFrame)), 5)
        received_at_clear = em.received_samples
        await asyncio.sleep(0.3)
        assert em.received_samples == received_at_clear  # the rest never left the server
    (stopped,) = spies[0].of(AgentStoppedSpeakingFrame)
    assert stopped.interrupted and stopped.strategy == "interrupted"
    heard = sum(p.n_samples for p in em.played) / RATE  # what the emulated caller played
    # reported from the last played mark: never more than was heard, at most one interval less
    assert stopped.played_s <= heard + 0.021
    assert stopped.played_s >= heard - 0.2
    assert received_at_clear / RATE < 1.5  # the lead kept most of the 3 s utterance unsent
    # marks Twilio echoed because of the clear did not count as played (one completion only)
    assert len(spies[0].of(AgentStoppedSpeakingFrame)) == 1


async def test_dtmf_arrives_as_frames(make_worker: Any) -> None:
    spies: list[Recorder] = []
    worker = await make_worker(agent=spying_echo(spies))
    async with TwilioEmulator(media_url(worker)) as em:
        await em.play_script([tone(0.1), "12", 0.1, "9*"])
        await em.wait_for(lambda: len(spies[0].of(DTMFFrame)) == 4, 5)
    assert [f.digit for f in spies[0].of(DTMFFrame)] == ["1", "2", "9", "*"]


async def test_webhook_signature_is_verified(make_worker: Any) -> None:
    token = "0123456789abcdef0123456789abcdef"
    worker = await make_worker({"carriers": {"twilio": {"auth_token": token}}})
    url = f"http://127.0.0.1:{worker.http_port}/twilio/voice"
    params = {"CallSid": "CA" + "1" * 32, "From": "+15551230000", "To": "+15559870000"}
    good = compute_signature(token, url, params)
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=params, headers={"X-Twilio-Signature": "bogus"}) as r:
            assert r.status == 403
        async with http.post(url, data=params) as r:
            assert r.status == 403
        async with http.post(url, data=params, headers={"X-Twilio-Signature": good}) as r:
            assert r.status == 200
            twiml = await r.text()
        tampered = dict(params, To="+15550000000")
        async with http.post(url, data=tampered, headers={"X-Twilio-Signature": good}) as r:
            assert r.status == 403
    assert f"ws://127.0.0.1:{worker.media_port}/stream/twilio" in twiml
    assert '<Parameter name="CallSid"' in twiml


async def test_a_malformed_message_ends_only_that_call(make_worker: Any) -> None:
    worker = await make_worker()
    async with TwilioEmulator(media_url(worker), background_silence=True) as healthy:
        async with aiohttp.ClientSession() as http:
            for bad in ("{not json", '{"event":"media","media":{"payload":"%%%"}}', "[]"):
                async with http.ws_connect(media_url(worker)) as ws:
                    sid = "MZ" + "e" * 32
                    await ws.send_str(json.dumps({"event": "connected"}))
                    start = {
                        "streamSid": sid,
                        "callSid": "CA" + "f" * 32,
                        "tracks": ["inbound"],
                        "customParameters": {},
                        "accountSid": "AC" + "0" * 32,
                    }
                    await ws.send_str(
                        json.dumps(
                            {
                                "event": "start",
                                "streamSid": sid,
                                "sequenceNumber": "1",
                                "start": start,
                            }
                        )
                    )
                    await ws.send_str(bad)
                    msg = await asyncio.wait_for(ws.receive(), 5)
                    while msg.type is aiohttp.WSMsgType.TEXT:
                        msg = await asyncio.wait_for(ws.receive(), 5)
                    assert msg.type is aiohttp.WSMsgType.CLOSE
                    assert ws.close_code == 1008
        before = healthy.received_samples
        await healthy.play(tone(0.3))
        await healthy.wait_for(lambda: healthy.received_samples >= before + 2000, 5)
        assert not healthy.closed
        assert worker.manager.active == 1


async def test_agent_hangup_plays_remaining_audio_then_calls_twilio_rest(
    make_worker: Any, local_http: Any
) -> None:
    seen: list[dict[str, Any]] = []

    async def calls(request: web.Request) -> web.Response:
        form = await request.post()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "auth": request.headers.get("Authorization"),
                "ctype": request.headers.get("Content-Type"),
                "form": dict(form),
                "t": time.monotonic(),
            }
        )
        return web.json_response({"sid": request.match_info["sid"], "status": "completed"})

    app = web.Application()
    app.router.add_route("*", "/2010-04-01/Accounts/{acct}/Calls/{sid}.json", calls)
    api = await local_http(app)
    acct, token = "AC" + "a" * 32, "secret-token"
    worker = await make_worker(
        {"carriers": {"twilio": {"account_sid": acct, "auth_token": token, "api_base": api}}}
    )
    em = TwilioEmulator(media_url(worker))
    await em.connect()
    await em.play(tone(0.6))
    await em.dtmf("#")  # the echo agent hangs up on '#'
    await em.wait_closed(5)
    await em.close()
    assert len(seen) == 1
    req = seen[0]
    assert req["method"] == "POST"
    assert req["path"] == f"/2010-04-01/Accounts/{acct}/Calls/{em.call_sid}.json"
    assert req["auth"] == "Basic " + base64.b64encode(f"{acct}:{token}".encode()).decode()
    assert req["ctype"] == "application/x-www-form-urlencoded"
    assert req["form"] == {"Status": "completed"}
    # the echoed audio before the hang-up was all played before the REST call
    assert em.received_samples >= int(0.6 * RATE)
    assert (
        em.playback_end <= req["t"] - (time.monotonic() - asyncio.get_running_loop().time()) + 0.1
    )
    assert any(m.name.endswith(".end") and not m.cleared for m in em.marks_echoed)


async def test_capacity_refuses_cleanly_and_readyz_says_so(make_worker: Any) -> None:
    worker = await make_worker({"server": {"max_calls": 2}})
    base = f"http://127.0.0.1:{worker.http_port}"
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/readyz") as r:
            assert r.status == 200
        async with (
            TwilioEmulator(media_url(worker), background_silence=True) as a,
            TwilioEmulator(media_url(worker), background_silence=True) as b,
        ):
            await a.wait_for(lambda: worker.manager.active == 2, 5)
            async with http.get(base + "/readyz") as r:
                assert r.status == 503
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(media_url(worker))
            assert refused.value.status == 503
            async with http.get(base + "/metrics") as r:
                text = await r.text()
            assert 'harken_calls_refused_total{reason="capacity"}' in text
            assert not a.closed and not b.closed
        await asyncio.sleep(0.2)
        async with http.get(base + "/readyz") as r:
            assert r.status == 200


async def test_stream_secret_is_required_when_configured(make_worker: Any) -> None:
    worker = await make_worker({"security": {"stream_secret": "hunter2"}})
    async with TwilioEmulator(media_url(worker), custom_parameters={"token": "nope"}) as em:
        await em.wait_closed(5)
    assert em.received_samples == 0
    async with TwilioEmulator(media_url(worker), custom_parameters={"token": "hunter2"}) as ok:
        await ok.play(tone(0.2))
        await ok.wait_for(lambda: ok.received_samples >= 1000, 5)


def _readyz(port: int) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@pytest.mark.slow
async def test_sigterm_with_20_live_calls_loses_none(server_process: Any) -> None:
    server = server_process()
    url = f"ws://127.0.0.1:{server.media}/stream/twilio"
    ems = [TwilioEmulator(url, background_silence=True) for _ in range(20)]
    await asyncio.gather(*(em.connect() for em in ems))
    await asyncio.gather(*(em.play(tone(0.4)) for em in ems))
    await asyncio.gather(*(em.wait_for(lambda e=em: e.received_samples >= 3000, 10) for em in ems))
    server.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, _readyz, server.http) == 503
    with pytest.raises(aiohttp.ClientError):  # no new calls while draining
        async with aiohttp.ClientSession() as http:
            await http.ws_connect(url)
    # the live calls carry on: audio sent after SIGTERM still comes back
    marks = [em.received_samples for em in ems]
    await asyncio.gather(*(em.play(tone(0.6, 500)) for em in ems))
    await asyncio.gather(
        *(
            em.wait_for(lambda e=em, m=m: e.received_samples >= m + 4000, 10)
            for em, m in zip(ems, marks, strict=True)
        )
    )
    assert not any(em.closed for em in ems)
    assert server.proc.poll() is None  # still draining
    await asyncio.gather(*(em.stop() for em in ems))
    code = await loop.run_in_executor(None, server.proc.wait, 20)
    assert code == 0
    assert all(em.stats.errors == 0 for em in ems)


@pytest.mark.slow
async def test_two_workers_share_the_ports(server_process: Any) -> None:
    server = server_process("--workers", "2", wait_for=2)
    url = f"ws://127.0.0.1:{server.media}/stream/twilio"
    ems = [TwilioEmulator(url) for _ in range(12)]
    await asyncio.gather(*(em.connect() for em in ems))
    await asyncio.gather(*(em.play(tone(0.2)) for em in ems))
    await asyncio.gather(*(em.wait_for(lambda e=em: e.received_samples >= 1600, 10) for em in ems))
    await asyncio.gather(*(em.stop() for em in ems))
    await asyncio.sleep(0.5)
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{server.http}/metrics") as r,
    ):
        text = await r.text()
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('harken_calls_total{carrier="twilio"')
    )
    assert total == 12  # aggregated over both workers
    server.proc.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, server.proc.wait, 20) == 0
