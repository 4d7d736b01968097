"""Twilio Media Streams: codec, webhook signatures and the ``<Connect><Stream>`` TwiML.

Wire format (JSON text frames; numbers inside ``media`` and ``sequenceNumber`` are *strings*)::

    Twilio -> us                                          harken event
    {"event":"connected","protocol":"Call","version":"1.0.0"}     Connected
    {"event":"start","sequenceNumber":"1","streamSid":"MZ..",     StreamStarted
     "start":{"streamSid","accountSid","callSid","tracks":[..],
              "customParameters":{..},
              "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}
    {"event":"media","sequenceNumber":"3","streamSid":"MZ..",     MediaReceived
     "media":{"track":"inbound","chunk":"1","timestamp":"5","payload":"<base64>"}}
    {"event":"dtmf","streamSid":"MZ..","sequenceNumber":"5",      DtmfReceived
     "dtmf":{"track":"inbound_track","digit":"1"}}
    {"event":"mark","sequenceNumber":"4","streamSid":"MZ..",      MarkEchoed
     "mark":{"name":"my label"}}
    {"event":"stop","sequenceNumber":"5","streamSid":"MZ..",      StreamStopped
     "stop":{"accountSid","callSid"}}

    us -> Twilio (bidirectional streams, ``<Connect><Stream>``)
    {"event":"media","streamSid":"MZ..","media":{"payload":"<base64 mu-law 8 kHz>"}}
    {"event":"mark","streamSid":"MZ..","mark":{"name":"utt-7"}}
    {"event":"clear","streamSid":"MZ.."}

``clear`` empties Twilio's buffer *and* makes Twilio send back every pending mark; the echo looks
exactly like the echo of a played mark, so the codec tells them apart by remembering which marks
were pending when it built ``clear`` (``MarkEchoed.cleared``). Twilio sends no ``clear``
acknowledgement.

The media path is the hot path (50 messages per second per call). A media message in Twilio's
own form (the key order above, no spaces, this stream's ``streamSid``) is read at the byte level
(:meth:`~harken.protocols._json_stream.JsonStreamCodec.media_audio`: one anchored regex up to
the payload, the stream's exact tail after it, :func:`binascii.a2b_base64` in strict mode in
between); anything else goes through :func:`orjson.loads` and the full checks, which accept it
or raise the precise error. Outbound media is built from a template preformatted at ``start``
around :func:`binascii.b2a_base64`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harken.errors import LocalProtocolError, RemoteProtocolError

from . import _wire
from ._json_stream import JsonStreamCodec
from .events import Encoding, StreamStarted, StreamStopped

__all__ = [
    "TwilioCodec",
    "compute_signature",
    "connect_stream_twiml",
    "validate_signature",
]

_ENCODINGS: dict[str, Encoding] = {"audio/x-mulaw": "mulaw", "audio/x-alaw": "alaw"}
#: Twilio's media message up to the payload, in Twilio's own key order (the fast path)
_MEDIA_HEAD = re.compile(
    rb'\{"event":"media","sequenceNumber":"([0-9]{1,18})","media":\{"track":"([a-z_]{1,32})",'
    rb'"chunk":"([0-9]{1,18})","timestamp":"([0-9]{1,18})","payload":"'
)


class TwilioCodec(JsonStreamCodec):
    """One Twilio Media Stream (mu-law, 8 kHz, mono)."""

    name = "twilio"
    completion = "mark"
    confirms_clear = False
    marks_echo_on_clear = True
    SID_KEY = "streamSid"
    SEQ_KEY = "sequenceNumber"
    MEDIA_HEAD = _MEDIA_HEAD

    def __init__(self) -> None:
        super().__init__("mulaw", 8000)

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        where = "twilio start"
        start = _wire.obj(msg, "start", where)
        stream_sid = _wire.string(start, "streamSid", where)
        envelope_sid = msg.get("streamSid")
        if envelope_sid is not None and envelope_sid != stream_sid:
            raise RemoteProtocolError(f"{where}: envelope streamSid does not match start")
        call_sid = _wire.string(start, "callSid", where)
        account_sid = _wire.opt_string(start, "accountSid", where) or ""
        tracks = _wire.str_list(start.get("tracks"), "tracks", where)
        params = _wire.str_map(start.get("customParameters"), "customParameters", where)
        encoding, rate, channels, _ = _wire.media_format(
            start, "mediaFormat", _ENCODINGS, where, rate_key="sampleRate", default="mulaw"
        )
        return StreamStarted(
            stream_id=stream_sid,
            call_id=call_sid,
            account_id=account_sid,
            custom_parameters=params,
            encoding=encoding,
            sample_rate=rate,
            channels=channels,
            tracks=tracks,
        )

    def _on_stop(self, msg: dict[str, Any]) -> StreamStopped:
        stop = msg.get("stop")
        if type(stop) is dict:
            call_sid = stop.get("callSid")
            if call_sid and self.call_id is not None and call_sid != self.call_id:
                raise RemoteProtocolError(f"twilio stop: callSid {call_sid!r:.60} does not match")
        return super()._on_stop(msg)

    def _inbound_media_tail(self, quoted_sid: str) -> bytes:
        return b'"},"streamSid":' + quoted_sid.encode() + b"}"

    def _mark_echo_pattern(self, quoted_sid: str) -> re.Pattern[bytes]:
        return re.compile(
            rb'\{"event":"mark","sequenceNumber":"([0-9]{1,18})","streamSid":'
            + re.escape(quoted_sid.encode())
            + rb',"mark":\{"name":"([ !#-\[\]-~]{1,256})"\}\}'
        )

    def _templates(self, quoted_sid: str) -> tuple[str, str, str, str, str]:
        return (
            '{"event":"media","streamSid":' + quoted_sid + ',"media":{"payload":"',
            '"}}',
            '{"event":"mark","streamSid":' + quoted_sid + ',"mark":{"name":',
            "}}",
            '{"event":"clear","streamSid":' + quoted_sid + "}",
        )


# --------------------------------------------------------------------------------------------
# webhook signatures (X-Twilio-Signature)

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def compute_signature(auth_token: str, url: str, params: Params = ()) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for a request to ``url``.

    HMAC-SHA1 keyed with the account's auth token over the full URL (scheme, host, path and
    query exactly as Twilio requested it) followed by every POST parameter as ``key + value``,
    sorted by key (then value, for repeated keys); base64-encoded. For GET requests pass no
    params (they are already in the URL's query).
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    for key, value in pairs:
        if type(key) is not str or type(value) is not str:
            raise LocalProtocolError("signature parameters must be strings")
    data = url + "".join(key + value for key, value in sorted(pairs))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def validate_signature(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """Whether ``signature`` (the ``X-Twilio-Signature`` header) is valid for this request.

    Compared in constant time. Like Twilio's own validators it accepts the signature computed
    with and without an explicit port, because proxies add or strip default ports.
    """
    if not signature:
        return False
    given = signature.encode()
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    valid = False
    for candidate in _url_variants(url):
        expected = compute_signature(auth_token, candidate, pairs).encode()
        valid |= hmac.compare_digest(expected, given)
    return valid


def _url_variants(url: str) -> list[str]:
    """``url`` without any port and with a port (its own, or the scheme's default)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return [url]
    host = parts.netloc
    if port is not None:
        bare = host.rsplit(":", 1)[0]
        return [urlunsplit(parts._replace(netloc=bare)), url]
    default = {"https": 443, "http": 80, "wss": 443, "ws": 80}.get(parts.scheme.lower())
    if default is None or not host:
        return [url]
    return [url, urlunsplit(parts._replace(netloc=f"{host}:{default}"))]


# --------------------------------------------------------------------------------------------
# TwiML


def connect_stream_twiml(
    url: str,
    parameters: Mapping[str, str] | None = None,
    *,
    name: str | None = None,
    status_callback: str | None = None,
    status_callback_method: str | None = None,
    allow_insecure: bool = False,
) -> str:
    """TwiML that connects the call to a bidirectional Media Stream::

        <Response><Connect><Stream url="wss://..."><Parameter name=".." value=".."/>
        </Stream></Connect></Response>

    ``parameters`` arrive as ``start.customParameters``. Twilio only connects to ``wss://``
    URLs; ``allow_insecure`` also accepts ``ws://`` for local test harnesses.
    """
    schemes = ("wss", "ws") if allow_insecure else ("wss",)
    try:
        parts = urlsplit(url) if type(url) is str else None
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in schemes or not parts.netloc:
        raise LocalProtocolError(f"stream url must be an absolute {'/'.join(schemes)} URL")
    attrs = [("url", url)]
    if name is not None:
        attrs.append(("name", name))
    if status_callback is not None:
        attrs.append(("statusCallback", status_callback))
    if status_callback_method is not None:
        if status_callback_method not in ("GET", "POST"):
            raise LocalProtocolError("statusCallbackMethod must be GET or POST")
        attrs.append(("statusCallbackMethod", status_callback_method))
    stream_attrs = "".join(f' {key}="{_xml_attr(value, key)}"' for key, value in attrs)
    children = []
    for key, value in (parameters or {}).items():
        if type(key) is not str or not key:
            raise LocalProtocolError("stream parameter names must be non-empty strings")
        children.append(
            f'<Parameter name="{_xml_attr(key, "parameter name")}" '
            f'value="{_xml_attr(value, key)}"/>'
        )
    stream = (
        f"<Stream{stream_attrs}>{''.join(children)}</Stream>"
        if children
        else f"<Stream{stream_attrs}/>"
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect>{stream}</Connect></Response>'


_XML_ESCAPES = {
    ord("&"): "&amp;",
    ord("<"): "&lt;",
    ord(">"): "&gt;",
    ord('"'): "&quot;",
    ord("'"): "&apos;",
    ord("\t"): "&#9;",
    ord("\n"): "&#10;",
    ord("\r"): "&#13;",
}


def _xml_attr(value: str, what: str) -> str:
    """Escape ``value`` for a double-quoted XML attribute; reject characters XML 1.0 forbids."""
    if type(value) is not str:
        raise LocalProtocolError(f"TwiML {what} must be a string, not {type(value).__name__}")
    for ch in value:
        code = ord(ch)
        if (
            (code < 0x20 and ch not in "\t\n\r")
            or 0xD800 <= code <= 0xDFFF
            or code > 0x10FFFF
            or code in (0xFFFE, 0xFFFF)
        ):
            raise LocalProtocolError(f"TwiML {what} contains a character XML forbids: {code:#x}")
    return value.translate(_XML_ESCAPES)
