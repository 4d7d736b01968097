"""Vonage Voice API WebSockets (NCCO ``connect`` to a ``websocket`` endpoint).

Audio travels as **binary** frames of raw signed 16-bit little-endian mono PCM, 20 ms each,
at the rate of the NCCO ``content-type`` (``audio/l16;rate=8000|16000|24000``). Control travels
as JSON text frames, ``{"event": ...}`` from Vonage and ``{"action": ...}`` from us::

    Vonage -> us                                                  harken event
    {"event":"websocket:connected","content-type":"audio/l16;rate=16000",
     "<header>":"<value>", ...}                                   StreamStarted
    <binary frame: 640 bytes = 20 ms at 16 kHz>                   MediaReceived
    {"event":"websocket:dtmf","digit":"5","duration":260}         DtmfReceived
    {"event":"websocket:notify","payload":{"name":"utt-7"}}       MarkEchoed
    {"event":"websocket:cleared"}                                 AudioCleared

    us -> Vonage
    <binary frame: exactly 20 ms of PCM>
    {"action":"notify","payload":{"name":"utt-7"}}
    {"action":"clear"}

Notes:

* ``websocket:connected`` is both the connection and the start of the stream: it carries the
  audio format and, at its top level, every key/value of the NCCO endpoint ``headers`` (these
  become ``custom_parameters``; non-string values are kept as JSON text). Vonage sends no
  stream or call id on the socket; put the call UUID in ``headers`` if the server needs it.
* There is no ``stop`` message: the call ends when the socket closes
  (:meth:`~harken.protocols.base.CarrierCodec.connection_lost`).
* ``notify`` echoes any JSON payload; this codec sends ``{"name": <mark>}``. A
  ``websocket:notify`` without a string ``name`` was not built by harken and is returned as
  :class:`~harken.protocols.events.UnknownEvent`.
* Vonage acknowledges ``clear`` with ``websocket:cleared``. It does not document whether
  ``notify`` markers queued behind the flushed audio are echoed afterwards; if they are, they
  come back as ``MarkEchoed(cleared=True)``.
* The DTMF message is not in Vonage's WebSocket reference; the observed shape
  ``{"digit": "5", "duration": 260}`` is accepted, as are ``"dtmf": {"digit": ..}`` and
  ``"dtmf": "5"``.
* Vonage buffers at most 3072 outbound frames (about 60 s); the server's pacer must not run
  further ahead than that.
"""

from __future__ import annotations

from typing import Any

from harken.errors import LocalProtocolError, RemoteProtocolError

from . import _wire
from .base import IDLE, STOPPED, STREAMING, CarrierCodec
from .events import (
    DtmfReceived,
    Event,
    MediaReceived,
    StreamStarted,
    UnknownEvent,
)

__all__ = ["VonageCodec"]

_RATES = (8000, 16000, 24000)
_CONNECTED_KEYS = frozenset({"event", "content-type"})
_CLEAR = '{"action":"clear"}'


def parse_content_type(value: str, where: str = "vonage websocket:connected") -> int:
    """The sample rate of ``audio/l16;rate=N`` (8000 when no rate is given)."""
    media_type, *params = (part.strip() for part in value.split(";"))
    if media_type.lower() != "audio/l16":
        raise RemoteProtocolError(f"{where}: unsupported content-type {value!r:.60}")
    rate = 8000
    for param in params:
        key, _, val = param.partition("=")
        if key.strip().lower() == "rate":
            rate = _wire.uint(val.strip(), "rate", where)
    if rate not in _RATES:
        raise RemoteProtocolError(f"{where}: unsupported sample rate {rate}")
    return rate


