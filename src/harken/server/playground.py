"""The browser playground: talk to the agent from a web page, over WebRTC.

Routes (mounted on the worker's HTTP app when ``webrtc.enabled``; see docs/webrtc.md):

* ``POST /webrtc/offer``: JSON ``{"sdp": ..., "type": "offer"}`` (every ICE candidate in the
  SDP: no trickle) → ``{"sdp": ..., "type": "answer", "call_id": ...}``. ``400`` for an unusable
  offer, ``503`` while the worker is full or draining (the same admission as carrier calls).
* ``GET /webrtc/config``: what the page needs to connect (ICE servers).
* ``GET /playground`` (and ``GET /`` while ``webrtc.playground`` is on): the page;
  ``/playground/static/*``: its script and style sheet. Everything is served from the package:
  no CDN, no framework.

Each call is a :class:`~harken.transports.webrtc.WebRtcSession` running the worker's agent
factory, with the playground's event taps (:mod:`harken.server.playground_events`) around the
conversation engine.
"""

from __future__ import annotations

import logging
from pathlib import Path

from aiohttp import web

from harken.errors import ConfigError, RemoteProtocolError, TransportError
from harken.server.config import WebRtcConfig
from harken.transports.carrier import AgentFactory, CallManager

try:
    from harken.server.playground_events import decorate
    from harken.transports.webrtc import WebRtcSession, WebRtcSettings
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ConfigError(
        f"webrtc.enabled needs aiortc: pip install 'harken[webrtc]' ({exc})"
    ) from None

__all__ = ["Playground", "settings_from"]

log = logging.getLogger("harken.webrtc")

STATIC_DIR = Path(__file__).with_name("static")
_MAX_OFFER_BYTES = 64 * 1024


def settings_from(config: WebRtcConfig) -> WebRtcSettings:
    return WebRtcSettings(
        sample_rate_in=config.sample_rate_in,
        sample_rate_out=config.sample_rate_out,
        ice_servers=tuple(config.ice_servers),
        jitter_capacity=config.jitter_capacity,
        jitter_prefetch=config.jitter_prefetch,
        connect_timeout_s=config.connect_timeout_s,
    )


class Playground:
    """The worker's browser calls: signalling, the page, and the live sessions."""

    def __init__(self, config: WebRtcConfig, manager: CallManager, agent: AgentFactory) -> None:
        self.config = config
        self.manager = manager
        self.agent = agent
        self.settings = settings_from(config)
        self.sessions: set[WebRtcSession] = set()

    def add_routes(self, app: web.Application) -> None:
        routes = [
            web.post("/webrtc/offer", self.offer),
            web.get("/webrtc/config", self.client_config),
        ]
        if self.config.playground:
            routes.append(web.get("/playground", self.page))
            app.router.add_static("/playground/static", STATIC_DIR)
        app.add_routes(routes)

    async def page(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(
            STATIC_DIR / "playground.html", headers={"Cache-Control": "no-cache"}
        )

    async def client_config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ice_servers": list(self.config.ice_servers),
                "rate_in": self.config.sample_rate_in,
                "rate_out": self.config.sample_rate_out,
            }
        )

    async def offer(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > _MAX_OFFER_BYTES:
            return _error(413, "offer too large")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "expected a JSON body")
        if not isinstance(body, dict):
            return _error(400, "expected a JSON object")
        sdp, kind = body.get("sdp"), body.get("type", "offer")
        if not isinstance(sdp, str) or not isinstance(kind, str) or len(sdp) > _MAX_OFFER_BYTES:
            return _error(400, "expected {'sdp': <offer>, 'type': 'offer'}")
        refusal = self.manager.refusal()
        if refusal is not None:
            return _error(503, f"not taking calls: {refusal}")
        self._prune()
        session = WebRtcSession(
            self.manager,
            self.agent,
            self.settings,
            decorate=decorate,
            user_agent=request.headers.get("User-Agent", ""),
        )
        try:
            answer = await session.accept(sdp, kind)
        except RemoteProtocolError as exc:
            return _error(400, str(exc))
        except TransportError as exc:
            return _error(503, f"not taking calls: {exc}")
        self.sessions.add(session)
        log.info("webrtc %s: answered (%s)", session.call_id, request.remote)
        return web.json_response(
            {"sdp": answer.sdp, "type": answer.type, "call_id": session.call_id}
        )

    def _prune(self) -> None:
        self.sessions = {s for s in self.sessions if not s.closed}

    async def close(self) -> None:
        """The worker is shutting down: end every browser call."""
        sessions, self.sessions = self.sessions, set()
        for session in sessions:
            await session.close()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
