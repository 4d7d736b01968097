"""The WebSocket seam of the carrier emulators (test and bench tools only).

The emulator needs three operations; aiohttp provides them here. A denser client (picows) for
the load generator only has to implement :class:`WsTransport` and a :data:`Connector`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import aiohttp


class WsTransport(Protocol):
    """The few WebSocket operations the emulator needs."""

    async def send_text(self, text: str) -> None:
        """Send one text frame; raise ConnectionError when the socket is gone."""

    async def recv(self) -> str | bytes | None:
        """Next data frame, or None once the connection is closing or closed."""

    async def close(self) -> None:
        """Close (idempotent)."""


Connector = Callable[[str, Mapping[str, str]], Awaitable[WsTransport]]


class _AiohttpTransport:
    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, session: aiohttp.ClientSession | None
    ) -> None:
        self._ws = ws
        self._own_session = session

    async def send_text(self, text: str) -> None:
        if self._ws.closed:
            raise ConnectionResetError("websocket closed")
        try:
            await self._ws.send_str(text)
        except (aiohttp.ClientError, RuntimeError) as exc:
            raise ConnectionResetError(str(exc)) from exc

    async def recv(self) -> str | bytes | None:
        msg = await self._ws.receive()
        if msg.type is aiohttp.WSMsgType.TEXT:
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            return bytes(msg.data)
        return None  # CLOSE, CLOSING, CLOSED, ERROR

    async def close(self) -> None:
        try:
            await self._ws.close()
        finally:
            if self._own_session is not None:
                await self._own_session.close()


def aiohttp_connector(session: aiohttp.ClientSession | None = None) -> Connector:
    """A connector over aiohttp; pass a shared ``session`` to run many emulators on one."""

    async def connect(url: str, headers: Mapping[str, str]) -> WsTransport:
        client = session if session is not None else aiohttp.ClientSession()
        timeout = aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
        try:
            ws = await client.ws_connect(url, headers=dict(headers), timeout=timeout)
        except BaseException:
            if session is None:
                await client.close()
            raise
        return _AiohttpTransport(ws, client if session is None else None)

    return connect