class VonageCodec(CarrierCodec):
    """One Vonage WebSocket call leg (binary L16 audio, JSON control)."""

    name = "vonage"
    binary_audio = True
    completion = "notify"
    confirms_clear = True
    marks_echo_on_clear = None

    def __init__(self, sample_rate: int = 16000) -> None:
        if sample_rate not in _RATES:
            raise LocalProtocolError(f"vonage: sample rate must be one of {_RATES}")
        super().__init__("l16", sample_rate)
        self._chunks = 0
        self._samples = 0

    # ----------------------------------------------------------------------------------------
    # inbound

    def receive_text(self, text: str | bytes) -> Event:
        msg = _wire.load_object(text, "vonage")
        event = _wire.event_name(msg, "vonage")
        if self.state == STOPPED:
            raise self._not_streaming(event)
        if event == "websocket:connected":
            return self._on_connected(msg)
        if event == "websocket:notify":
            return self._on_notify(msg)
        if event == "websocket:cleared":
            if self.state != STREAMING:
                raise self._not_streaming(event)
            return self._audio_cleared()
        if event == "websocket:dtmf":
            return self._on_dtmf(msg)
        return UnknownEvent(event)

    def receive_bytes(self, data: bytes) -> MediaReceived:
        """One binary frame of caller audio."""
        if self.state != STREAMING:
            raise self._not_streaming("binary audio")
        size = len(data)
        if size == 0 or size & 1:
            raise RemoteProtocolError(f"vonage: audio frame of {size} bytes is not 16-bit PCM")
        self._chunks += 1
        timestamp = self._samples * 1000 // self.sample_rate
        self._samples += size >> 1
        return MediaReceived(bytes(data), timestamp, None, self._chunks, "inbound")

    def _on_connected(self, msg: dict[str, Any]) -> StreamStarted:
        where = "vonage websocket:connected"
        if self.state != IDLE:
            raise self._not_streaming("websocket:connected")
        rate = self.sample_rate
        content_type = _wire.opt_string(msg, "content-type", where)
        if content_type is not None:
            rate = parse_content_type(content_type, where)
        headers = {k: v for k, v in msg.items() if k not in _CONNECTED_KEYS}
        params = _wire.str_map(headers, "headers", where, coerce=True)
        self._started("", "")
        self.sample_rate = self.output_sample_rate = rate
        return StreamStarted(
            stream_id="",
            call_id="",
            account_id="",
            custom_parameters=params,
            encoding="l16",
            sample_rate=rate,
            tracks=("inbound",),
            extra={"content-type": content_type} if content_type else {},
        )

    def _on_notify(self, msg: dict[str, Any]) -> Event:
        where = "vonage websocket:notify"
        if self.state != STREAMING:
            raise self._not_streaming("websocket:notify")
        payload = _wire.obj(msg, "payload", where)
        name = payload.get("name")
        if type(name) is not str or not name:
            return UnknownEvent("websocket:notify")
        return self._mark_echoed(name)

    def _on_dtmf(self, msg: dict[str, Any]) -> DtmfReceived:
        where = "vonage websocket:dtmf"
        if self.state != STREAMING:
            raise self._not_streaming("websocket:dtmf")
        source = msg
        digit = msg.get("digit")
        if digit is None:
            nested = msg.get("dtmf")
            if type(nested) is dict:
                source, digit = nested, nested.get("digit")
            else:
                digit = nested
        return DtmfReceived(
            _wire.dtmf_digit(digit, where), _wire.opt_uint(source, "duration", where)
        )

    # ----------------------------------------------------------------------------------------
    # outbound

    def media(self, payload: bytes) -> bytes:
        """A binary frame: exactly 20 ms of 16-bit little-endian PCM (``frame_bytes``)."""
        if self.state != STREAMING:
            raise self._cannot_send("media")
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise LocalProtocolError("vonage media: payload must be bytes")
        frame = bytes(payload)
        if len(frame) != self.frame_bytes:
            raise LocalProtocolError(
                f"vonage media: frames must hold exactly 20 ms ({self.frame_bytes} bytes at "
                f"{self.output_sample_rate} Hz), not {len(frame)} bytes"
            )
        return frame

    def _build_mark(self, quoted_name: str) -> str:
        return '{"action":"notify","payload":{"name":' + quoted_name + "}}"

    def _build_clear(self) -> str:
        return _CLEAR
