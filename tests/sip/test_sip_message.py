"""SIP message parsing and building: RFC 3665 golden messages, header forms, and fuzzing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.errors import RemoteProtocolError
from harken.protocols.sip import (
    SipRequest,
    SipResponse,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
)

CRLF = "\r\n"

# RFC 3665 section 3.1, F1 (Alice's INVITE, with its 151-byte SDP)
F1_SDP = CRLF.join(
    [
        "v=0",
        "o=alice 2890844526 2890844526 IN IP4 client.atlanta.example.com",
        "s=-",
        "c=IN IP4 192.0.2.101",
        "t=0 0",
        "m=audio 49172 RTP/AVP 0",
        "a=rtpmap:0 PCMU/8000",
        "",
    ]
)
F1 = (
    CRLF.join(
        [
            "INVITE sip:bob@biloxi.example.com SIP/2.0",
            "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
            "Max-Forwards: 70",
            "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
            "To: Bob <sip:bob@biloxi.example.com>",
            "Call-ID: 3848276298220188511@atlanta.example.com",
            "CSeq: 1 INVITE",
            "Contact: <sip:alice@client.atlanta.example.com;transport=tcp>",
            "Content-Type: application/sdp",
            "Content-Length: 151",
            "",
            F1_SDP,
        ]
    )
).encode()

# RFC 3665 section 3.1, F2 (Bob's 180 Ringing)
F2 = CRLF.join(
    [
        "SIP/2.0 180 Ringing",
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9;received=192.0.2.101",
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
        "To: Bob <sip:bob@biloxi.example.com>;tag=8321234356",
        "Call-ID: 3848276298220188511@atlanta.example.com",
        "CSeq: 1 INVITE",
        "Contact: <sip:bob@client.biloxi.example.com;transport=tcp>",
        "Content-Length: 0",
        "",
        "",
    ]
).encode()


def test_rfc3665_invite_parses() -> None:
    assert len(F1_SDP) == 151  # the RFC's Content-Length
    msg = parse_message(F1)
    assert isinstance(msg, SipRequest)
    assert (msg.method, msg.uri) == ("INVITE", "sip:bob@biloxi.example.com")
    assert msg.call_id == "3848276298220188511@atlanta.example.com"
    assert msg.cseq == (1, "INVITE")
    via = msg.top_via
    assert (via.transport, via.host, via.port, via.branch) == (
        "TCP",
        "client.atlanta.example.com",
        5060,
        "z9hG4bK74bf9",
    )
    frm = parse_name_addr(msg.headers.get("From") or "")
    assert (frm.display, frm.uri, frm.tag) == (
        "Alice",
        "sip:alice@atlanta.example.com",
        "9fxced76sl",
    )
    assert parse_name_addr(msg.headers.get("To") or "").tag == ""
    contact = parse_uri(parse_name_addr(msg.headers.get("Contact") or "").uri)
    assert (contact.user, contact.host, contact.params) == (
        "alice",
        "client.atlanta.example.com",
        {"transport": "tcp"},
    )
    assert msg.body == F1_SDP.encode()


def test_rfc3665_ringing_round_trips() -> None:
    msg = parse_message(F2)
    assert isinstance(msg, SipResponse)
    assert (msg.status, msg.reason) == (180, "Ringing")
    assert msg.top_via.params["received"] == "192.0.2.101"
    assert parse_name_addr(msg.headers.get("To") or "").tag == "8321234356"
    assert msg.encode() == F2


def test_response_to_copies_the_dialog_headers_and_adds_the_tag() -> None:
    request = parse_message(F1)
    assert isinstance(request, SipRequest)
    response = response_to(
        request,
        180,
        to_tag="8321234356",
        headers=[("Contact", "<sip:bob@client.biloxi.example.com;transport=tcp>")],
        source=("192.0.2.101", 5060),
    )
    # the same bytes as the RFC's F2: Via gained received=, To gained our tag
    assert response.encode() == F2
    trying = response_to(request, 100, to_tag="8321234356")
    assert parse_name_addr(trying.headers.get("To") or "").tag == ""  # never on a 100


def test_rport_is_filled_in() -> None:
    raw = F1.replace(b"branch=z9hG4bK74bf9", b"branch=z9hG4bK74bf9;rport")
    request = parse_message(raw)
    assert isinstance(request, SipRequest)
    response = response_to(request, 200, source=("198.51.100.9", 40000))
    via = parse_via(response.headers.get("Via") or "")
    assert via.params["rport"] == "40000"
    assert via.params["received"] == "198.51.100.9"


def test_compact_forms_folding_and_case() -> None:
    raw = CRLF.join(
        [
            "OPTIONS sip:harken@example.com SIP/2.0",
            "v: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds",
            "f: <sip:a@example.com>;tag=1928301774",
            "t: <sip:harken@example.com>",
            "i: a84b4c76e66710@pc33.example.com",
            "CSEQ: 63104 OPTIONS",
            "Subject: a long",
            "  folded",
            "\tsubject",
            "l: 0",
            "",
            "",
        ]
    ).encode()
    msg = parse_message(raw)
    assert isinstance(msg, SipRequest)
    assert msg.headers.get("Via") == "SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds"
    assert msg.headers.get("call-id") == "a84b4c76e66710@pc33.example.com"
    assert msg.headers.get("Subject") == "a long folded subject"
    assert msg.cseq == (63104, "OPTIONS")


def test_multiple_vias_in_one_header_and_several() -> None:
    raw = F1.replace(
        b"Max-Forwards: 70",
        b"Via: SIP/2.0/UDP proxy.example.com;branch=z9hG4bKa, SIP/2.0/UDP [2001:db8::1]:5070"
        b";branch=z9hG4bKb\r\nMax-Forwards: 70",
    )
    msg = parse_message(raw)
    vias = [parse_via(v) for v in msg.headers.get_all("Via")]
    assert [v.host for v in vias] == [
        "client.atlanta.example.com",
        "proxy.example.com",
        "[2001:db8::1]",
    ]
    assert vias[2].port == 5070
    response = response_to(msg, 200)  # type: ignore[arg-type]
    assert response.headers.get_all("Via") == msg.headers.get_all("Via")


def test_content_length_cuts_padding_and_catches_truncation() -> None:
    padded = parse_message(F1 + b"\r\n\r\n")
    assert padded.body == F1_SDP.encode()
    with pytest.raises(RemoteProtocolError, match="truncated"):
        parse_message(F1[:-10])
    no_length = parse_message(F1.replace(b"Content-Length: 151\r\n", b""))
    assert no_length.body == F1_SDP.encode()  # UDP: the rest of the datagram


def test_bare_lf_is_tolerated() -> None:
    head, body = F1.split(b"\r\n\r\n", 1)
    msg = parse_message(head.replace(b"\r\n", b"\n") + b"\n\n" + body)
    assert isinstance(msg, SipRequest)
    assert msg.cseq == (1, "INVITE")
    assert msg.body == F1_SDP.encode()


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "empty"),
        (b"INVITE sip:x SIP/3.0\r\n\r\n", "version"),
        (b"HELLO\r\n\r\n", "start line"),
        (F1.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "CSeq method"),
        (F1.replace(b"CSeq: 1 INVITE", b"CSeq: x INVITE"), "CSeq"),
        (F1.replace(b"Call-ID: ", b"X-Call-ID: "), "without Call-ID"),
        (F1.replace(b"Via: SIP/2.0/TCP", b"Via: HTTP/1.1/TCP"), "Via"),
        (F1.replace(b"Max-Forwards: 70", b"Max Forwards 70"), "header line"),
        (F1.replace(b"Content-Length: 151", b"Content-Length: -1"), "Content-Length"),
        (b"SIP/2.0 999x OK\r\n\r\n", "status"),
        (b"\xff\xfe" + F1, "start line|UTF-8"),
        (F1.replace(b"From: Alice <sip", b"From: Alice sip"), "address|URI"),
    ],
)
def test_malformed_messages_raise_remote_protocol_error(raw: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        parse_message(raw)


def test_value_parsers() -> None:
    assert parse_cseq("4711 INVITE") == (4711, "INVITE")
    with pytest.raises(RemoteProtocolError):
        parse_cseq("99999999999 INVITE")
    addr = parse_name_addr('"Bob, the \\"builder\\"" <sip:bob@b.example.com;lr>;tag=x;expires=60')
    assert addr.display == 'Bob, the \\"builder\\"'
    assert addr.uri == "sip:bob@b.example.com;lr"
    assert addr.params == {"tag": "x", "expires": "60"}
    bare = parse_name_addr("sip:carol@c.example.com;tag=7")
    assert (bare.uri, bare.tag) == ("sip:carol@c.example.com", "7")
    uri = parse_uri("sips:alice:secret@[2001:db8::9]:5061;transport=tls?subject=hi")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("sips", "alice", "[2001:db8::9]", 5061)
    assert str(uri) == "sips:alice@[2001:db8::9]:5061;transport=tls?subject=hi"
    with pytest.raises(RemoteProtocolError):
        parse_uri("tel:+15551234")
    with pytest.raises(RemoteProtocolError):
        parse_via("SIP/2.0/UDP host:99999")
    for unicode_digits in ("\u00b9 INVITE", "1\u00b2 INVITE"):  # isdigit() but not int()
        with pytest.raises(RemoteProtocolError):
            parse_cseq(unicode_digits)
    with pytest.raises(RemoteProtocolError):
        parse_via("SIP/2.0/UDP host:5\u00b2")


def test_request_builds_with_content_length() -> None:
    request = parse_message(F1)
    assert isinstance(request, SipRequest)
    request.headers.set("Content-Length", "1")  # always rewritten from the body
    again = parse_message(request.encode())
    assert again.body == request.body
    assert again.headers.get("Content-Length") == "151"


# --- fuzzing: garbage never raises anything but RemoteProtocolError ---------------------------

_LINES = st.sampled_from(
    [
        b"INVITE sip:a@b SIP/2.0",
        b"SIP/2.0 200 OK",
        b"Via: SIP/2.0/UDP h;branch=z9hG4bKx",
        b"v: SIP/2.0/UDP [::1]:5;rport",
        b"From: <sip:a@b>;tag=1",
        b'To: "x" <sip:c@d>',
        b"Call-ID: 1",
        b"CSeq: 1 INVITE",
        b"Content-Length: 3",
        b"l: 99",
        b"Contact: *",
        b" folded",
        b"",
        b"\xc3\x28",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except RemoteProtocolError:
        return
    assert isinstance(msg, SipRequest | SipResponse)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_LINES, st.binary(max_size=40)), max_size=14), st.binary(max_size=20))
def test_fuzz_message_shaped_input(lines: list[bytes], body: bytes) -> None:
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    try:
        msg = parse_message(data)
    except RemoteProtocolError:
        return
    msg.encode()  # whatever parsed can be written back
    if isinstance(msg, SipRequest):
        response_to(msg, 400, "Bad Request", to_tag="t")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_fuzz_value_parsers(text: str) -> None:
    for parse in (parse_via, parse_name_addr, parse_uri, parse_cseq):
        with contextlib.suppress(RemoteProtocolError):
            parse(text)  # type: ignore[operator]
