"""Carrier media WebSockets on picows (the fastest stack measured for this hot path).

One endpoint per carrier: ``/stream/twilio``, ``/stream/telnyx``, ``/stream/plivo``,
``/stream/vonage``, ``/stream/exotel``. A new stream is refused at the upgrade with HTTP 503
while the worker is at ``max_calls`` or draining; ``GET /healthz`` answers on this port too, for
load balancers that probe the media port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from harken.protocols import CODECS
from harken.server import metrics
from harken.transports.carrier import CallManager, CarrierSession

log = logging.getLogger("harken.media")

SessionFactory = Callable[[str, "PicowsLink"], CarrierSession]
_MAX_MESSAGE = 1 << 20
# enum members bound once: ``WSMsgType.TEXT`` is an attribute lookup on an enum class
_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE


class PicowsLink:
    """:class:`~harken.transports.output.Link` over a picows transport."""

    __slots__ = ("transport",)

    def __init__(self) -> None:
        self.transport: WSTransport | None = None

    def send_text(self, text: str) -> None:
        t = self.transport
        if t is not None:  # picows drops a send after the close frame (and encodes the str)
            t.send(_TEXT, text)

    def send_texts(self, texts: list[str]) -> None:
        """Several text messages in one write (one system call): server frames are unmasked,
        so each is its header and the UTF-8 text; the write goes through the same transport
        as picows's own, after whatever it has buffered."""
        t = self.transport
        if t is None or t.is_close_frame_sent or t.is_disconnected:
            return
        parts: list[bytes] = []
        for text in texts:
            data = text.encode()
            size = len(data)
            parts.append(_SMALL_HEADERS[size] if size < 126 else text_frame_header(size))
            parts.append(data)
        t.underlying_transport.write(b"".join(parts))

    def send_bytes(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not t.is_close_frame_sent:
            t.send(_BINARY, data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        t = self.transport
        if t is None:
            return
        if not t.is_close_frame_sent:
            t.send_close(WSCloseCode(code), reason.encode()[:120])
        t.disconnect()

    def pause_reading(self) -> None:
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.underlying_transport.resume_reading()


def text_frame_header(size: int, *, masked: bool = False) -> bytes:
    """The header of a final text frame carrying ``size`` bytes (RFC 6455 5.2), up to the
    masking key: a server's frames are unmasked; a client's set the mask bit, and the caller
    appends the four-byte key and the masked payload."""
    mask = 0x80 if masked else 0
    if size < 126:
        return bytes((0x81, mask | size))
    if size < 1 << 16:
        return bytes((0x81, mask | 126)) + size.to_bytes(2, "big")
    return bytes((0x81, mask | 127)) + size.to_bytes(8, "big")


_SMALL_HEADERS = tuple(text_frame_header(size) for size in range(126))


class MediaListener(WSListener):
    """One carrier WebSocket connection."""

    def __init__(self, session: CarrierSession, link: PicowsLink) -> None:
        self.session = session
        self.link = link
        self._parts: list[bytes] = []
        self._type: Any = None
        self._receive_text = session.receive_text

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.link.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        mtype = frame.msg_type
        if mtype is _TEXT and frame.fin and not self._parts:  # the hot path
            self._receive_text(frame.get_payload_as_bytes())
        elif mtype is _BINARY and frame.fin and not self._parts:
            self.session.receive_bytes(frame.get_payload_as_bytes())
        elif mtype is _TEXT or mtype is _BINARY or mtype is _CONTINUATION:
            self._fragment(frame)
        elif mtype is _CLOSE:
            self.session.socket_closed()
            if not transport.is_close_frame_sent:
                transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()

    def _fragment(self, frame: WSFrame) -> None:
        if frame.msg_type is not _CONTINUATION:
            self._parts, self._type = [], frame.msg_type
        self._parts.append(frame.get_payload_as_bytes())
        if sum(len(p) for p in self._parts) > _MAX_MESSAGE:
            self._parts = []
            self.session.fail("protocol error", 1009, "message too big")
            return
        if frame.fin:
            data, self._parts = b"".join(self._parts), []
            if self._type is _TEXT:
                self.session.receive_text(data)
            else:
                self.session.receive_bytes(data)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.session.socket_closed()


def _path(request: WSUpgradeRequest) -> str:
    raw: bytes | str = request.path
    path = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return path.split("?", 1)[0]


def router(manager: CallManager, make_session: SessionFactory) -> Callable[[WSUpgradeRequest], Any]:
    def route(request: WSUpgradeRequest) -> Any:
        path = _path(request)
        if path in ("/healthz", "/readyz"):
            if path == "/healthz" or manager.accepting:
                response = WSUpgradeResponse.create_ok_response(b"ok")
            else:
                response = WSUpgradeResponse.create_error_response(503, b"not ready")
            return WSUpgradeResponseWithListener(response, None)
        carrier = path.rsplit("/", 1)[-1] if path.startswith("/stream/") else ""
        if carrier not in CODECS:
            return None  # 404
        if not manager.accepting:
            reason = manager.refusal() or "busy"
            metrics.REFUSED.labels(reason).inc()
            return WSUpgradeResponseWithListener(
                WSUpgradeResponse.create_error_response(503, reason.encode()), None
            )
        link = PicowsLink()
        return MediaListener(make_session(carrier, link), link)

    return route


async def start_media_server(
    host: str, port: int, manager: CallManager, make_session: SessionFactory, *, reuse_port: bool
) -> asyncio.base_events.Server:
    return await ws_create_server(
        router(manager, make_session),
        host,
        port,
        reuse_port=reuse_port,
        websocket_handshake_timeout=10,
        enable_auto_pong=True,
        max_frame_size=_MAX_MESSAGE,
    )
