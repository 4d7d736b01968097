"""Shared machinery for the carriers that speak Twilio-shaped JSON (private).

Twilio, Telnyx, Plivo and Exotel all send ``{"event": ...}`` text frames with a stream id and a
sequence number on (almost) every message, ``media`` frames holding base64 audio, and accept
base64 audio, marks and a clear command back. They differ in key spelling (``streamSid`` /
``stream_id`` / ``streamId`` / ``stream_sid``), in the shape of ``start`` and in the names of the
outbound commands. :class:`JsonStreamCodec` implements the common state machine and hot path; a
carrier module supplies the key names, a ``start`` parser, extra handlers and outbound
templates.
"""

from __future__ import annotations

import abc
import re
from binascii import a2b_base64, b2a_base64
from collections.abc import Callable
from typing import Any, ClassVar

import orjson

from harken.errors import LocalProtocolError, RemoteProtocolError

from . import _wire
from .base import IDLE, STOPPED, STREAMING, CarrierCodec
from .events import (
    Connected,
    DtmfReceived,
    Encoding,
    Event,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_uint = _wire.uint
#: ``MediaReceived`` is a NamedTuple; building it through ``tuple.__new__`` skips the generated
#: Python-level ``__new__`` (about 0.2 us per message).
_new_tuple = tuple.__new__


def _no_match(data: bytes) -> None:
    return None


#: Event name -> handler method name, shared by every JSON carrier.
_COMMON_HANDLERS = {
    "connected": "_on_connected",
    "start": "_on_start",
    "dtmf": "_on_dtmf",
    "mark": "_on_mark",
    "stop": "_on_stop",
}


class JsonStreamCodec(CarrierCodec):
    """A carrier whose every message is a JSON object tagged by ``"event"``."""

    #: Key of the stream id on every message, and of the sequence number.
    SID_KEY: ClassVar[str]
    SEQ_KEY: ClassVar[str]
    #: Event name -> name of the method handling it (``media`` is always handled inline).
    HANDLERS: ClassVar[dict[str, str]] = _COMMON_HANDLERS
    #: The carrier constrains the size of outbound audio chunks (see ``_check_payload_size``).
    SIZE_RULES: ClassVar[bool] = False
    #: The fast path (see :meth:`media_audio`): everything of the carrier's usual media message
    #: before the base64 payload, with the sequence number as group 1 (and, for
    #: :meth:`receive_text`, the track, chunk and timestamp as groups 2-4); None: no fast path.
    MEDIA_HEAD: ClassVar[re.Pattern[bytes] | None] = None

    def __init__(self, encoding: Encoding = "mulaw", sample_rate: int = 8000) -> None:
        super().__init__(encoding, sample_rate)
        self._connected = False
        self._media_prefix: str | None = None
        self._media_suffix = '"}}'
        self._mark_prefix = ""
        self._mark_suffix = "}}"
        self._clear_message = ""
        self._check_size = False
        self._in_16bit = False
        #: what follows the payload in the usual media message of this stream (fast path)
        self._media_tail: bytes | None = None
        self._head_match: Callable[[bytes], re.Match[bytes] | None] = _no_match
        self._mark_match: Callable[[bytes], re.Match[bytes] | None] = _no_match

    # ----------------------------------------------------------------------------------------
    # carrier hooks

    @abc.abstractmethod
    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        """Validate a ``start`` message and return the event (state is updated by the caller)."""

    @abc.abstractmethod
    def _templates(self, quoted_sid: str) -> tuple[str, str, str, str, str]:
        """Outbound templates for a started stream: media prefix and suffix (around the
        base64 payload), mark prefix and suffix (around the JSON-quoted name), clear message."""

    def _inbound_media_tail(self, quoted_sid: str) -> bytes:
        """What follows the base64 payload in the usual inbound media message (with
        :attr:`MEDIA_HEAD`): the rest of the message, stream id included."""
        raise NotImplementedError

    def _mark_echo_pattern(self, quoted_sid: str) -> re.Pattern[bytes] | None:
        """The carrier's usual mark echo on this stream, whole (fast path; None: none): the
        sequence number as group 1, the name as group 2, restricted to characters a JSON string
        holds unescaped (printable ASCII but the quote and the backslash)."""
        return None

    def _check_payload_size(self, size: int) -> None:
        """Reject outbound audio the carrier would mis-play (default: whole 16-bit samples)."""
        if size & 1 and self.output_encoding in ("l16", "l16be"):
            raise LocalProtocolError(f"{self.name} media: 16-bit audio of odd length {size}")

    # ----------------------------------------------------------------------------------------
    # inbound

    def receive_text(self, text: str | bytes) -> Event:
        if type(text) is bytes:
            audio = self.media_audio(text)
            if audio is not None:
                head = self._head_match(text)
                assert head is not None
                seq, track, chunk, timestamp = head.groups()
                return _new_tuple(
                    MediaReceived, (audio, int(timestamp), int(seq), int(chunk), track.decode())
                )
        try:
            msg = _loads(text)
        except _JSONDecodeError as exc:
            raise RemoteProtocolError(f"{self.name}: message is not valid JSON: {exc}") from exc
        if type(msg) is not dict:
            raise RemoteProtocolError(f"{self.name}: message is not a JSON object")
        event = msg.get("event")
        if event == "media":  # the hot path, checked first
            return self._on_media(msg)
        if type(event) is not str:
            raise RemoteProtocolError(f"{self.name}: 'event' is missing or not a string")
        if self.state == STOPPED:
            raise self._not_streaming(event)
        handler = self.HANDLERS.get(event)
        if handler is None:
            return UnknownEvent(event)
        result: Event = getattr(self, handler)(msg)
        return result

    def media_audio(self, data: bytes) -> bytes | None:
        """The audio of ``data`` if it is a media message in the carrier's usual form (the
        hot path: no JSON parse, no event object); None for anything else, which the caller
        passes to :meth:`receive_text`. Accepting a message here has exactly the effects
        :meth:`receive_text` would have (sequence numbers are tracked).

        A strict byte-level reading: :attr:`MEDIA_HEAD`, a payload of base64 characters only
        (so the JSON string holds no escape and no quote) and the stream's own tail, exactly.
        Whatever it does not accept (other key orders, spacing, another stream id, bad
        base64, ...) returns None *before* any state changes; the full parser then accepts it
        or raises its precise error."""
        tail = self._media_tail  # None unless streaming with a fast path
        if tail is None or not data.endswith(tail):
            return None
        head = self._head_match(data)
        if head is None:
            return None
        start, stop = head.end(), len(data) - len(tail)
        if stop <= start:
            return None
        try:
            audio = a2b_base64(data[start:stop], strict_mode=True)
        except ValueError:
            return None
        if len(audio) & 1 and self._in_16bit:
            return None
        seq = int(head.group(1))  # at most 18 digits (the pattern)
        last = self.last_sequence
        if last is not None and seq == last + 1:
            self.last_sequence = seq
        else:
            self._note_sequence(seq)
        return audio

    def mark_echo(self, data: bytes) -> tuple[str, bool] | None:
        """A mark echo in the carrier's usual form, read with one per-stream regex (see
        :meth:`_mark_echo_pattern`; anything else, None, nothing changed): the effects and the
        answer of :meth:`receive_text` without the JSON parse and the event object."""
        found = self._mark_match(data)  # matches only while streaming
        if found is None:
            return None
        self._note_sequence(int(found.group(1)))  # at most 18 digits (the pattern)
        name = found.group(2).decode("ascii")
        return name, self._mark_cleared(name)

    def _on_media(self, msg: dict[str, Any]) -> MediaReceived:
        if self.state != STREAMING:
            raise self._not_streaming("media")
        sid = msg.get(self.SID_KEY)
        if sid is not None and sid != self.stream_id:
            self._check_stream_id(sid, "media")
        media = msg.get("media")
        if type(media) is not dict:
            raise RemoteProtocolError(f"{self.name} media: 'media' is missing or not an object")
        payload = media.get("payload")
        if type(payload) is not str or not payload:
            raise RemoteProtocolError(
                f"{self.name} media: 'payload' is missing, empty or not a string"
            )
        try:
            audio = a2b_base64(payload, strict_mode=True)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"{self.name} media: 'payload' is not valid base64: {exc}"
            ) from exc
        if len(audio) & 1 and self._in_16bit:
            raise RemoteProtocolError(f"{self.name} media: 16-bit audio of odd length")
        # Numbers arrive as decimal strings; the inline test is the fast path, _uint handles
        # JSON numbers and rejects everything else.
        seq = msg.get(self.SEQ_KEY)
        if seq is not None:
            if type(seq) is str and len(seq) < 19 and seq.isascii() and seq.isdigit():
                seq = int(seq)
            else:
                seq = _uint(seq, self.SEQ_KEY, f"{self.name} media")
            last = self.last_sequence
            if last is not None and seq == last + 1:
                self.last_sequence = seq
            else:
                self._note_sequence(seq)
        chunk = media.get("chunk")
        if chunk is not None:
            if type(chunk) is str and len(chunk) < 19 and chunk.isascii() and chunk.isdigit():
                chunk = int(chunk)
            else:
                chunk = _uint(chunk, "chunk", f"{self.name} media")
        timestamp = media.get("timestamp")
        if timestamp is not None:
            if (
                type(timestamp) is str
                and len(timestamp) < 19
                and timestamp.isascii()
                and timestamp.isdigit()
            ):
                timestamp = int(timestamp)
            else:
                timestamp = _uint(timestamp, "timestamp", f"{self.name} media")
        track = media.get("track", "inbound")
        if type(track) is not str:
            raise RemoteProtocolError(f"{self.name} media: 'track' is not a string")
        return _new_tuple(MediaReceived, (audio, timestamp, seq, chunk, track))

    def _on_connected(self, msg: dict[str, Any]) -> Connected:
        where = f"{self.name} connected"
        if self.state != IDLE or self._connected:
            raise self._not_streaming("connected")
        self._connected = True
        protocol = _wire.opt_string(msg, "protocol", where) or ""
        version = _wire.opt_string(msg, "version", where) or ""
        return Connected(protocol, version)

    def _on_start(self, msg: dict[str, Any]) -> StreamStarted:
        self._require_idle("start")
        started = self._parse_start(msg)
        self._note_sequence(_wire.opt_uint(msg, self.SEQ_KEY, f"{self.name} start"))
        self._started(started.stream_id, started.call_id)
        self.encoding = started.encoding
        self.sample_rate = started.sample_rate
        self.channels = started.channels
        self._in_16bit = started.encoding in ("l16", "l16be")
        self._set_output_format(started)
        self._check_size = self.SIZE_RULES or self.output_encoding in ("l16", "l16be")
        quoted_sid = _wire.dumps(started.stream_id)
        (
            self._media_prefix,
            self._media_suffix,
            self._mark_prefix,
            self._mark_suffix,
            self._clear_message,
        ) = self._templates(quoted_sid)
        if self.MEDIA_HEAD is not None:
            self._head_match = self.MEDIA_HEAD.match
            self._media_tail = self._inbound_media_tail(quoted_sid)
        mark = self._mark_echo_pattern(quoted_sid)
        if mark is not None:
            self._mark_match = mark.fullmatch
        return started

    def _set_output_format(self, started: StreamStarted) -> None:
        """By default we answer in the format the carrier streams to us."""
        self.output_encoding = started.encoding
        self.output_sample_rate = started.sample_rate

    def _on_dtmf(self, msg: dict[str, Any]) -> DtmfReceived:
        where = f"{self.name} dtmf"
        self._require_streaming_event(msg, "dtmf")
        dtmf = _wire.obj(msg, "dtmf", where)
        _wire.opt_string(dtmf, "track", where)
        digit = _wire.dtmf_digit(dtmf.get("digit"), where)
        return DtmfReceived(digit, _wire.opt_uint(dtmf, "duration", where))

    def _on_mark(self, msg: dict[str, Any]) -> Event:
        # a few per second per call (one per mark interval): checks inline, messages built only
        # on failure
        self._require_streaming_event(msg, "mark")
        mark = msg.get("mark")
        name = mark.get("name") if type(mark) is dict else None
        if type(name) is str and name:
            return self._mark_echoed(name)
        where = f"{self.name} mark"
        return self._mark_echoed(_wire.string(_wire.obj(msg, "mark", where), "name", where))

    def _on_stop(self, msg: dict[str, Any]) -> StreamStopped:
        where = f"{self.name} stop"
        self._check_stream_id(msg.get(self.SID_KEY), "stop")
        self._note_sequence(_wire.opt_uint(msg, self.SEQ_KEY, where))
        stop = _wire.opt_obj(msg, "stop", where)
        reason = _wire.opt_string(msg, "reason", where)
        if stop is not None:
            reason = _wire.opt_string(stop, "reason", where) or reason
        self._stopped()
        return StreamStopped(reason or "stop")

    def _stopped(self) -> None:
        super()._stopped()
        self._media_prefix = None
        self._media_tail = None
        self._mark_match = _no_match

    def _require_streaming_event(self, msg: dict[str, Any], event: str) -> None:
        if self.state != STREAMING:
            raise self._not_streaming(event)
        sid = msg.get(self.SID_KEY)
        if sid is not None and sid != self.stream_id:
            self._check_stream_id(sid, event)
        seq = msg.get(self.SEQ_KEY)
        if seq is not None:
            if type(seq) is str and len(seq) < 19 and seq.isascii() and seq.isdigit():
                self._note_sequence(int(seq))
            else:
                self._note_sequence(_uint(seq, self.SEQ_KEY, f"{self.name} {event}"))

    # ----------------------------------------------------------------------------------------
    # outbound

    def media(self, payload: bytes) -> str:
        """The media message carrying ``payload`` (raw audio in ``output_encoding``)."""
        prefix = self._media_prefix
        if prefix is None:
            raise self._cannot_send("media")
        try:
            encoded = b2a_base64(payload, newline=False)
        except TypeError as exc:
            raise LocalProtocolError(f"{self.name} media: payload must be bytes: {exc}") from exc
        if not encoded:
            raise LocalProtocolError(f"{self.name} media: payload is empty")
        if self._check_size:
            self._check_payload_size(len(payload))
        return prefix + encoded.decode("ascii") + self._media_suffix

    def _build_mark(self, quoted_name: str) -> str:
        return self._mark_prefix + quoted_name + self._mark_suffix

    def _build_clear(self) -> str:
        return self._clear_message
