"""One worker process: the HTTP app and the media WebSocket server on one event loop.

SIGTERM (or SIGINT) drains: the media listener stops accepting, ``/readyz`` reports draining,
live calls go on until they end or ``drain_timeout_s`` passes (then they are ended), and the
worker exits. Several workers share the two ports with SO_REUSEPORT.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from harken.agent.echo import EchoAgent
from harken.errors import ConfigError
from harken.pipeline import Stage
from harken.protocols import CODECS
from harken.protocols.events import StreamStarted
from harken.records import CallRecorder
from harken.server.config import Config
from harken.server.http import build_app
from harken.server.media import PicowsLink, start_media_server
from harken.server.rest import HangupClient
from harken.transports.carrier import AgentFactory, CallManager, CarrierSession
from harken.transports.output import PlaybackSettings

if TYPE_CHECKING:
    from harken.server.playground import Playground
    from harken.transports.sip_server import SipServer

log = logging.getLogger("harken.server")


def agent_factory(config: Config) -> AgentFactory:
    """The agent stages for each call, from the config."""
    if config.agent.kind == "conversation":  # the embedded default
        from harken.agent.conversation import ConversationAgent

        return ConversationAgent(config.agent)
    if config.agent.kind == "bench_vad":  # the echo bench's VAD + turn agent
        from harken.bench.agents import bench_vad_agent

        return bench_vad_agent(config)
    utterance_s = config.agent.utterance_ms / 1000

    def echo(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        return [EchoAgent(rate_in, utterance_s)]

    return echo


def agent_warm_up(config: Config) -> Callable[[], None] | None:
    """What to load before the worker takes calls, so no call pays for loading a model."""
    if config.agent.kind == "bench_vad":
        from harken.speech import warm_up

        return warm_up
    return None


def playback_settings(config: Config) -> PlaybackSettings:
    p = config.playback
    return PlaybackSettings(
        lead_s=p.lead_ms / 1000,
        mark_interval_s=p.mark_interval_ms / 1000,
        deadman_margin_s=p.deadman_margin_ms / 1000,
        silence_tail_s=p.silence_tail_ms / 1000,
        strategy=p.strategy,
    )


class Worker:
    """Owns the servers and the calls of one process."""

    def __init__(
        self, config: Config, *, reuse_port: bool = False, agent: AgentFactory | None = None
    ) -> None:
        self.config = config
        self.reuse_port = reuse_port
        self.manager = CallManager(max_calls=config.server.max_calls)
        self.manager.idle.set()
        self.stopping = asyncio.Event()
        self.http_port = 0
        self.media_port = 0
        self._agent = agent or agent_factory(config)
        self._playback = playback_settings(config)
        self._http: aiohttp.ClientSession | None = None
        self._hangups = HangupClient(config, self._client)
        self._media: asyncio.base_events.Server | None = None
        self._runner: web.AppRunner | None = None
        self._recorder: CallRecorder | None = None
        self.playground: Playground | None = None  # browser calls (webrtc.enabled)
        self.sip: SipServer | None = None  # direct SIP/RTP (sip.port set)
        self.sip_port = 0

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._http

    def make_session(self, carrier: str, link: PicowsLink) -> CarrierSession:
        return CarrierSession(
            CODECS[carrier](),
            link,
            self.manager,
            self._agent,
            playback=self._playback,
            stream_secret=self.config.security.stream_secret,
            hangup=self._hangups.for_carrier(carrier),
            transfer=self._hangups.transfer_for_carrier(carrier),
        )

    async def start(self) -> None:
        s = self.config.server
        warm = agent_warm_up(self.config)
        if warm is not None:  # off the loop, before listening: the first call finds models warm
            await asyncio.get_running_loop().run_in_executor(None, warm)
        agent_warm = getattr(self._agent, "warm_up", None)
        if agent_warm is not None:  # an agent object that loads its own models (async)
            await agent_warm()
        await self._open_records()
        o = self.config.otel
        if o.enabled and hasattr(self._agent, "tracer"):
            from harken.agent.tracing import init_tracing

            self._agent.tracer = init_tracing(o.exporter, o.endpoint, o.service)
        self._media = await start_media_server(
            s.host, s.media_port, self.manager, self.make_session, reuse_port=self.reuse_port
        )
        self.media_port = self._media.sockets[0].getsockname()[1]
        app = build_app(
            self.config,
            self.manager,
            self.media_port,
            self._recorder.store if self._recorder is not None else None,
        )
        self._mount_webrtc(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, s.host, s.port, reuse_port=self.reuse_port or None)
        await site.start()
        server = site._server
        assert server is not None
        self.http_port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        await self._start_sip()
        gc.collect()
        gc.freeze()  # start-up objects never need scanning again: shorter GC pauses

    async def drain(self) -> None:
        """Stop taking calls, let live ones finish (up to the timeout), then stop."""
        self.manager.draining = True
        if self._media is not None:
            self._media.close()
        live = self.manager.active
        log.info(
            "draining: %d live call(s), up to %.0f s", live, self.config.server.drain_timeout_s
        )
        try:
            await asyncio.wait_for(self.manager.idle.wait(), self.config.server.drain_timeout_s)
        except TimeoutError:
            left = list(self.manager.sessions)
            log.warning("drain timeout: ending %d call(s)", len(left))
            for session in left:
                session.fail("drain timeout", 1001, "server shutting down")
            await asyncio.sleep(0.1)

    def _mount_webrtc(self, app: web.Application) -> None:
        """Browser calls (``webrtc.enabled``): signalling and the playground page, sharing this
        worker's agent factory and call admission."""
        if not self.config.webrtc.enabled:
            return
        from harken.server.playground import Playground

        self.playground = Playground(self.config.webrtc, self.manager, self._agent)
        self.playground.add_routes(app)

    async def _open_records(self) -> None:
        """Call records for an agent that writes them (the conversation agent)."""
        r = self.config.records
        if not r.enabled or not hasattr(self._agent, "recorder"):
            return
        if r.wav_dir and hasattr(self._agent, "wav_dir"):
            self._agent.wav_dir = r.wav_dir
        from harken.records import CallRecorder, open_store

        recorder = CallRecorder(open_store(sqlite_path=r.sqlite_path, postgres_dsn=r.postgres_dsn))
        await recorder.open()
        self._recorder = recorder
        self._agent.recorder = recorder

    async def _start_sip(self) -> None:
        """The SIP user agent (UDP), sharing this worker's agent factory and call admission."""
        sip = self.config.sip
        if not sip.port:
            return
        from harken.transports.sip_server import SipServer

        self.sip = SipServer(
            self.manager,
            self._agent,
            host=sip.host or self.config.server.host,
            port=sip.port,
            public_ip=sip.public_ip,
            rtp_ports=(sip.rtp_port_min, sip.rtp_port_max),
            playback=self._playback,
        )
        await self.sip.start(reuse_port=self.reuse_port)
        self.sip_port = self.sip.port

    async def close(self) -> None:
        if self.playground is not None:  # end every browser call, close its connection
            await self.playground.close()
            self.playground = None
        if self.sip is not None:  # BYE to every live SIP call, then the socket closes
            self.sip.close()
            self.sip = None
        if self._recorder is not None:
            await self._recorder.close()
            self._recorder = None
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def run(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        s = self.config.server
        print(
            f"harken: worker ready: http://{s.host}:{self.http_port} "
            f"media ws://{s.host}:{self.media_port}/stream/<carrier> "
            f"agent={self.config.agent.kind}" + (f" sip udp:{self.sip_port}" if self.sip else ""),
            flush=True,
        )
        await self.stopping.wait()
        await self.drain()
        await self.close()
        print("harken: worker stopped", flush=True)


def run_worker(config: Config, reuse_port: bool) -> None:
    """Process entry point for one worker."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("picows").setLevel(logging.WARNING)  # it logs every connection at INFO
    with asyncio.Runner(loop_factory=loop_factory(config.server.loop)) as runner:
        runner.run(Worker(config, reuse_port=reuse_port).run())


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a worker runs on: uvloop (libuv; less dispatch cost per socket event)
    when ``choice`` is ``uvloop``, or ``auto`` and it is installed; else asyncio's own."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError("server.loop: uvloop is not installed (pip install uvloop)") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
