"""Sans-I/O wire protocols for telephony carriers' media WebSockets.

Nothing here touches a socket: a codec turns received text/binary frames into carrier-neutral
events (:mod:`harken.protocols.events`) and builds the frames to send back. The server picks a
codec class from :data:`CODECS` by carrier name and creates one instance per call::

    codec = CODECS["telnyx"]()
    for message in websocket:
        event = codec.receive_text(message)   # raises RemoteProtocolError on bad input

See :mod:`harken.protocols.base` for the shared state machine and ``docs/protocols.md`` for the
per-carrier mapping. Also here: Twilio webhook signatures and TwiML (:mod:`.twilio`) and the
carriers' hang-up REST requests as data (:mod:`.rest`).

Layering: this package imports only :mod:`harken.errors` and ``orjson``.
"""

from __future__ import annotations

from .base import CarrierCodec, frame_bytes
from .events import (
    AudioCleared,
    CarrierError,
    Connected,
    DtmfReceived,
    Encoding,
    Event,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
)
from .exotel import ExotelCodec
from .plivo import PlivoCodec
from .rest import HttpRequest, plivo_hangup, telnyx_hangup, twilio_hangup
from .telnyx import TelnyxCodec
from .twilio import TwilioCodec, compute_signature, connect_stream_twiml, validate_signature
from .vonage import VonageCodec

__all__ = [
    "CODECS",
    "AudioCleared",
    "CarrierCodec",
    "CarrierError",
    "Connected",
    "DtmfReceived",
    "Encoding",
    "Event",
    "ExotelCodec",
    "HttpRequest",
    "MarkEchoed",
    "MediaReceived",
    "PlivoCodec",
    "StreamStarted",
    "StreamStopped",
    "TelnyxCodec",
    "TwilioCodec",
    "UnknownEvent",
    "VonageCodec",
    "compute_signature",
    "connect_stream_twiml",
    "frame_bytes",
    "plivo_hangup",
    "telnyx_hangup",
    "twilio_hangup",
    "validate_signature",
]

#: Carrier name -> codec class; every class can be created with no arguments.
CODECS: dict[str, type[CarrierCodec]] = {
    codec.name: codec for codec in (TwilioCodec, TelnyxCodec, PlivoCodec, VonageCodec, ExotelCodec)
}
