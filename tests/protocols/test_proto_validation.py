"""Malformed input raises RemoteProtocolError (with a useful message) and nothing else;
invalid outbound requests raise LocalProtocolError; the state machine is enforced."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harken.errors import LocalProtocolError, RemoteProtocolError
from harken.protocols import (
    CODECS,
    CarrierCodec,
    ExotelCodec,
    PlivoCodec,
    StreamStarted,
    TelnyxCodec,
    TwilioCodec,
    UnknownEvent,
    VonageCodec,
)

Golden = Callable[[str, str], dict[str, Any]]
JSON_CARRIERS = ["twilio", "telnyx", "plivo", "exotel"]
START = {"twilio": "start", "telnyx": "start", "plivo": "start", "exotel": "start"}


def started(carrier: str, golden: Golden) -> CarrierCodec:
    codec = CODECS[carrier]()
    name = "connected" if carrier == "vonage" else "start"
    assert isinstance(codec.receive_text(json.dumps(golden(carrier, name))), StreamStarted)
    return codec


def _set(msg: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """Copy of ``msg`` with the dotted ``path`` set to ``value`` (or deleted if ``...``)."""
    out = json.loads(json.dumps(msg))
    node = out
    *parents, leaf = path.split(".")
    for key in parents:
        node = node[key]
    if value is ...:
        del node[leaf]
    else:
        node[leaf] = value
    return out


# --------------------------------------------------------------------------------------------
# not JSON / not an object / no event


@pytest.mark.parametrize("carrier", [*JSON_CARRIERS, "vonage"])
@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "{",
        '{"event": "media"',
        "[1, 2]",
        "null",
        "42",
        '"media"',
        "{}",
        '{"event": 5}',
        '{"event": null}',
        '{"event": ["start"]}',
        "\ud800",
        b"\xff\xfe{}",
        b'{"event": "\xc3"}',
    ],
)
def test_garbage_text_is_a_remote_error(carrier: str, text: str | bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        CODECS[carrier]().receive_text(text)


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_binary_frames_are_refused_by_json_carriers(carrier: str) -> None:
    with pytest.raises(RemoteProtocolError, match="binary"):
        CODECS[carrier]().receive_bytes(b"\x00\x01")


@pytest.mark.parametrize("carrier", [*JSON_CARRIERS, "vonage"])
def test_unknown_events_are_returned_not_raised(carrier: str) -> None:
    codec = CODECS[carrier]()
    assert codec.receive_text('{"event": "brand-new", "x": 1}') == UnknownEvent("brand-new")
    assert codec.state == "idle"


# --------------------------------------------------------------------------------------------
# the state machine


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_media_before_start_is_a_remote_error(carrier: str, golden: Golden) -> None:
    with pytest.raises(RemoteProtocolError, match=r"media.*idle"):
        CODECS[carrier]().receive_text(json.dumps(golden(carrier, "media")))


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_second_start_is_a_remote_error(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    with pytest.raises(RemoteProtocolError, match="start"):
        codec.receive_text(json.dumps(golden(carrier, "start")))


@pytest.mark.parametrize("carrier", ["twilio", "telnyx", "exotel"])
def test_connected_after_start_or_twice_is_a_remote_error(carrier: str, golden: Golden) -> None:
    codec = CODECS[carrier]()
    codec.receive_text(json.dumps(golden(carrier, "connected")))
    with pytest.raises(RemoteProtocolError):
        codec.receive_text(json.dumps(golden(carrier, "connected")))
    codec = started(carrier, golden)
    with pytest.raises(RemoteProtocolError):
        codec.receive_text(json.dumps(golden(carrier, "connected")))


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_nothing_is_accepted_after_stop(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    codec.receive_text(json.dumps(golden(carrier, "stop")))
    for name in ("media", "stop", "dtmf"):
        with pytest.raises(RemoteProtocolError, match="stopped"):
            codec.receive_text(json.dumps(golden(carrier, name)))
    with pytest.raises(RemoteProtocolError, match="stopped"):
        codec.receive_text('{"event": "brand-new"}')
    assert codec.connection_lost() is None


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_stream_id_must_match_start(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    key = codec.SID_KEY  # type: ignore[attr-defined]
    for name in ("media", "dtmf", "stop"):
        msg = _set(golden(carrier, name), key, "someone-else")
        with pytest.raises(RemoteProtocolError, match="does not match"):
            codec.receive_text(json.dumps(msg))


@pytest.mark.parametrize("carrier", [*JSON_CARRIERS, "vonage"])
def test_outbound_needs_a_streaming_stream(carrier: str, golden: Golden) -> None:
    codec = CODECS[carrier]()
    frame = b"\x00" * 320
    for build in (lambda: codec.media(frame), lambda: codec.mark("m"), codec.clear):
        with pytest.raises(LocalProtocolError, match="idle"):
            build()
    codec = started(carrier, golden)
    codec.connection_lost()
    for build in (lambda: codec.media(frame), lambda: codec.mark("m"), codec.clear):
        with pytest.raises(LocalProtocolError, match="stopped"):
            build()


# --------------------------------------------------------------------------------------------
# media


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ("media", ..., "'media'"),
        ("media", "AAAA", "'media'"),
        ("media.payload", ..., "payload"),
        ("media.payload", "", "payload"),
        ("media.payload", 1234, "payload"),
        ("media.payload", ["AAAA"], "payload"),
        ("media.payload", "@@@@", "base64"),
        ("media.payload", "AAA", "base64"),
        ("media.payload", "AA AA", "base64"),
        ("media.payload", "ÀÀÀÀ", "base64"),
        ("media.chunk", "1.5", "chunk"),
        ("media.chunk", "-1", "chunk"),
        ("media.chunk", "+1", "chunk"),
        ("media.chunk", "", "chunk"),
        ("media.chunk", 1.5, "chunk"),
        ("media.chunk", True, "chunk"),
        ("media.chunk", "1" * 40, "chunk"),
        ("media.chunk", "١٢", "chunk"),
        ("media.timestamp", "soon", "timestamp"),
        ("media.timestamp", -5, "timestamp"),
        ("media.timestamp", {"ms": 5}, "timestamp"),
        ("media.track", 7, "track"),
    ],
)
def test_malformed_media(carrier: str, path: str, value: Any, match: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    with pytest.raises(RemoteProtocolError, match=match):
        codec.receive_text(json.dumps(_set(golden(carrier, "media"), path, value)))


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_bad_sequence_number(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    key = codec.SEQ_KEY  # type: ignore[attr-defined]
    for bad in ("x", "-3", 2.0, [], "9" * 30):
        with pytest.raises(RemoteProtocolError, match=key):
            codec.receive_text(json.dumps(_set(golden(carrier, "media"), key, bad)))


def test_numbers_may_be_strings_or_numbers(golden: Golden) -> None:
    codec = started("twilio", golden)
    msg = golden("twilio", "media")
    msg["sequenceNumber"], msg["media"]["chunk"], msg["media"]["timestamp"] = 7, 3, 60
    event = codec.receive_text(json.dumps(msg))
    assert (event.sequence, event.chunk, event.timestamp_ms) == (7, 3, 60)  # type: ignore[union-attr]


def test_optional_media_metadata_may_be_absent(golden: Golden) -> None:
    codec = started("twilio", golden)
    msg = {"event": "media", "media": {"payload": "AAAA"}}
    event = codec.receive_text(json.dumps(msg))
    assert (event.sequence, event.chunk, event.timestamp_ms, event.track) == (  # type: ignore[union-attr]
        None,
        None,
        None,
        "inbound",
    )


def test_out_of_order_sequence_numbers_are_counted(golden: Golden) -> None:
    codec = started("telnyx", golden)
    for seq in ("5", "4", "7"):
        msg = _set(golden("telnyx", "media"), "sequence_number", seq)
        codec.receive_text(json.dumps(msg))
    assert (codec.last_sequence, codec.sequence_gaps, codec.sequence_reorders) == (7, 4, 1)


def test_odd_length_l16_audio_is_malformed(golden: Golden) -> None:
    codec = started("exotel", golden)
    with pytest.raises(RemoteProtocolError, match="odd"):
        codec.receive_text(json.dumps(_set(golden("exotel", "media"), "media.payload", "AA==")))


# --------------------------------------------------------------------------------------------
# start


@pytest.mark.parametrize(
    ("carrier", "path", "value", "match"),
    [
        ("twilio", "start", ..., "'start'"),
        ("twilio", "start", [], "'start'"),
        ("twilio", "start.streamSid", ..., "streamSid"),
        ("twilio", "start.streamSid", 12, "streamSid"),
        ("twilio", "streamSid", "MZother", "streamSid"),
        ("twilio", "start.callSid", "", "callSid"),
        ("twilio", "start.accountSid", 1, "accountSid"),
        ("twilio", "start.tracks", "inbound", "tracks"),
        ("twilio", "start.tracks", [1], "tracks"),
        ("twilio", "start.customParameters", ["a"], "customParameters"),
        ("twilio", "start.customParameters", {"a": 1}, "customParameters"),
        ("twilio", "start.mediaFormat", "mulaw", "mediaFormat"),
        ("twilio", "start.mediaFormat.encoding", "audio/opus", "encoding"),
        ("twilio", "start.mediaFormat.encoding", ..., "encoding"),
        ("twilio", "start.mediaFormat.sampleRate", "fast", "sampleRate"),
        ("twilio", "start.mediaFormat.sampleRate", 0, "sampleRate"),
        ("twilio", "start.mediaFormat.channels", 0, "channels"),
        ("twilio", "sequenceNumber", "one", "sequenceNumber"),
        ("telnyx", "stream_id", ..., "stream_id"),
        ("telnyx", "start.call_control_id", None, "call_control_id"),
        ("telnyx", "start.media_format.encoding", "G722", "encoding"),
        ("telnyx", "start.tags", "TAG1", "tags"),
        ("telnyx", "start.from", 13122010094, "from"),
        ("plivo", "start.callId", ..., "callId"),
        ("plivo", "start.streamId", 5, "streamId"),
        ("plivo", "extra_headers", {"a": "b"}, "extra_headers"),
        ("plivo", "start.mediaFormat.sampleRate", "8k", "sampleRate"),
        ("exotel", "start.call_sid", ..., "call_sid"),
        ("exotel", "stream_sid", "other", "stream_sid"),
        ("exotel", "start.media_format.bit_rate", "8", "bit_rate"),
        ("exotel", "start.media_format.encoding", "audio/flac", "encoding"),
    ],
)
def test_malformed_start(carrier: str, path: str, value: Any, match: str, golden: Golden) -> None:
    codec = CODECS[carrier]()
    with pytest.raises(RemoteProtocolError, match=match):
        codec.receive_text(json.dumps(_set(golden(carrier, "start"), path, value)))
    assert codec.state == "idle"


def test_plivo_extra_headers_forms(golden: Golden) -> None:
    for raw, expected in [
        ("a=1;b=two%20words", {"a": "1", "b": "two words"}),
        ("test1=12,test2=123", {"test1": "12", "test2": "123"}),
        ('{"k": "v", "n": 3}', {"k": "v", "n": "3"}),
        ("{}", {}),
        ("junk;=x;k=", {"k": ""}),
        ("", {}),
    ]:
        event = PlivoCodec().receive_text(
            json.dumps(_set(golden("plivo", "start"), "extra_headers", raw))
        )
        assert event.custom_parameters == expected, raw  # type: ignore[union-attr]
    with pytest.raises(RemoteProtocolError, match="extra_headers"):
        PlivoCodec().receive_text(
            json.dumps(_set(golden("plivo", "start"), "extra_headers", "{no"))
        )


# --------------------------------------------------------------------------------------------
# dtmf, marks, errors, stop


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("dtmf", ...),
        ("dtmf", "1"),
        ("dtmf.digit", ...),
        ("dtmf.digit", "X"),
        ("dtmf.digit", 5),
        ("dtmf.digit", "12"),
        ("dtmf.digit", ""),
    ],
)
def test_malformed_dtmf(carrier: str, path: str, value: Any, golden: Golden) -> None:
    codec = started(carrier, golden)
    with pytest.raises(RemoteProtocolError, match=r"dtmf|digit"):
        codec.receive_text(json.dumps(_set(golden(carrier, "dtmf"), path, value)))


def test_dtmf_letters_are_normalised(golden: Golden) -> None:
    codec = started("twilio", golden)
    event = codec.receive_text(json.dumps(_set(golden("twilio", "dtmf"), "dtmf.digit", "d")))
    assert event.digit == "D"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("carrier", "name", "path", "value"),
    [
        ("twilio", "mark", "mark", ...),
        ("twilio", "mark", "mark.name", ""),
        ("twilio", "mark", "mark.name", 3),
        ("telnyx", "mark", "mark", "utt-1"),
        ("exotel", "mark", "mark.name", None),
        ("plivo", "played_stream", "name", ...),
        ("plivo", "played_stream", "name", ["utt-1"]),
        ("telnyx", "error", "payload", ...),
        ("telnyx", "error", "payload.code", 1.5),
        ("telnyx", "error", "payload.title", 7),
        ("twilio", "stop", "stop", "now"),
        ("twilio", "stop", "stop.callSid", "CAother"),
        ("exotel", "stop", "stop.reason", 3),
    ],
)
def test_malformed_control_messages(
    carrier: str, name: str, path: str, value: Any, golden: Golden
) -> None:
    codec = started(carrier, golden)
    with pytest.raises(RemoteProtocolError):
        codec.receive_text(json.dumps(_set(golden(carrier, name), path, value)))


def test_acknowledgements_before_start_are_remote_errors(golden: Golden) -> None:
    for carrier, name in [
        ("plivo", "played_stream"),
        ("plivo", "cleared_audio"),
        ("twilio", "mark"),
        ("vonage", "notify"),
        ("vonage", "cleared"),
        ("vonage", "dtmf"),
    ]:
        with pytest.raises(RemoteProtocolError):
            CODECS[carrier]().receive_text(json.dumps(golden(carrier, name)))


def test_stop_before_start_is_allowed(golden: Golden) -> None:
    codec = TwilioCodec()
    assert codec.receive_text(json.dumps(golden("twilio", "stop"))).reason == "stop"  # type: ignore[union-attr]
    assert codec.state == "stopped"


# --------------------------------------------------------------------------------------------
# Vonage specifics


def test_vonage_binary_audio_rules(golden: Golden) -> None:
    with pytest.raises(RemoteProtocolError, match="idle"):
        VonageCodec().receive_bytes(b"\x00\x00")
    codec = started("vonage", golden)
    for bad in (b"", b"\x00", b"\x00" * 641):
        with pytest.raises(RemoteProtocolError, match="16-bit"):
            codec.receive_bytes(bad)
    assert codec.receive_bytes(bytearray(b"\x01\x00" * 160)).payload == b"\x01\x00" * 160  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("content_type", "match"),
    [
        ("audio/pcmu;rate=8000", "content-type"),
        ("audio/l16;rate=11025", "sample rate"),
        ("audio/l16;rate=fast", "rate"),
        (16000, "content-type"),
    ],
)
def test_vonage_bad_content_type(content_type: Any, match: str, golden: Golden) -> None:
    msg = _set(golden("vonage", "connected"), "content-type", content_type)
    with pytest.raises(RemoteProtocolError, match=match):
        VonageCodec().receive_text(json.dumps(msg))


def test_vonage_connected_defaults_and_rates(golden: Golden) -> None:
    codec = VonageCodec(sample_rate=8000)
    event = codec.receive_text('{"event": "websocket:connected"}')
    assert isinstance(event, StreamStarted)
    assert (event.sample_rate, codec.frame_bytes) == (8000, 320)
    codec = VonageCodec()
    codec.receive_text('{"event": "websocket:connected", "content-type": "audio/l16;rate=24000"}')
    assert codec.frame_bytes == 960
    with pytest.raises(RemoteProtocolError, match="websocket:connected"):
        codec.receive_text('{"event": "websocket:connected"}')
    with pytest.raises(LocalProtocolError):
        VonageCodec(sample_rate=44100)


def test_vonage_notify_and_dtmf_shapes(golden: Golden) -> None:
    codec = started("vonage", golden)
    assert codec.receive_text('{"event": "websocket:notify", "payload": {"other": 1}}') == (
        UnknownEvent("websocket:notify")
    )
    with pytest.raises(RemoteProtocolError, match="payload"):
        codec.receive_text('{"event": "websocket:notify", "payload": "utt-1"}')
    for text, digit, duration in [
        ('{"event": "websocket:dtmf", "dtmf": {"digit": "7", "duration": 100}}', "7", 100),
        ('{"event": "websocket:dtmf", "dtmf": "*"}', "*", None),
        ('{"event": "websocket:dtmf", "digit": "3", "duration": "90"}', "3", 90),
    ]:
        event = codec.receive_text(text)
        assert (event.digit, event.duration_ms) == (digit, duration)  # type: ignore[union-attr]
    for text in (
        '{"event": "websocket:dtmf"}',
        '{"event": "websocket:dtmf", "digit": "55"}',
        '{"event": "websocket:dtmf", "digit": "5", "duration": -1}',
    ):
        with pytest.raises(RemoteProtocolError):
            codec.receive_text(text)


# --------------------------------------------------------------------------------------------
# outbound validation


@pytest.mark.parametrize("carrier", JSON_CARRIERS)
def test_outbound_media_payload_must_be_non_empty_bytes(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    for bad in (b"", "text", None, 12):
        with pytest.raises(LocalProtocolError):
            codec.media(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("carrier", [*JSON_CARRIERS, "vonage"])
def test_mark_names_are_validated(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    for bad in ("", "x" * 257, None, 7, "\udc80"):
        with pytest.raises(LocalProtocolError, match="mark name"):
            codec.mark(bad)  # type: ignore[arg-type]
    assert codec.pending_marks == ()
    quoted = codec.mark('quote " back\\slash </script>')
    assert 'quote \\" back\\\\slash' in quoted
    json.loads(quoted)


def test_carrier_frame_size_rules(golden: Golden) -> None:
    vonage = started("vonage", golden)
    for bad in (b"\x00" * 320, b"\x00" * 642, "x" * 640):
        with pytest.raises(LocalProtocolError, match="vonage"):
            vonage.media(bad)  # type: ignore[arg-type]
    assert vonage.media(memoryview(b"\x00" * 640)) == b"\x00" * 640

    telnyx = started("telnyx", golden)  # PCMU 8 kHz: 160 bytes = 20 ms
    telnyx.media(b"\xff" * 160)
    telnyx.media(b"\xff" * 240_000)
    for size in (159, 240_001):
        with pytest.raises(LocalProtocolError, match="20 ms"):
            telnyx.media(b"\xff" * size)

    exotel = started("exotel", golden)
    exotel.media(b"\x00" * 320)
    for size in (330, 100_160, 3):
        with pytest.raises(LocalProtocolError, match=r"320|odd"):
            exotel.media(b"\x00" * size)

    plivo = PlivoCodec()
    plivo.receive_text(
        json.dumps(_set(golden("plivo", "start"), "start.mediaFormat.encoding", "audio/x-l16"))
    )
    with pytest.raises(LocalProtocolError, match="odd"):
        plivo.media(b"\x00" * 3)


def test_telnyx_bidirectional_codec_must_be_known() -> None:
    with pytest.raises(LocalProtocolError, match="OPUS"):
        TelnyxCodec(bidirectional_codec="OPUS")


def test_exotel_accepts_mulaw_streams(golden: Golden) -> None:
    codec = ExotelCodec()
    msg = _set(golden("exotel", "start"), "start.media_format.encoding", "audio/x-mulaw")
    del msg["start"]["media_format"]["bit_rate"]
    event = codec.receive_text(json.dumps(msg))
    assert event.encoding == "mulaw"  # type: ignore[union-attr]
    codec.media(b"\xff" * 7)  # no PCM chunk rule for G.711


@pytest.mark.parametrize(
    ("carrier", "path"),
    [
        ("vonage", "header"),
        ("exotel", "start.custom_parameters"),
        ("telnyx", "start.media_format"),
        ("twilio", "start.customParameters"),
        ("plivo", "start.tracks"),
    ],
)
def test_deeply_nested_values_are_remote_errors(carrier: str, path: str, golden: Golden) -> None:
    """orjson reads 1024 levels but writes only 254: values we re-encode must not crash."""
    deep: Any = "x"
    for _ in range(300):
        deep = [deep]
    msg = golden(carrier, "connected" if carrier == "vonage" else "start")
    with pytest.raises(RemoteProtocolError):
        CODECS[carrier]().receive_text(json.dumps(_set(msg, path, {"k": deep})))
    with pytest.raises(RemoteProtocolError, match="JSON"):
        CODECS[carrier]().receive_text("[" * 2000 + "]" * 2000)


def test_telnyx_custom_parameters_as_name_value_list(golden: Golden) -> None:
    items = [{"name": "a", "value": "1"}, {"name": "b", "value": ""}]
    msg = _set(golden("telnyx", "start"), "start.custom_parameters", items)
    event = TelnyxCodec().receive_text(json.dumps(msg))
    assert event.custom_parameters == {"a": "1", "b": ""}  # type: ignore[union-attr]
    for bad in ([1], [{"name": "a"}], [{"name": 1, "value": "v"}]):
        msg = _set(golden("telnyx", "start"), "start.custom_parameters", bad)
        with pytest.raises(RemoteProtocolError, match=r"custom_parameters|name|value"):
            TelnyxCodec().receive_text(json.dumps(msg))
