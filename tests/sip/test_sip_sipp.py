"""A real SIP peer: sipp (Debian's ``sip-tester``) calls an in-process worker with SIP enabled.

sipp's built-in ``uac_pcap`` scenario sends an INVITE offering PCMA and telephone-event, plays
``pcap/g711a.pcap`` (about 5 s of A-law speech) and then ``pcap/dtmf_2833_1.pcap`` (the digit
1 as RFC 4733 events), waits and hangs up with a BYE.

What reached sipp: sipp has no option to record the RTP it receives, but ``-rtp_echo`` sends
every packet that arrives on its media port back to where it came from. Our RTP session counts
packets carrying its own SSRC as a media loop (RFC 3550 8.2) and drops them; the tests capture
them on the way in: each one is a packet that sipp received from us. (A packet capture, or sipp
in a network namespace, would be the alternatives; both need privileges the suite should not.)
"""

from __future__ import annotations

import asyncio
import csv
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harken.audio.g711 import alaw_decode
from harken.frames import DTMFFrame
from harken.pipeline import Stage
from harken.protocols.events import StreamStarted
from harken.protocols.rtp import parse_rtp
from harken.server import config as config_mod
from harken.server.worker import Worker
from harken.testing import Recorder, workers
from harken.transports.rtp_session import RtpSession

from .conftest import free_udp_port

SIPP = shutil.which("sipp")
PCAP_DIRS = [
    Path("/usr/share/sip-tester"),
    Path("/usr/share/sipp/pcap"),
    Path("/usr/local/share/sipp/pcap"),
]
PCAPS = next((d for d in PCAP_DIRS if (d / "g711a.pcap").is_file()), None)

pytestmark = pytest.mark.skipif(
    SIPP is None or PCAPS is None,
    reason="sipp and its pcaps are not installed (scripts/test-deps.sh installs sip-tester)",
)


