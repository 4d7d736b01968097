"""PicowsLink over a real picows connection: several text messages in one write arrive as
separate WebSocket messages, whatever their size."""

from __future__ import annotations

import asyncio

from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect, ws_create_server

from harken.server.media import PicowsLink


class _Client(WSListener):
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.got = asyncio.Event()

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type is WSMsgType.TEXT:
            self.texts.append(frame.get_payload_as_utf8_text())
            if len(self.texts) == 6:
                self.got.set()


class _Server(WSListener):
    def __init__(self, link: PicowsLink, ready: asyncio.Event) -> None:
        self.link, self.ready = link, ready

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.link.transport = transport
        self.ready.set()


async def test_send_texts_is_one_write_of_separate_messages() -> None:
    link, ready = PicowsLink(), asyncio.Event()
    server = await ws_create_server(lambda _: _Server(link, ready), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport, client = await ws_connect(_Client, f"ws://127.0.0.1:{port}/")
    try:
        assert isinstance(client, _Client)
        await asyncio.wait_for(ready.wait(), 5)
        texts = ["a" * 125, "é" * 63, "b" * 126, "c" * 70_000, ""]  # every header size
        link.send_text("first")
        link.send_texts(texts[:4])
        link.send_text(texts[4])
        await asyncio.wait_for(client.got.wait(), 5)
        assert client.texts == ["first", *texts]
        link.close()
        link.send_texts(["after close"])  # ignored, as send_text is
    finally:
        transport.disconnect()
        server.close()
