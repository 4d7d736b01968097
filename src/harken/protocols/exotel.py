"""Exotel AgentStream: the Voicebot applet (bidirectional) and Stream applet (one-way).

Wire format (JSON text frames; snake_case keys, numbers as strings)::

    Exotel -> us                                                  harken event
    {"event":"connected"}                                         Connected
    {"event":"start","sequence_number":"1","stream_sid":"..",     StreamStarted
     "start":{"stream_sid","call_sid","account_sid","from","to",
              "custom_parameters":{"key1":"value1"},
              "media_format":{"encoding":"audio/x-raw","sample_rate":"8000","bit_rate":"16"}}}
    {"event":"media","sequence_number":"3","stream_sid":"..",     MediaReceived
     "media":{"chunk":"2","timestamp":"200","payload":"<base64 16-bit PCM>"}}
    {"event":"dtmf","sequence_number":"7","stream_sid":"..",      DtmfReceived
     "dtmf":{"digit":"5","duration":"100"}}
    {"event":"mark","sequence_number":"15","stream_sid":"..",     MarkEchoed
     "mark":{"name":".."}}
    {"event":"stop","sequence_number":"..","stream_sid":"..",     StreamStopped
     "stop":{"call_sid","account_sid","reason":"callended"}}

    us -> Exotel (Voicebot applet only)
    {"event":"media","stream_sid":"..","media":{"payload":"<base64 16-bit PCM>"}}
    {"event":"mark","stream_sid":"..","mark":{"name":".."}}
    {"event":"clear","stream_sid":".."}

Notes:

* ``audio/x-raw`` is raw/slin: signed 16-bit little-endian mono PCM at 8000 Hz (the default),
  16000 or 24000 Hz (chosen with ``?sample-rate=`` on the applet URL). Exotel sends ~100 ms
  chunks. Outbound PCM chunks must be a multiple of 320 bytes and at most 100 KB; Exotel
  recommends at least 3.2 KB (100 ms) because smaller chunks risk gaps on jittery networks.
  Newer CPaaS streams may use ``audio/x-mulaw``, which is accepted too.
* A mark is echoed when the audio sent before it has finished playing. Exotel does not
  document what happens to pending marks on ``clear`` nor acknowledge ``clear``; the codec still
  flags marks echoed after a clear as ``cleared``.
"""

from __future__ import annotations

from typing import Any

from harken.errors import LocalProtocolError, RemoteProtocolError

from . import _wire
from ._json_stream import JsonStreamCodec
from .events import Encoding, StreamStarted

__all__ = ["ExotelCodec"]

_ENCODINGS: dict[str, Encoding] = {
    "audio/x-raw": "l16",
    "raw": "l16",
    "slin": "l16",
    "audio/l16": "l16",
    "audio/x-l16": "l16",
    "audio/x-mulaw": "mulaw",
    "audio/x-alaw": "alaw",
}
_START_KEYS = frozenset(
    {"stream_sid", "call_sid", "account_sid", "from", "to", "custom_parameters", "media_format"}
)
#: Outbound PCM chunks: a multiple of 320 bytes, at most 100 KB.
CHUNK_MULTIPLE = 320
MAX_CHUNK_BYTES = 100_000


class ExotelCodec(JsonStreamCodec):
    """One Exotel Voicebot/Stream applet stream."""

    name = "exotel"
    completion = "mark"
    confirms_clear = False
    marks_echo_on_clear = None
    SID_KEY = "stream_sid"
    SEQ_KEY = "sequence_number"
    SIZE_RULES = True

    def __init__(self) -> None:
        super().__init__("l16", 8000)

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        where = "exotel start"
        start = _wire.obj(msg, "start", where)
        stream_sid = start.get("stream_sid", msg.get("stream_sid"))
        if type(stream_sid) is not str or not stream_sid:
            raise RemoteProtocolError(f"{where}: 'stream_sid' is missing or not a string")
        envelope = msg.get("stream_sid")
        if envelope is not None and envelope != stream_sid:
            raise RemoteProtocolError(f"{where}: envelope stream_sid does not match start")
        call_sid = _wire.string(start, "call_sid", where)
        account_sid = _wire.opt_string(start, "account_sid", where) or ""
        params = _wire.str_map(
            start.get("custom_parameters"), "custom_parameters", where, coerce=True
        )
        encoding, rate, channels, fmt = _wire.media_format(
            start, "media_format", _ENCODINGS, where, rate_key="sample_rate", default="l16"
        )
        bits = _wire.opt_uint(fmt, "bit_rate", where)
        if bits is not None and encoding == "l16" and bits != 16:
            raise RemoteProtocolError(f"{where}: unsupported bit_rate {bits} for raw PCM")
        return StreamStarted(
            stream_id=stream_sid,
            call_id=call_sid,
            account_id=account_sid,
            custom_parameters=params,
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            from_number=_wire.opt_string(start, "from", where),
            to_number=_wire.opt_string(start, "to", where),
            extra=_wire.scalar_extra(start, _START_KEYS),
        )

    def _check_payload_size(self, size: int) -> None:
        super()._check_payload_size(size)
        if self.output_encoding == "l16" and (size % CHUNK_MULTIPLE or size > MAX_CHUNK_BYTES):
            raise LocalProtocolError(
                f"exotel media: PCM chunks must be a multiple of {CHUNK_MULTIPLE} bytes and at "
                f"most {MAX_CHUNK_BYTES} bytes, not {size}"
            )

    def _templates(self, quoted_sid: str) -> tuple[str, str, str, str, str]:
        return (
            '{"event":"media","stream_sid":' + quoted_sid + ',"media":{"payload":"',
            '"}}',
            '{"event":"mark","stream_sid":' + quoted_sid + ',"mark":{"name":',
            "}}",
            '{"event":"clear","stream_sid":' + quoted_sid + "}",
        )
