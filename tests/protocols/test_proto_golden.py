"""Each codec against the carriers' documented messages (``fixtures/<carrier>/*.json``).

Inbound: a whole call is replayed in order and every event is checked field by field.
Outbound: what the codec builds must equal the golden message (as JSON, key order aside).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from harken.protocols import (
    CODECS,
    AudioCleared,
    CarrierError,
    Connected,
    DtmfReceived,
    ExotelCodec,
    MarkEchoed,
    MediaReceived,
    PlivoCodec,
    StreamStarted,
    StreamStopped,
    TelnyxCodec,
    TwilioCodec,
    VonageCodec,
)

Golden = Callable[[str, str], dict[str, Any]]
Wire = Callable[[str, str], str]


def _payload(golden: Golden, carrier: str) -> bytes:
    return base64.b64decode(golden(carrier, "media")["media"]["payload"])


def test_registry_holds_every_carrier() -> None:
    assert set(CODECS) == {"twilio", "telnyx", "plivo", "vonage", "exotel"}
    for name, cls in CODECS.items():
        codec = cls()
        assert codec.name == name
        assert codec.state == "idle"
        assert codec.completion in ("mark", "checkpoint", "notify")


def test_twilio_call(wire: Wire, golden: Golden) -> None:
    codec = TwilioCodec()
    assert codec.receive_text(wire("twilio", "connected")) == Connected("Call", "1.0.0")
    started = codec.receive_text(wire("twilio", "start"))
    assert started == StreamStarted(
        stream_id="MZ18ad3ab5a668481ce02b83e7395059f0",
        call_id="CA5d1a7c5e1b0f4f1e9a3c7f2b8d6e4a10",
        account_id="AC2b8e5f4d3c2a1b0e9f8d7c6b5a4f3e21",
        custom_parameters={"FirstName": "Jane", "agent": "billing & support"},
        encoding="mulaw",
        sample_rate=8000,
        channels=1,
        tracks=("inbound",),
    )
    assert (codec.stream_id, codec.call_id, codec.state) == (
        started.stream_id,
        started.call_id,
        "streaming",
    )
    media = codec.receive_text(wire("twilio", "media"))
    assert media == MediaReceived(_payload(golden, "twilio"), 20, 2, 1, "inbound")
    assert len(media.payload) == 160  # type: ignore[union-attr]
    assert codec.receive_text(wire("twilio", "dtmf")) == DtmfReceived("1", None)

    payload = _payload(golden, "twilio")
    assert json.loads(codec.media(payload)) == golden("twilio", "out_media")
    assert json.loads(codec.mark("utt-1")) == golden("twilio", "out_mark")
    assert codec.pending_marks == ("utt-1",)
    assert codec.receive_text(wire("twilio", "mark")) == MarkEchoed("utt-1", cleared=False)
    assert codec.pending_marks == ()
    assert json.loads(codec.clear()) == golden("twilio", "out_clear")

    assert codec.receive_text(wire("twilio", "stop")) == StreamStopped("stop")
    assert codec.state == "stopped"
    assert (codec.last_sequence, codec.sequence_gaps, codec.sequence_reorders) == (5, 0, 0)


def test_twilio_media_is_byte_exact(golden: Golden) -> None:
    """The hot-path template produces compact JSON, exactly what orjson would."""
    codec = TwilioCodec()
    codec.receive_text(json.dumps(golden("twilio", "start")))
    out = golden("twilio", "out_media")
    assert codec.media(_payload(golden, "twilio")) == json.dumps(out, separators=(",", ":"))


def test_telnyx_call(wire: Wire, golden: Golden) -> None:
    codec = TelnyxCodec()
    assert codec.receive_text(wire("telnyx", "connected")) == Connected("", "1.0.0")
    started = codec.receive_text(wire("telnyx", "start"))
    assert started == StreamStarted(
        stream_id="32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
        call_id="v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg",
        account_id="3E6F995F-85F7-4705-9741-53B116D28237",
        custom_parameters={"customer_id": "customer_123"},
        encoding="mulaw",
        sample_rate=8000,
        channels=1,
        from_number="+13122010094",
        to_number="+13122123456",
        extra={
            "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
            "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
            "tags": "TAG1,TAG2",
        },
    )
    payload = _payload(golden, "telnyx")
    assert codec.receive_text(wire("telnyx", "media")) == MediaReceived(payload, 5, 4, 2, "inbound")
    assert codec.receive_text(wire("telnyx", "dtmf")) == DtmfReceived("1", None)
    assert json.loads(codec.media(payload)) == golden("telnyx", "out_media")
    assert json.loads(codec.mark("utt-1")) == golden("telnyx", "out_mark")
    assert codec.receive_text(wire("telnyx", "mark")) == MarkEchoed("utt-1")
    assert json.loads(codec.clear()) == golden("telnyx", "out_clear")
    assert codec.receive_text(wire("telnyx", "error")) == CarrierError(
        "100003", "malformed_frame: Received frame was not formed correctly"
    )
    assert codec.receive_text(wire("telnyx", "error_legacy")) == CarrierError(
        "100005", "rate_limit_reached: Too many requests"
    )
    assert codec.receive_text(wire("telnyx", "stop")) == StreamStopped("stop")
    # sequence numbers 1, 4, 5, 6, 7, 8: two were skipped (the doc's example numbering)
    assert (codec.last_sequence, codec.sequence_gaps) == (8, 2)


def test_telnyx_l16_is_big_endian_and_outbound_codec_can_differ(golden: Golden) -> None:
    start = golden("telnyx", "start")
    start["start"]["media_format"] = {"encoding": "L16", "sample_rate": 16000, "channels": 1}
    codec = TelnyxCodec()
    started = codec.receive_text(json.dumps(start))
    assert isinstance(started, StreamStarted)
    assert (started.encoding, started.sample_rate) == ("l16be", 16000)
    assert (codec.output_encoding, codec.output_sample_rate, codec.frame_bytes) == (
        "l16be",
        16000,
        640,
    )

    codec = TelnyxCodec(bidirectional_codec="PCMU")
    start["start"]["media_format"] = {"encoding": "PCMA", "sample_rate": 8000, "channels": 1}
    started = codec.receive_text(json.dumps(start))
    assert isinstance(started, StreamStarted)
    assert (codec.encoding, codec.output_encoding, codec.output_sample_rate) == (
        "alaw",
        "mulaw",
        8000,
    )


def test_plivo_call(wire: Wire, golden: Golden) -> None:
    codec = PlivoCodec()
    started = codec.receive_text(wire("plivo", "start"))
    assert started == StreamStarted(
        stream_id="87654321-4321-4321-4321-cba987654321",
        call_id="12345678-1234-1234-1234-123456789abc",
        account_id="MAXXXXXXXXXXXXXXXXXX",
        custom_parameters={"userId": "12345", "sessionId": "abc-xyz"},
        encoding="mulaw",
        sample_rate=8000,
        tracks=("inbound",),
    )
    payload = _payload(golden, "plivo")
    assert codec.receive_text(wire("plivo", "media")) == MediaReceived(
        payload, 1705312200000, 2, 1, "inbound"
    )
    assert codec.receive_text(wire("plivo", "dtmf")) == DtmfReceived("5", None)
    assert json.loads(codec.media(payload)) == golden("plivo", "out_play_audio")
    assert json.loads(codec.mark("utt-1")) == golden("plivo", "out_checkpoint")
    assert codec.receive_text(wire("plivo", "played_stream")) == MarkEchoed("utt-1")
    codec.mark("utt-2")
    assert json.loads(codec.clear()) == golden("plivo", "out_clear_audio")
    assert codec.receive_text(wire("plivo", "cleared_audio")) == AudioCleared(("utt-2",))
    assert codec.receive_text(wire("plivo", "stop")) == StreamStopped("call ended")


def test_plivo_l16_stream_builds_matching_play_audio(golden: Golden) -> None:
    start = golden("plivo", "start")
    start["start"]["mediaFormat"] = {"encoding": "audio/x-l16", "sampleRate": 16000}
    codec = PlivoCodec()
    codec.receive_text(json.dumps(start))
    out = json.loads(codec.media(b"\x01\x00" * 320))
    assert out["media"]["contentType"] == "audio/x-l16"
    assert out["media"]["sampleRate"] == 16000


def test_vonage_call(wire: Wire, golden: Golden) -> None:
    codec = VonageCodec()
    started = codec.receive_text(wire("vonage", "connected"))
    assert started == StreamStarted(
        stream_id="",
        call_id="",
        account_id="",
        custom_parameters={
            "call_uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
            "language": "en-GB",
            "priority": "2",
        },
        encoding="l16",
        sample_rate=16000,
        tracks=("inbound",),
        extra={"content-type": "audio/l16;rate=16000"},
    )
    frame = bytes(range(256)) * 2 + bytes(128)  # 640 bytes: 20 ms at 16 kHz
    assert codec.receive_bytes(frame) == MediaReceived(frame, 0, None, 1, "inbound")
    assert codec.receive_bytes(frame) == MediaReceived(frame, 20, None, 2, "inbound")
    assert codec.receive_text(wire("vonage", "dtmf")) == DtmfReceived("#", 260)
    assert codec.media(frame) == frame
    assert json.loads(codec.mark("utt-1")) == golden("vonage", "out_notify")
    assert codec.receive_text(wire("vonage", "notify")) == MarkEchoed("utt-1")
    assert json.loads(codec.clear()) == golden("vonage", "out_clear")
    assert codec.receive_text(wire("vonage", "cleared")) == AudioCleared(())
    assert codec.connection_lost() == StreamStopped("closed")
    assert codec.connection_lost() is None


def test_exotel_call(wire: Wire, golden: Golden) -> None:
    codec = ExotelCodec()
    assert codec.receive_text(wire("exotel", "connected")) == Connected()
    started = codec.receive_text(wire("exotel", "start"))
    assert started == StreamStarted(
        stream_id="e5f3b6a2c1d04e7f9a8b7c6d5e4f3a21",
        call_id="b2c7a1e4d3f6a9b8c5e2d1f0a3b6c9e7",
        account_id="exotel_acct_1",
        custom_parameters={"lang": "hi", "tier": "gold"},
        encoding="l16",
        sample_rate=8000,
        from_number="+919876543210",
        to_number="+918047491899",
    )
    payload = _payload(golden, "exotel")
    assert len(payload) == 1600
    assert codec.receive_text(wire("exotel", "media")) == MediaReceived(
        payload, 200, 3, 2, "inbound"
    )
    assert codec.receive_text(wire("exotel", "dtmf")) == DtmfReceived("5", 100)
    assert json.loads(codec.media(payload)) == golden("exotel", "out_media")
    assert json.loads(codec.mark("utt-1")) == golden("exotel", "out_mark")
    assert codec.receive_text(wire("exotel", "mark")) == MarkEchoed("utt-1")
    assert json.loads(codec.clear()) == golden("exotel", "out_clear")
    assert codec.receive_text(wire("exotel", "stop")) == StreamStopped("callended")


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "plivo", "exotel"])
def test_bytes_frames_are_accepted_as_text(carrier: str, wire: Wire) -> None:
    """Transports such as picows hand text frames over as UTF-8 bytes."""
    codec = CODECS[carrier]()
    event = codec.receive_text(wire(carrier, "start").encode())
    assert isinstance(event, StreamStarted)
    media = codec.receive_text(wire(carrier, "media").encode())
    assert isinstance(media, MediaReceived)
