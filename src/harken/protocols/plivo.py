"""Plivo Audio Streams (``<Stream bidirectional="true">``).

Wire format (JSON text frames; unlike Twilio, ``sequenceNumber`` and ``chunk`` are numbers)::

    Plivo -> us                                                   harken event
    {"event":"start","sequenceNumber":1,                          StreamStarted
     "start":{"callId","streamId","accountId","tracks":["inbound"],
              "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000}},
     "extra_headers":"userId=12345;sessionId=abc-xyz"}
    {"event":"media","sequenceNumber":42,"streamId":"..",         MediaReceived
     "media":{"track":"inbound","timestamp":"1705312200000","chunk":41,"payload":"<base64>"},
     "extra_headers":".."}
    {"event":"dtmf","sequenceNumber":7,"streamId":"..",           DtmfReceived
     "dtmf":{"digit":"5","track":"inbound"}}
    {"event":"playedStream","sequenceNumber":9,"streamId":"..",   MarkEchoed
     "name":"cp-1"}
    {"event":"clearedAudio","sequenceNumber":10,"streamId":".."}  AudioCleared
    {"event":"stop","streamId":"..","reason":".."}                StreamStopped

    us -> Plivo
    {"event":"playAudio","streamId":"..",
     "media":{"contentType":"audio/x-mulaw","sampleRate":8000,"payload":"<base64>"}}
    {"event":"checkpoint","streamId":"..","name":"cp-1"}
    {"event":"clearAudio","streamId":".."}

Notes:

* Plivo sends no ``connected`` message; the socket opening is the connection.
* ``media.timestamp`` is Unix epoch milliseconds (not time since the stream started).
* Plivo's documented message list has no ``stop``: the stream normally ends by closing the
  socket (the server must treat a close as the end of the call). Its own SDKs accept a
  ``stop`` event, and so does this codec.
* ``playedStream`` is sent only when the audio queued before the checkpoint *played*; after
  ``clearAudio`` the pending checkpoints are dropped, not echoed, and Plivo confirms the flush
  with ``clearedAudio`` (-> :class:`AudioCleared` listing those checkpoints). One Plivo support
  article names the acknowledgement ``played``; that spelling is accepted too.
* ``extra_headers`` (the Stream XML ``extraHeaders``) becomes ``custom_parameters``: Plivo
  documents ``key=value`` pairs separated by ``;`` (XML reference: ``,``), values possibly
  percent-encoded; a JSON object string is also accepted.
* L16 (``audio/x-l16``) is taken to be little-endian, as Plivo's media servers send host byte
  order; Plivo does not state it.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar
from urllib.parse import unquote

import orjson

from harken.errors import RemoteProtocolError

from . import _wire
from ._json_stream import _COMMON_HANDLERS, JsonStreamCodec
from .events import AudioCleared, Encoding, MarkEchoed, StreamStarted

__all__ = ["PlivoCodec", "parse_extra_headers"]

_ENCODINGS: dict[str, Encoding] = {
    "audio/x-mulaw": "mulaw",
    "audio/x-alaw": "alaw",
    "audio/x-l16": "l16",
    "audio/l16": "l16",
}
_CONTENT_TYPES: dict[Encoding, str] = {
    "mulaw": "audio/x-mulaw",
    "alaw": "audio/x-alaw",
    "l16": "audio/x-l16",
    "l16be": "audio/x-l16",
}
_HEADER_SPLIT = re.compile(r"[;,]")


def parse_extra_headers(value: Any, where: str = "plivo start") -> dict[str, str]:
    """Plivo's ``extra_headers`` string as a dict (see the module notes)."""
    if value is None:
        return {}
    if type(value) is not str:
        raise RemoteProtocolError(f"{where}: 'extra_headers' is not a string")
    text = value.strip()
    if text.startswith("{"):
        try:
            decoded = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError(f"{where}: 'extra_headers' is not valid JSON") from exc
        return _wire.str_map(decoded, "extra_headers", where, coerce=True)
    headers: dict[str, str] = {}
    for item in _HEADER_SPLIT.split(text):
        key, sep, val = item.partition("=")
        key = key.strip()
        if sep and key:
            headers[unquote(key)] = unquote(val.strip())
    return headers


class PlivoCodec(JsonStreamCodec):
    """One Plivo audio stream."""

    name = "plivo"
    completion = "checkpoint"
    confirms_clear = True
    marks_echo_on_clear = False
    SID_KEY = "streamId"
    SEQ_KEY = "sequenceNumber"
    HANDLERS: ClassVar[dict[str, str]] = {
        **_COMMON_HANDLERS,
        "playedStream": "_on_played",
        "played": "_on_played",
        "clearedAudio": "_on_cleared",
    }

    def __init__(self) -> None:
        super().__init__("mulaw", 8000)

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        where = "plivo start"
        start = _wire.obj(msg, "start", where)
        stream_id = _wire.string(start, "streamId", where)
        envelope = msg.get("streamId")
        if envelope is not None and envelope != stream_id:
            raise RemoteProtocolError(f"{where}: envelope streamId does not match start")
        call_id = _wire.string(start, "callId", where)
        account_id = _wire.opt_string(start, "accountId", where) or ""
        tracks = _wire.str_list(start.get("tracks"), "tracks", where)
        params = parse_extra_headers(msg.get("extra_headers"), where)
        encoding, rate, channels, _ = _wire.media_format(
            start, "mediaFormat", _ENCODINGS, where, rate_key="sampleRate", default="mulaw"
        )
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=account_id,
            custom_parameters=params,
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            tracks=tracks,
        )

    def _on_played(self, msg: dict[str, Any]) -> MarkEchoed:
        self._require_streaming_event(msg, "playedStream")
        return self._mark_echoed(_wire.string(msg, "name", "plivo playedStream"))

    def _on_cleared(self, msg: dict[str, Any]) -> AudioCleared:
        self._require_streaming_event(msg, "clearedAudio")
        return self._audio_cleared()

    def _templates(self, quoted_sid: str) -> tuple[str, str, str, str, str]:
        content_type = _CONTENT_TYPES[self.output_encoding]
        return (
            '{"event":"playAudio","streamId":'
            + quoted_sid
            + ',"media":{"contentType":"'
            + content_type
            + '","sampleRate":'
            + str(self.output_sample_rate)
            + ',"payload":"',
            '"}}',
            '{"event":"checkpoint","streamId":' + quoted_sid + ',"name":',
            "}",
            '{"event":"clearAudio","streamId":' + quoted_sid + "}",
        )
