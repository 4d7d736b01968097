"""SDP offer/answer (RFC 4317 examples) and RTP headers (wraparound, options), with fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.errors import LocalProtocolError, RemoteProtocolError
from harken.protocols.rtp import build_rtp, is_rtcp, parse_rtp
from harken.protocols.sdp import answer_sdp, negotiate, offer_sdp, parse_sdp

# RFC 4317 section 2.1 (audio and video 1): Alice's offer
RFC4317_2_1 = """v=0
o=alice 2890844526 2890844526 IN IP4 host.atlanta.example.com
s=
c=IN IP4 host.atlanta.example.com
t=0 0
m=audio 49170 RTP/AVP 0 8 97
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:97 iLBC/8000
m=video 51372 RTP/AVP 31 32
a=rtpmap:31 H261/90000
a=rtpmap:32 MPV/90000
"""

# what sipp's uac_pcap offers
SIPP = (
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n"
)


def test_rfc4317_audio_and_video_answer() -> None:
    offer = parse_sdp(RFC4317_2_1.encode())
    plan = negotiate(offer)
    assert plan is not None
    assert (plan.payload_type, plan.encoding, plan.dtmf_payload_type) == (0, "mulaw", None)
    assert (plan.remote_address, plan.remote_port, plan.direction) == (
        "host.atlanta.example.com",
        49170,
        "sendrecv",
    )
    answer = answer_sdp(offer, plan, address="192.0.2.5", port=20000, session_id=7, version=1)
    assert answer.decode().split("\r\n") == [
        "v=0",
        "o=harken 7 1 IN IP4 192.0.2.5",
        "s=harken",
        "c=IN IP4 192.0.2.5",
        "t=0 0",
        "m=audio 20000 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "a=ptime:20",
        "a=sendrecv",
        "m=video 0 RTP/AVP 31",  # rejected, as RFC 3264 asks: same m-lines, port 0
        "",
    ]


def test_sipp_offer_keeps_its_payload_numbers() -> None:
    offer = parse_sdp(SIPP.encode())
    plan = negotiate(offer)
    assert plan is not None
    assert (plan.payload_type, plan.encoding, plan.dtmf_payload_type) == (8, "alaw", 101)
    answer = answer_sdp(offer, plan, address="127.0.0.1", port=20002, session_id=1, version=1)
    text = answer.decode()
    assert "m=audio 20002 RTP/AVP 8 101\r\n" in text
    assert "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n" in text
    assert "a=ptime:20\r\n" in text and "a=sendrecv\r\n" in text
    again = parse_sdp(answer)  # our answer is itself valid SDP that names the same stream
    assert negotiate(again) == negotiate(again)


def test_offerer_preference_order_and_dynamic_g711() -> None:
    offer = parse_sdp(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 18 96 0\na=rtpmap:96 PCMA/8000\na=rtpmap:18 G729/8000\n"
    )
    plan = negotiate(offer)
    assert plan is not None and (plan.payload_type, plan.encoding) == (96, "alaw")
    assert negotiate(offer, ("mulaw",)) is not None  # static 0 still there
    assert negotiate(offer, ("mulaw",)).payload_type == 0  # type: ignore[union-attr]


def test_no_common_codec_is_none() -> None:
    offer = parse_sdp(
        "v=0\no=- 1 1 IN IP4 10.0.0.1\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n"
        "m=audio 4000 RTP/AVP 18 9\na=rtpmap:18 G729/8000\na=rtpmap:9 G722/8000\n"
    )
    assert negotiate(offer) is None
    srtp = parse_sdp(SIPP.replace("RTP/AVP", "RTP/SAVP"))
    assert negotiate(srtp) is None


@pytest.mark.parametrize(
    ("attr", "ours", "sends"),
    [
        ("a=sendonly", "recvonly", False),
        ("a=recvonly", "sendonly", True),
        ("a=inactive", "inactive", False),
        ("a=sendrecv", "sendrecv", True),
    ],
)
def test_direction_mirrors_the_offer(attr: str, ours: str, sends: bool) -> None:
    plan = negotiate(parse_sdp(SIPP + attr + "\r\n"))
    assert plan is not None and plan.direction == ours and plan.sends is sends


def test_hold_by_zero_address() -> None:
    plan = negotiate(parse_sdp(SIPP.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0")))
    assert plan is not None and not plan.sends


def test_offer_we_make() -> None:
    offer = parse_sdp(offer_sdp(address="::1", port=20010, session_id=3, version=1))
    assert offer.connection == "::1"
    assert offer.media[0].rtpmap == {
        0: ("PCMU", 8000),
        8: ("PCMA", 8000),
        101: ("TELEPHONE-EVENT", 8000),
    }


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "o=- 1 1 IN IP4 h\n",  # no v=0 first
        "v=0\ns=-\nm=audio 1 RTP/AVP 0\n",  # no origin
        "v=0\no=- 1 x IN IP4 h\n",
        "v=0\no=- 1 1 IN IP4 h\nm=audio 70000 RTP/AVP 0\n",
        "v=0\no=- 1 1 IN IP4 h\nm=audio 1 RTP/AVP 0 300\n",
        "v=0\no=- 1 1 IN IP4 h\nc=IN IPX h\n",
        "v=0\no=- 1 1 IN IP4 h\nthis is not sdp\n",
        "v=0\no=- 1 1 IN IP4 h\nm=audio 4\u00b2 RTP/AVP 0\n",  # isdigit() but not int()
    ],
)
def test_malformed_sdp(bad: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_sdp(bad.encode())


def test_audio_without_any_connection_address() -> None:
    offer = parse_sdp(SIPP.replace("c=IN IP4 127.0.0.1\r\n", ""))
    with pytest.raises(RemoteProtocolError, match="connection"):
        negotiate(offer)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(SIPP.split("\r\n") + RFC4317_2_1.split("\n")),
            st.text(max_size=30),
        ),
        max_size=16,
    )
)
def test_fuzz_sdp(lines: list[str]) -> None:
    try:
        offer = parse_sdp("\r\n".join(lines).encode("utf-8", "surrogatepass"))
        plan = negotiate(offer)
    except RemoteProtocolError:
        return
    if plan is not None:
        answer_sdp(offer, plan, address="127.0.0.1", port=20000, session_id=1, version=1)


# --- RTP ---------------------------------------------------------------------------------------


def test_rtp_round_trip_and_wraparound() -> None:
    data = build_rtp(8, 65535 + 2, (1 << 32) + 5, 0xDEADBEEF, b"\xd5" * 160, marker=True)
    pkt = parse_rtp(data)
    assert (pkt.payload_type, pkt.sequence, pkt.timestamp, pkt.ssrc, pkt.marker) == (
        8,
        1,
        5,
        0xDEADBEEF,
        True,
    )
    assert pkt.payload == b"\xd5" * 160 and len(data) == 172


def test_rtp_options() -> None:
    data = build_rtp(
        0,
        7,
        160,
        1,
        b"abc",
        csrcs=(10, 11),
        extension=(0xBEDE, b"\x10\x01\x00\x00"),
        padding=4,
    )
    pkt = parse_rtp(data)
    assert pkt.csrcs == (10, 11)
    assert pkt.extension == (0xBEDE, b"\x10\x01\x00\x00")
    assert pkt.padding == 4 and pkt.payload == b"abc"
    with pytest.raises(LocalProtocolError):
        build_rtp(0, 1, 1, 1, b"", extension=(1, b"odd"))


@pytest.mark.parametrize(
    "bad",
    [
        b"\x80\x00",
        b"\x40" + bytes(11),  # version 1
        b"\x83" + bytes(11),  # 3 CSRCs announced, none there
        b"\x90" + bytes(11) + b"\x00\x00\x00\x09",  # 9-word extension, none there
        b"\xa0" + bytes(11) + b"\x00",  # padding count 0
        b"\xa0" + bytes(11) + b"\x40",  # padding longer than the packet
    ],
)
def test_malformed_rtp(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_rtp(bad)


def test_rtcp_is_told_apart() -> None:
    assert is_rtcp(b"\x80\xc8" + bytes(26))  # sender report, PT 200
    assert not is_rtcp(build_rtp(0, 1, 1, 1, b"x"))
    assert not is_rtcp(build_rtp(72, 1, 1, 1, b"x"))  # PT 72 without marker: not 200


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=80))
def test_fuzz_rtp(data: bytes) -> None:
    try:
        pkt = parse_rtp(data)
    except RemoteProtocolError:
        return
    assert len(pkt.payload) <= len(data) - 12
