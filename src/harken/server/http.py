"""HTTP routes (aiohttp): carrier webhooks, health, readiness and metrics.

* ``POST /twilio/voice``: TwiML ``<Connect><Stream>`` pointing at this server's Twilio media
  endpoint, with the call's details (and the stream secret, if set) as ``<Parameter>``s. When a
  Twilio auth token is configured, ``X-Twilio-Signature`` is verified; a bad one gets 403.
* ``GET /healthz``: the process is alive. ``GET /readyz``: 200 while this worker accepts calls,
  503 when it is at ``max_calls`` or draining. ``GET /metrics``: Prometheus text format.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from harken.protocols import twilio
from harken.records.store import CallStore
from harken.server import metrics
from harken.server.config import Config
from harken.transports.carrier import CallManager

CONFIG_KEY = web.AppKey("config", Config)
MANAGER_KEY = web.AppKey("manager", CallManager)
MEDIA_PORT_KEY = web.AppKey("media_port", int)

_FORWARDED_PARAMETERS = ("CallSid", "AccountSid", "From", "To", "Direction")


def request_url(request: web.Request, config: Config) -> str:
    """The URL the carrier requested, as it signed it (public_url when behind a proxy)."""
    if config.server.public_url:
        return config.server.public_url.rstrip("/") + request.path_qs
    proto = request.headers.get("X-Forwarded-Proto", request.scheme)
    return f"{proto}://{request.host}{request.path_qs}"


def stream_url(request: web.Request, config: Config, carrier: str, media_port: int) -> str:
    """The media WebSocket URL a carrier should connect to."""
    public = config.server.public_url
    if public:
        parts = urlsplit(public)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return f"{scheme}://{parts.netloc}{parts.path.rstrip('/')}/stream/{carrier}"
    host = request.host.rsplit(":", 1)[0] if not request.host.startswith("[") else request.host
    if host.startswith("[") and "]:" in host:
        host = host.rsplit(":", 1)[0]
    return f"ws://{host}:{media_port}/stream/{carrier}"


async def twilio_voice(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    form = await request.post()
    params = [(k, v) for k, v in form.items() if isinstance(v, str)]
    token = config.carriers.twilio.auth_token
    if token:
        signature = request.headers.get("X-Twilio-Signature")
        if not twilio.validate_signature(token, request_url(request, config), params, signature):
            metrics.SIGNATURE_FAILURES.inc()
            raise web.HTTPForbidden(text="invalid X-Twilio-Signature")
    manager = request.app[MANAGER_KEY]
    if not manager.accepting:
        # Say so politely; the carrier plays this instead of connecting the stream.
        body = (
            '<?xml version="1.0" encoding="UTF-8"?><Response><Say>All our agents are busy. '
            "Please call again shortly.</Say><Hangup/></Response>"
        )
        return web.Response(text=body, content_type="text/xml")
    values = dict(params)
    parameters = {k: values[k] for k in _FORWARDED_PARAMETERS if k in values}
    if config.security.stream_secret:
        parameters["token"] = config.security.stream_secret
    url = stream_url(request, config, "twilio", request.app[MEDIA_PORT_KEY])
    body = twilio.connect_stream_twiml(url, parameters, allow_insecure=url.startswith("ws://"))
    return web.Response(text=body, content_type="text/xml")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    manager = request.app[MANAGER_KEY]
    reason = manager.refusal()
    if reason is None:
        return web.Response(text=f"ready ({manager.active}/{manager.max_calls} calls)")
    return web.Response(status=503, text=f"not ready: {reason} ({manager.active} calls)")


async def metrics_route(request: web.Request) -> web.Response:
    body, content_type = metrics.render()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def index(request: web.Request) -> web.Response:
    config = request.app[CONFIG_KEY]
    if config.webrtc.enabled and config.webrtc.playground:
        raise web.HTTPFound("/playground")  # the browser playground (docs/webrtc.md)
    text = (
        "harken agent server\n\n"
        f"agent: {config.agent.kind}\n"
        "Twilio webhook: POST /twilio/voice\n"
        f"media streams: ws://<host>:{request.app[MEDIA_PORT_KEY]}/stream/"
        "{twilio,telnyx,plivo,vonage,exotel}\n"
        "health: /healthz  readiness: /readyz  metrics: /metrics  call records: /calls\n"
    )
    return web.Response(text=text)


def build_app(
    config: Config, manager: CallManager, media_port: int, calls: CallStore | None = None
) -> web.Application:
    """The HTTP app; ``media_port`` is the port the media server actually bound; ``calls`` the
    call-record store behind the ``/calls`` pages (none: no pages)."""
    app = web.Application()
    app[CONFIG_KEY] = config
    app[MANAGER_KEY] = manager
    app[MEDIA_PORT_KEY] = media_port
    app.add_routes(
        [
            web.get("/", index),
            web.post("/twilio/voice", twilio_voice),
            web.get("/healthz", healthz),
            web.get("/readyz", readyz),
            web.get("/metrics", metrics_route),
        ]
    )
    if calls is not None:
        from harken.server.calls_page import add_routes

        add_routes(app, calls)
    return app
