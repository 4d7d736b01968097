"""Carrier-neutral events produced by the protocol codecs.

Every codec in :mod:`harken.protocols` turns one inbound WebSocket message into exactly one of
these frozen, slotted dataclasses (or raises :class:`~harken.errors.RemoteProtocolError`). The
server never needs to know which carrier it is talking to in order to act on an event.

=================  ==========================================================================
event              meaning
=================  ==========================================================================
Connected          the carrier opened the stream socket (Twilio/Telnyx/Exotel ``connected``)
StreamStarted      call and media metadata; audio follows (``start``, Vonage
                   ``websocket:connected``)
MediaReceived      one chunk of caller audio, base64-decoded but still in the carrier encoding
                   (a NamedTuple, for speed; every other event is a frozen slotted dataclass)
DtmfReceived       the caller pressed a key
MarkEchoed         the carrier reached a mark we sent (Twilio/Telnyx/Exotel ``mark``, Plivo
                   ``playedStream``, Vonage ``websocket:notify``). ``cleared`` is True when the
                   mark was still pending when we sent ``clear``: the audio before it was
                   probably flushed, not played (see ``docs/protocols.md``)
AudioCleared       the carrier confirms a ``clear`` (Plivo ``clearedAudio``, Vonage
                   ``websocket:cleared``); ``marks`` lists the marks that were pending then
StreamStopped      the carrier ended the stream (``stop``); the socket closes next
CarrierError       the carrier reported an error on the stream (Telnyx ``error``)
UnknownEvent       a well-formed message whose event name this codec does not know; returned
                   (not raised) so carriers can add events without ending calls
=================  ==========================================================================

Encodings (``StreamStarted.encoding``, ``CarrierCodec.encoding``):

* ``"mulaw"`` / ``"alaw"``: G.711, one byte per sample.
* ``"l16"``: signed 16-bit linear PCM, **little-endian** (Vonage, Exotel, Plivo).
* ``"l16be"``: signed 16-bit linear PCM, **big-endian** (network order; Telnyx ``L16``, an RTP
  payload per RFC 3551). Kept distinct on purpose: code that only knows ``"l16"`` fails loudly
  instead of playing byte-swapped noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, TypeAlias

__all__ = [
    "AudioCleared",
    "CarrierError",
    "Connected",
    "DtmfReceived",
    "Encoding",
    "Event",
    "MarkEchoed",
    "MediaReceived",
    "StreamStarted",
    "StreamStopped",
    "UnknownEvent",
]

Encoding: TypeAlias = Literal["mulaw", "alaw", "l16", "l16be"]


@dataclass(frozen=True, slots=True)
class Connected:
    """The carrier opened the stream socket. Sent once, before :class:`StreamStarted`."""

    protocol: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """Call and media metadata, sent once before any audio.

    ``stream_id`` is the carrier's id for this media stream (empty for Vonage, which has none);
    ``call_id`` the carrier's call id (Twilio CallSid, Telnyx call_control_id, Plivo CallUUID,
    Exotel CallSid); ``custom_parameters`` the key/value pairs the application attached when it
    started the stream (TwiML ``<Parameter>``, Telnyx ``custom_parameters``, Plivo
    ``extraHeaders``, Vonage NCCO ``headers``, Exotel URL query). ``extra`` holds the remaining
    carrier-specific scalar metadata (for example Telnyx ``client_state``).
    """

    stream_id: str
    call_id: str
    account_id: str
    custom_parameters: dict[str, str]
    encoding: Encoding
    sample_rate: int
    channels: int = 1
    tracks: tuple[str, ...] = ()
    from_number: str | None = None
    to_number: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


class MediaReceived(NamedTuple):
    """A chunk of audio from the carrier.

    ``payload`` is raw audio in the stream's encoding (already base64-decoded). ``timestamp_ms``
    is the carrier's media timestamp: milliseconds since the stream started for Twilio, Telnyx
    and Exotel, Unix epoch milliseconds for Plivo, and derived from the bytes received so far
    for Vonage (which sends bare binary frames). ``sequence`` is the carrier's message sequence
    number and ``chunk`` its per-track chunk counter, where it sends them.

    The one event that is a :class:`~typing.NamedTuple` rather than a frozen dataclass: it is
    created 50 times a second per call, and a frozen dataclass costs about 1.3 us to build
    against 0.5 us for the (equally immutable) named tuple.
    """

    payload: bytes
    timestamp_ms: int | None = None
    sequence: int | None = None
    chunk: int | None = None
    track: str = "inbound"


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key: ``0-9``, ``*``, ``#`` or ``A-D``."""

    digit: str
    duration_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarkEchoed:
    """The carrier reached a mark we sent.

    ``cleared`` is True when the mark was pending when we sent ``clear``: the carrier returns
    such marks when it flushes its buffer, so the audio before them was (probably) *not* played.
    A mark echoed while ``cleared`` is False means the audio before it was played.
    """

    name: str
    cleared: bool = False


@dataclass(frozen=True, slots=True)
class AudioCleared:
    """The carrier confirms that it flushed its playback buffer after our ``clear``.

    ``marks`` names the marks that were pending when ``clear`` was sent, oldest first.
    """

    marks: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The carrier ended the stream; no more audio follows."""

    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class CarrierError:
    """The carrier reported an error on the stream (the stream may continue)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """A well-formed message with an event name this codec does not handle (ignored)."""

    name: str


Event: TypeAlias = (
    Connected
    | StreamStarted
    | MediaReceived
    | DtmfReceived
    | MarkEchoed
    | AudioCleared
    | StreamStopped
    | CarrierError
    | UnknownEvent
)
