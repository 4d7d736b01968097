"""The byte-level fast paths for Twilio media (``media_audio``) and mark echoes
(``mark_echo``): they take exactly what the full JSON parser takes, with the same effects, and
pass everything else on untouched."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harken.errors import RemoteProtocolError
from harken.protocols.events import MarkEchoed, MediaReceived
from harken.protocols.twilio import TwilioCodec

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
AUDIO = bytes(range(160))
B64 = base64.b64encode(AUDIO).decode()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FullParseTwilio(TwilioCodec):
    """The reference: the same codec with no fast path."""

    MEDIA_HEAD = None  # type: ignore[assignment]

    def _mark_echo_pattern(self, quoted_sid: str) -> None:  # type: ignore[override]
        return None


def started(cls: type[TwilioCodec] = TwilioCodec, sid: str = SID) -> TwilioCodec:
    codec = cls()
    codec.receive_text(
        json.dumps(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": sid,
                "start": {"streamSid": sid, "callSid": "CA1", "tracks": ["inbound"]},
            }
        )
    )
    return codec


def media(
    seq: str = "2",
    chunk: str = "1",
    timestamp: str = "20",
    payload: str = B64,
    sid: str = SID,
    track: str = "inbound",
) -> bytes:
    """A media message exactly as Twilio sends it (its key order, no spaces)."""
    msg = {
        "event": "media",
        "sequenceNumber": seq,
        "media": {"track": track, "chunk": chunk, "timestamp": timestamp, "payload": payload},
        "streamSid": sid,
    }
    return json.dumps(msg, separators=(",", ":")).encode()


def outcome(codec: TwilioCodec, data: bytes) -> tuple[Any, ...]:
    """What feeding ``data`` did: the event (or the error) and the codec's sequence state."""
    try:
        result: Any = codec.receive_text(data)
    except RemoteProtocolError as exc:
        result = ("error", str(exc))
    return result, codec.state, codec.last_sequence, codec.sequence_gaps, codec.sequence_reorders


def session_outcome(codec: TwilioCodec, data: bytes) -> tuple[Any, ...]:
    """As a carrier session feeds it: the fast path first, the full parser for the rest."""
    audio = codec.media_audio(data)
    if audio is not None:
        return audio, codec.state, codec.last_sequence, codec.sequence_gaps
    result, state, last, gaps, _ = outcome(codec, data)
    if isinstance(result, MediaReceived):
        result = result.payload
    return result, state, last, gaps


def test_twilio_media_is_read_without_parsing_and_matches_the_full_parser() -> None:
    fast, full = started(), started(FullParseTwilio)
    for i in range(5):
        data = media(seq=str(i + 2), chunk=str(i + 1), timestamp=str(20 * i))
        assert fast.media_audio(data) == AUDIO
        assert outcome(full, data)[0].payload == AUDIO
        assert (fast.last_sequence, fast.sequence_gaps) == (full.last_sequence, 0)
    # receive_text takes the same path and returns the whole event
    data = media(seq="9", chunk="7", timestamp="140", track="outbound")
    assert outcome(started(), data) == outcome(started(FullParseTwilio), data)
    assert started().receive_text(data) == MediaReceived(AUDIO, 140, 9, 7, "outbound")


def test_sequence_gaps_and_reorders_are_counted_as_by_the_full_parser() -> None:
    fast, full = started(), started(FullParseTwilio)
    for seq in ("2", "3", "7", "5", "8", "0", "000000000000000011"):
        data = media(seq=seq)
        assert session_outcome(fast, data)[1:] == outcome(full, data)[1:4]
    assert (fast.sequence_gaps, fast.sequence_reorders) == (full.sequence_gaps, 1)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (media(payload="AAA"), "base64"),
        (media(payload="AA AA"), "base64"),
        (media(payload="QUJD\\/"), "base64"),  # an escaped character: a JSON string, not base64
        (media(payload=""), "payload"),
        (media(payload="@@@@"), "base64"),
        (media(seq="-1"), "sequenceNumber"),
        (media(seq="1" * 19), "sequenceNumber"),
        (media(chunk="1.5"), "chunk"),
        (media(timestamp="soon"), "timestamp"),
        (media(sid="MZother"), "stream id"),
        (media()[:-1], "JSON"),
        (media() + b"x", "JSON"),
        (media().replace(b'"payload":"', b'"payload": "'), None),  # spacing: full parse, valid
        (media().replace(B64.encode(), B64.encode()[:-4] + b'\\"AA'), "base64"),
        (media().replace(b"inbound", b"in\\u0062ound"), None),  # an escape: full parse, valid
    ],
)
def test_anything_unusual_goes_to_the_full_parser(data: bytes, error: str | None) -> None:
    fast = started()
    last = fast.last_sequence
    assert fast.media_audio(data) is None
    assert fast.last_sequence == last  # nothing changed before the full parser runs
    if error is None:
        assert isinstance(fast.receive_text(data), MediaReceived)
    else:
        with pytest.raises(RemoteProtocolError, match=error):
            fast.receive_text(data)


def test_no_fast_path_outside_streaming() -> None:
    idle = TwilioCodec()
    assert idle.media_audio(media()) is None
    with pytest.raises(RemoteProtocolError, match="idle"):
        idle.receive_text(media())
    codec = started()
    codec.receive_text(b'{"event":"stop","sequenceNumber":"3","streamSid":"' + SID.encode() + b'"}')
    assert codec.media_audio(media()) is None
    with pytest.raises(RemoteProtocolError, match="stopped"):
        codec.receive_text(media())