class Looped:
    """Our RTP packets that sipp echoed back (``-rtp_echo``): what sipp received from us."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        original = RtpSession.datagram_received

        def spy(session: RtpSession, data: bytes, addr: tuple[str, int]) -> None:
            codec = session.codec
            if codec is not None and len(data) >= 12 and int.from_bytes(data[8:12]) == codec.ssrc:
                self.packets.append(data)
            original(session, data, addr)

        monkeypatch.setattr(RtpSession, "datagram_received", spy)

    def loud(self, min_rms: float = 200.0) -> int:
        """How many of them carried sound (not comfort silence)."""
        n = 0
        for data in self.packets:
            pcm = np.frombuffer(alaw_decode(parse_rtp(data).payload), np.int16)
            if float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) > min_rms:
                n += 1
        return n


async def start_worker(agent: Any, sip_port: int, **agent_config: Any) -> Worker:
    data: dict[str, Any] = {
        "server": {"max_calls": 200},
        "agent": {"kind": "echo", **agent_config},
        "records": {"enabled": False},
        "sip": {
            "port": sip_port,
            "host": "127.0.0.1",
            "rtp_port_min": 24000,
            "rtp_port_max": 25999,
        },
    }
    return await workers.start_worker(data, agent)


stop_worker = workers.stop_worker


async def run_sipp(
    tmp: Path, port: int, *args: str, scenario: str = "uac_pcap", timeout: float = 90.0
) -> dict[str, str]:
    """Run sipp from ``tmp`` (where ``pcap/`` points at the pcaps); returns its final stats."""
    assert SIPP is not None and PCAPS is not None
    pcap = tmp / "pcap"
    if not pcap.exists():
        pcap.symlink_to(PCAPS)
    where = ["-sf", scenario] if scenario.endswith(".xml") else ["-sn", scenario]
    command = [
        SIPP,
        *where,
        f"127.0.0.1:{port}",
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port() & ~1),
        "-nostdin",
        "-trace_err",
        "-trace_stat",
        "-fd",
        "1",
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *command,
        cwd=tmp,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    stats_files = sorted(tmp.glob("*_.csv"))
    assert stats_files, out.decode(errors="replace")[-3000:]
    with stats_files[-1].open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    stats = dict(zip(rows[0], rows[-1], strict=False))
    stats["returncode"] = str(proc.returncode)
    errors = "".join(p.read_text(errors="replace")[-2000:] for p in tmp.glob("*_errors.log"))
    stats["errors"] = errors
    stats["output"] = out.decode(errors="replace")[-2000:]
    for f in stats_files:
        f.unlink()
    return stats


def spying(agent: Any, spies: list[Recorder]) -> Any:
    def factory(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        spy = Recorder()
        spies.append(spy)
        return [spy, *agent(info, rate_in, rate_out)]

    return factory


async def test_sipp_uac_pcap_against_the_echo_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harken.server.worker import agent_factory

    looped = Looped()
    looped.install(monkeypatch)
    spies: list[Recorder] = []
    port = free_udp_port()
    echo = agent_factory(config_mod.Config(agent=config_mod.AgentConfig(kind="echo")))
    worker = await start_worker(spying(echo, spies), port)
    try:
        stats = await run_sipp(tmp_path, port, "-m", "1", "-rtp_echo")
    finally:
        await stop_worker(worker)
    assert stats["returncode"] == "0", stats
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == ("1", "0"), stats
    assert [f.digit for f in spies[0].of(DTMFFrame)] == ["1"]  # once, though sent 3 times
    # sipp got our stream (50 packets/s for the ~9 s call), echoed speech included
    assert len(looped.packets) > 300, len(looped.packets)
    assert looped.loud() > 100, looped.loud()


async def test_sipp_digit_reaches_the_conversation_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harken.agent.conversation import ConversationAgent

    assert SIPP is not None
    looped = Looped()
    looped.install(monkeypatch)
    cfg = config_mod.AgentConfig(
        kind="conversation",
        tts=config_mod.TtsConfig(engine="espeak"),
        idle=config_mod.IdleConfig(after_s=0),
    )
    agent = ConversationAgent(cfg)
    await agent.warm_up()
    spies: list[Recorder] = []
    port = free_udp_port()
    worker = await start_worker(spying(agent, spies), port)
    engines: list[Any] = []

    def find_engine() -> None:
        from harken.conversation import ConversationEngine

        for call in worker.sip.calls.values() if worker.sip else ():
            if call.call is not None:
                engines.extend(s for s in call.call.stages if isinstance(s, ConversationEngine))

    # the built-in scenario, but staying on the line 4 s after the digit (the agent's turn)
    proc = await asyncio.create_subprocess_exec(
        SIPP, "-sd", "uac_pcap", stdout=asyncio.subprocess.PIPE
    )
    xml, _ = await proc.communicate()
    text = xml.decode()
    last_pause = text.rindex('<pause milliseconds="1000"/>')
    text = text[:last_pause] + '<pause milliseconds="4000"/>' + text[last_pause + 28 :]
    (tmp_path / "uac_pcap_digit.xml").write_text(text)
    try:
        sipp = asyncio.create_task(
            run_sipp(tmp_path, port, "-m", "1", "-rtp_echo", scenario="uac_pcap_digit.xml")
        )
        while not sipp.done() and not engines:
            await asyncio.sleep(0.1)
            find_engine()
        stats = await sipp
    finally:
        await stop_worker(worker)
    assert stats["returncode"] == "0", stats
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == ("1", "0"), stats
    assert [f.digit for f in spies[0].of(DTMFFrame)] == ["1"]
    (engine,) = engines
    assert any(r.kind == "dtmf" and r.user_text == "1" for r in engine.replies), [
        (r.kind, r.user_text, r.spoken) for r in engine.replies
    ]
    assert engine.replies[0].kind == "greeting"
    assert looped.loud() > 25, looped.loud()  # the greeting (espeak) reached sipp


@pytest.mark.slow
async def test_sipp_100_concurrent_calls_on_one_worker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harken.server.worker import agent_factory

    port = free_udp_port()
    echo = agent_factory(config_mod.Config(agent=config_mod.AgentConfig(kind="echo")))
    worker = await start_worker(echo, port)
    peak = 0

    async def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, worker.manager.active)
            await asyncio.sleep(0.1)

    watcher = asyncio.create_task(watch())
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    try:
        stats = await run_sipp(tmp_path, port, "-r", "20", "-l", "100", "-m", "100", timeout=240)
    finally:
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        watcher.cancel()
        await stop_worker(worker)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    with capsys.disabled():
        print(
            f"\nsipp 100 calls: {stats['SuccessfulCall(C)']} ok, {stats['FailedCall(C)']} failed,"
            f" peak {peak} concurrent; worker CPU {cpu:.1f} s over {t1 - t0:.1f} s"
            f" ({100 * cpu / (t1 - t0):.0f}% of a core)"
        )
    assert stats["returncode"] == "0", stats
    assert (stats["SuccessfulCall(C)"], stats["FailedCall(C)"]) == ("100", "0"), stats
    assert peak >= 90
