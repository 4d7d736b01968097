"""Telnyx Media Streaming (Call Control ``stream_url``, bidirectional RTP mode).

Wire format (JSON text frames; ``sequence_number``, ``chunk`` and ``timestamp`` are strings)::

    Telnyx -> us                                                  harken event
    {"event":"connected","version":"1.0.0"}                       Connected
    {"event":"start","sequence_number":"1","stream_id":"32DE..",  StreamStarted
     "start":{"user_id","call_control_id","call_session_id","from","to","tags":[..],
              "client_state","custom_parameters":{..},
              "media_format":{"encoding":"PCMU","sample_rate":8000,"channels":1}}}
    {"event":"media","sequence_number":"4","stream_id":"32DE..",  MediaReceived
     "media":{"track":"inbound","chunk":"2","timestamp":"5","payload":"<base64 RTP payload>"}}
    {"event":"dtmf","stream_id","occurred_at","sequence_number",  DtmfReceived
     "dtmf":{"digit":"1"}}
    {"event":"mark","stream_id","sequence_number",                MarkEchoed
     "mark":{"name":"some_mark_name"}}
    {"event":"error","stream_id","sequence_number",               CarrierError
     "payload"|"error":{"code":100003,"title":"malformed_frame","detail":".."}}
    {"event":"stop","sequence_number","stream_id",                StreamStopped
     "stop":{"user_id","call_control_id"}}

    us -> Telnyx (``stream_bidirectional_mode: "rtp"``)
    {"event":"media","media":{"payload":"<base64 RTP payload, 20 ms .. 30 s>"}}
    {"event":"mark","mark":{"name":"utt-7"}}
    {"event":"clear"}

Notes:

* ``media_format.encoding`` is ``PCMU``/``PCMA``/``L16`` (older docs: ``audio/x-mulaw``).
  Payloads are RTP payloads without headers, so ``L16`` is big-endian: encoding ``"l16be"``.
  G722, OPUS and AMR-WB are valid Telnyx codecs that harken does not decode; a stream using
  them is refused with :class:`~harken.errors.RemoteProtocolError`.
* The inbound encoding is whatever the PSTN leg negotiated; the outbound one is the
  ``stream_bidirectional_codec`` the application requested, which may differ. Pass it to
  :class:`TelnyxCodec` (``bidirectional_codec="PCMU"``) so :meth:`~TelnyxCodec.media` checks
  the right frame sizes; by default outbound audio is assumed to match inbound.
* Telnyx documents that media frames may arrive out of order (``chunk``/``sequence_number``
  order them); the codec counts gaps and reorders but never reorders audio itself.
* A mark is echoed when the audio before it finished playing, immediately if nothing is
  queued, and for every queued mark when ``clear`` is processed. There is no clear
  acknowledgement, so flushed marks are told apart only by ``MarkEchoed.cleared``.
* The ``media`` (mp3) playback mode is not supported: outbound payloads are raw RTP audio.
"""

from __future__ import annotations

from typing import Any, ClassVar

from harken.errors import LocalProtocolError, RemoteProtocolError

from . import _wire
from ._json_stream import _COMMON_HANDLERS, JsonStreamCodec
from .events import CarrierError, Encoding, StreamStarted

__all__ = ["TelnyxCodec"]

_ENCODINGS: dict[str, Encoding] = {
    "pcmu": "mulaw",
    "audio/x-mulaw": "mulaw",
    "pcma": "alaw",
    "audio/x-alaw": "alaw",
    "l16": "l16be",
    "audio/l16": "l16be",
}
_START_KEYS = frozenset(
    {
        "call_control_id",
        "user_id",
        "from",
        "to",
        "custom_parameters",
        "media_format",
        "stream_id",
        "tags",
    }
)
#: Telnyx accepts 20 ms to 30 s of audio per outbound media message.
_MAX_CHUNK_MS = 30_000


def _custom_parameters(value: Any, where: str) -> dict[str, str]:
    """``custom_parameters`` as the start frame documents it (an object), or in the
    ``[{"name": .., "value": ..}]`` form the Call Control request uses."""
    if type(value) is not list:
        return _wire.str_map(value, "custom_parameters", where)
    params: dict[str, str] = {}
    for item in value:
        if type(item) is not dict:
            raise RemoteProtocolError(f"{where}: 'custom_parameters' items must be objects")
        params[_wire.string(item, "name", where)] = _wire.string(
            item, "value", where, allow_empty=True
        )
    return params