def test_a_stream_id_that_needs_escaping_still_matches_exactly() -> None:
    sid = 'MZ"é/'
    codec = started(sid=sid)
    data = json.dumps(
        {
            "event": "media",
            "sequenceNumber": "2",
            "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": B64},
            "streamSid": sid,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert codec.media_audio(data) == AUDIO
    assert codec.media_audio(media(sid="MZ")) is None


digits = st.from_regex(r"[0-9]{1,20}", fullmatch=True)
fields = st.one_of(digits, st.sampled_from(["", "-1", "1.5", "+2", "\u0661", " 1"]))
payloads = st.one_of(
    st.binary(min_size=0, max_size=40).map(lambda b: base64.b64encode(b).decode()),
    st.text(alphabet='ABCabc019+/=\\" é', max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seq=fields,
    chunk=fields,
    timestamp=fields,
    payload=payloads,
    sid=st.sampled_from([SID, "MZ", SID + "x"]),
    track=st.sampled_from(["inbound", "outbound", "", "IN", "in bound"]),
)
def test_property_same_result_as_the_full_parser(
    seq: str, chunk: str, timestamp: str, payload: str, sid: str, track: str
) -> None:
    data = media(seq, chunk, timestamp, payload, sid, track)
    expected = outcome(started(FullParseTwilio), data)
    assert outcome(started(), data) == expected
    fast = started()
    got = session_outcome(fast, data)
    want = expected[0].payload if isinstance(expected[0], MediaReceived) else expected[0]
    assert got == (want, *expected[1:4])


@FUZZ
@given(data=st.data())
def test_property_mutated_bytes(data: st.DataObject) -> None:
    message = bytearray(media(seq="12", chunk="4", timestamp="60"))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(message) - 1))
        message[at] = data.draw(st.integers(0, 255))
    raw = bytes(message)
    assert outcome(started(), raw) == outcome(started(FullParseTwilio), raw)


def mark(name: str = "h1.2", seq: str = "5", sid: str = SID) -> bytes:
    """A mark echo exactly as Twilio sends it."""
    msg = {"event": "mark", "sequenceNumber": seq, "streamSid": sid, "mark": {"name": name}}
    return json.dumps(msg, separators=(",", ":")).encode()


def mark_outcome(codec: TwilioCodec, data: bytes) -> tuple[Any, ...]:
    """As a carrier session feeds it: the mark fast path first, the full parser for the rest."""
    fast = codec.mark_echo(data)
    if fast is not None:
        return MarkEchoed(*fast), codec.state, codec.last_sequence, codec.sequence_gaps
    return outcome(codec, data)[:4]


def test_mark_echoes_resolve_pending_and_flushed_marks_as_the_full_parser() -> None:
    fast, full = started(), started(FullParseTwilio)
    for codec in (fast, full):
        for name in ("h1.1", "h1.2", "h1.3"):
            codec.mark(name)
        codec.clear()
        codec.mark("h2.1")
    echoes = [("h1.2", "3"), ("h2.1", "4"), ("never sent", "9"), ("h1.1", "6")]
    got = [fast.mark_echo(mark(name, seq)) or ("", False) for name, seq in echoes]
    assert got == [("h1.2", True), ("h2.1", False), ("never sent", False), ("h1.1", True)]
    assert [full.receive_text(mark(name, seq)) for name, seq in echoes] == [
        MarkEchoed(name, cleared) for name, cleared in got
    ]
    assert fast.pending_marks == full.pending_marks == ()
    assert (fast.last_sequence, fast.sequence_gaps, fast.sequence_reorders) == (
        full.last_sequence,
        full.sequence_gaps,
        full.sequence_reorders,
    )


@pytest.mark.parametrize(
    "data",
    [
        mark(name=""),
        mark(name="a" * 257),
        mark(name='say "hi"'),
        mark(name="back\\slash"),
        mark(name="caf\u00e9"),
        mark(seq="-1"),
        mark(seq="1" * 19),
        mark(sid="MZother"),
        mark().replace(b'"name":"', b'"name": "'),
        mark()[:-1],
        mark() + b" ",
    ],
)
def test_unusual_mark_echoes_go_to_the_full_parser(data: bytes) -> None:
    fast = started()
    assert fast.mark_echo(data) is None
    assert fast.last_sequence == 1  # nothing changed
    assert outcome(fast, data) == outcome(started(FullParseTwilio), data)


def test_no_mark_fast_path_outside_streaming() -> None:
    assert TwilioCodec().mark_echo(mark()) is None
    codec = started()
    codec.receive_text(b'{"event":"stop","sequenceNumber":"3","streamSid":"' + SID.encode() + b'"}')
    assert codec.mark_echo(mark()) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.text(max_size=12) | st.sampled_from(["h1.2", "h1.end", " ", "~!#[]"]),
    seq=fields,
    sid=st.sampled_from([SID, "MZ"]),
    sent=st.lists(st.sampled_from(["h1.2", "h1.end", " ", "x"]), max_size=3),
    cleared=st.booleans(),
)
def test_property_mark_echo_same_result_as_the_full_parser(
    name: str, seq: str, sid: str, sent: list[str], cleared: bool
) -> None:
    fast, full = started(), started(FullParseTwilio)
    for codec in (fast, full):
        for each in sent:
            codec.mark(each)
        if cleared:
            codec.clear()
    data = mark(name, seq, sid)
    assert mark_outcome(fast, data) == outcome(full, data)[:4]
    assert fast.pending_marks == full.pending_marks


@FUZZ
@given(data=st.data())
def test_property_mutated_mark_bytes(data: st.DataObject) -> None:
    message = bytearray(mark("h3.7", "12"))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(message) - 1))
        message[at] = data.draw(st.integers(0, 255))
    raw = bytes(message)
    assert mark_outcome(started(), raw) == outcome(started(FullParseTwilio), raw)[:4]