class TelnyxCodec(JsonStreamCodec):
    """One Telnyx media stream."""

    name = "telnyx"
    completion = "mark"
    confirms_clear = False
    marks_echo_on_clear = True
    SID_KEY = "stream_id"
    SEQ_KEY = "sequence_number"
    HANDLERS: ClassVar[dict[str, str]] = {**_COMMON_HANDLERS, "error": "_on_error"}
    SIZE_RULES = True

    def __init__(
        self,
        bidirectional_codec: str | None = None,
        bidirectional_sample_rate: int | None = None,
    ) -> None:
        super().__init__("mulaw", 8000)
        self._out_encoding: Encoding | None = None
        if bidirectional_codec is not None:
            found = _ENCODINGS.get(bidirectional_codec.lower())
            if found is None:
                raise LocalProtocolError(
                    f"telnyx: unsupported bidirectional codec {bidirectional_codec!r}"
                )
            self._out_encoding = self.output_encoding = found
        self._out_rate = bidirectional_sample_rate
        if bidirectional_sample_rate is not None:
            self.output_sample_rate = bidirectional_sample_rate

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        where = "telnyx start"
        start = _wire.obj(msg, "start", where)
        stream_id = msg.get("stream_id", start.get("stream_id"))
        if type(stream_id) is not str or not stream_id:
            raise RemoteProtocolError(f"{where}: 'stream_id' is missing or not a string")
        call_control_id = _wire.string(start, "call_control_id", where)
        user_id = _wire.opt_string(start, "user_id", where) or ""
        from_number = _wire.opt_string(start, "from", where)
        to_number = _wire.opt_string(start, "to", where)
        params = _custom_parameters(start.get("custom_parameters"), where)
        tags = _wire.str_list(start.get("tags"), "tags", where)
        extra = _wire.scalar_extra(start, _START_KEYS)
        if tags:
            extra["tags"] = ",".join(tags)
        encoding, rate, channels, _ = _wire.media_format(
            start, "media_format", _ENCODINGS, where, rate_key="sample_rate", default="mulaw"
        )
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_control_id,
            account_id=user_id,
            custom_parameters=params,
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            from_number=from_number,
            to_number=to_number,
            extra=extra,
        )

    def _set_output_format(self, started: StreamStarted) -> None:
        self.output_encoding = self._out_encoding or started.encoding
        if self._out_rate is not None:
            self.output_sample_rate = self._out_rate
        elif self._out_encoding in (None, started.encoding):
            self.output_sample_rate = started.sample_rate
        else:  # a different codec requested: G.711 is 8 kHz, Telnyx L16 is 16 kHz
            self.output_sample_rate = 16000 if self._out_encoding == "l16be" else 8000

    def _on_error(self, msg: dict[str, Any]) -> CarrierError:
        where = "telnyx error"
        self._check_stream_id(msg.get(self.SID_KEY), "error")
        self._note_sequence(_wire.opt_uint(msg, self.SEQ_KEY, where))
        body = _wire.opt_obj(msg, "payload", where) or _wire.opt_obj(msg, "error", where)
        if body is None:
            raise RemoteProtocolError(f"{where}: 'payload' is missing or not an object")
        code = body.get("code")
        if type(code) is int:
            code = str(code)
        elif type(code) is not str:
            raise RemoteProtocolError(f"{where}: 'code' is missing or not a string or integer")
        title = _wire.opt_string(body, "title", where) or ""
        detail = _wire.opt_string(body, "detail", where) or ""
        message = f"{title}: {detail}" if title and detail else title or detail
        return CarrierError(code, message)

    def _check_payload_size(self, size: int) -> None:
        super()._check_payload_size(size)
        unit = self.frame_bytes  # 20 ms
        if size < unit or size > unit * (_MAX_CHUNK_MS // 20):
            raise LocalProtocolError(
                f"telnyx media: {size} bytes is outside 20 ms..30 s ({unit}..{unit * 1500} "
                f"bytes of {self.output_encoding} at {self.output_sample_rate} Hz)"
            )

    def _templates(self, quoted_sid: str) -> tuple[str, str, str, str, str]:
        return (
            '{"event":"media","media":{"payload":"',
            '"}}',
            '{"event":"mark","mark":{"name":',
            "}}",
            '{"event":"clear"}',
        )
