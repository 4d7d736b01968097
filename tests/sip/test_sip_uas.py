"""The SIP UAS state machine, sans-I/O: transactions, timers, dialogs (simulated clock)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.protocols.sip import SipRequest, SipResponse, parse_message, parse_name_addr
from harken.protocols.sip_uas import (
    CallCancelled,
    CallConfirmed,
    CallEnded,
    DtmfInfo,
    IncomingCall,
    Output,
    Send,
    SessionOffer,
    SipUas,
)

PEER = ("192.0.2.10", 5062)
T1 = 0.5
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def request(
    method: str,
    *,
    branch: str = "z9hG4bK-1",
    cseq: int = 1,
    to_tag: str = "",
    body: bytes = b"",
    call_id: str = "call-1@192.0.2.10",
    cseq_method: str | None = None,
    extra: str = "",
) -> bytes:
    to = "<sip:harken@192.0.2.1>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:harken@192.0.2.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Caller" <sip:+15551234@192.0.2.10>;tag=caller1\r\n'
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:caller@192.0.2.10:5062>\r\n"
        f"{extra}"
    )
    if body:
        head += "Content-Type: application/sdp\r\n"
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def sent(out: list[Output]) -> list[SipResponse | SipRequest]:
    return [parse_message(o.data) for o in out if isinstance(o, Send)]


def statuses(out: list[Output]) -> list[int | str]:
    return [m.status if isinstance(m, SipResponse) else m.method for m in sent(out)]


def events(out: list[Output]) -> list[object]:
    return [o for o in out if not isinstance(o, Send)]


@pytest.fixture
def ua() -> SipUas:
    counter = itertools.count(1)
    return SipUas(
        "192.0.2.1",
        5060,
        t1=T1,
        tags=lambda: f"tag{next(counter)}",
        branches=lambda: f"z9hG4bKbye{next(counter)}",
    )


def invite(ua: SipUas, now: float = 0.0) -> str:
    out = ua.receive(request("INVITE", body=SDP), PEER, now)
    assert statuses(out) == [100]
    (incoming,) = events(out)
    assert isinstance(incoming, IncomingCall) and incoming.request.body == SDP
    return incoming.handle


def ack(ua: SipUas, handle: str, now: float, cseq: int = 1, body: bytes = b"") -> list[Output]:
    data = request("ACK", branch="z9hG4bK-ack", cseq=cseq, to_tag=handle, body=body)
    return ua.receive(data, PEER, now)


def test_invite_trying_ringing_ok_ack(ua: SipUas) -> None:
    handle = invite(ua)
    ringing = sent(ua.ringing(handle))
    assert [r.status for r in ringing] == [180]  # type: ignore[union-attr]
    assert parse_name_addr(ringing[0].headers.get("To") or "").tag == handle
    out = ua.answer(handle, b"v=0 answer", 0.01)
    (ok,) = sent(out)
    assert isinstance(ok, SipResponse) and ok.status == 200 and ok.body == b"v=0 answer"
    assert ok.headers.get("Content-Type") == "application/sdp"
    assert ok.headers.get("Contact") == "<sip:harken@192.0.2.1:5060>"
    assert "rport=5062" in (ok.headers.get("Via") or "")  # RFC 3581
    assert events(ack(ua, handle, 0.02)) == [CallConfirmed(handle, b"")]
    assert ua.poll(10.0) == []  # nothing retransmitted after the ACK


def test_200_retransmits_with_t1_doubling_until_ack(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    times = []
    now = 0.0
    while now < 5.0:
        deadline = ua.next_deadline()
        assert deadline is not None
        now = deadline
        out = ua.poll(now)
        if statuses(out) == [200]:
            times.append(round(now, 3))
    assert times == [0.5, 1.5, 3.5, 7.5]  # intervals T1, 2*T1, 4*T1, 8*T1 (= T2, the cap)
    assert events(ack(ua, handle, now)) == [CallConfirmed(handle, b"")]
    assert all(statuses(ua.poll(t)) == [] for t in (8.0, 12.0, 20.0))


def test_no_ack_after_64_t1_sends_bye(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    resent = 0
    ended: list[object] = []
    byes: list[SipRequest] = []
    now = 0.0
    while not ended:
        deadline = ua.next_deadline()
        assert deadline is not None and deadline <= 64 * T1 + 1e-9
        now = deadline
        out = ua.poll(now)
        resent += statuses(out).count(200)
        ended += [e for e in events(out) if isinstance(e, CallEnded)]
        byes += [m for m in sent(out) if isinstance(m, SipRequest)]
    assert now == pytest.approx(64 * T1)
    assert ended == [CallEnded(handle, "no-ack")]
    assert resent == 10  # 0.5, 1.5, 3.5, 7.5, 11.5, ... every T2 = 4 s until 32 s
    (bye,) = byes
    assert bye.method == "BYE" and bye.uri == "sip:caller@192.0.2.10:5062"
    assert parse_name_addr(bye.headers.get("From") or "").tag == handle
    assert parse_name_addr(bye.headers.get("To") or "").tag == "caller1"
    assert bye.cseq == (1, "BYE")


def test_invite_retransmission_is_absorbed(ua: SipUas) -> None:
    handle = invite(ua)
    again = ua.receive(request("INVITE", body=SDP), PEER, 0.3)
    assert statuses(again) == [100] and events(again) == []
    ua.answer(handle, b"sdp", 0.4)
    late = ua.receive(request("INVITE", body=SDP), PEER, 0.45)
    assert statuses(late) == [200] and events(late) == []


def test_cancel_before_answer_gets_200_and_487(ua: SipUas) -> None:
    handle = invite(ua)
    ua.ringing(handle)
    out = ua.receive(request("CANCEL", cseq_method="CANCEL"), PEER, 1.0)
    assert statuses(out) == [200, 487]
    responses = sent(out)
    assert responses[0].cseq == (1, "CANCEL") and responses[1].cseq == (1, "INVITE")
    assert events(out) == [CallCancelled(handle)]
    assert ua.answer(handle, b"sdp", 1.1) == []  # too late: the INVITE is finished
    assert statuses(ua.poll(1.5)) == [487]  # timer G until the ACK
    assert ua.receive(request("ACK", to_tag=handle), PEER, 1.6) == []
    assert ua.poll(3.0) == []


def test_cancel_after_answer_and_unknown_cancel(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.1)
    out = ua.receive(request("CANCEL", cseq_method="CANCEL"), PEER, 0.2)
    assert statuses(out) == [200] and events(out) == []
    stray = ua.receive(request("CANCEL", branch="z9hG4bK-none"), PEER, 0.3)
    assert statuses(stray) == [481]


def test_reject_488_retransmits_until_ack(ua: SipUas) -> None:
    handle = invite(ua)
    out = ua.reject(handle, 488, 0.0)
    assert statuses(out) == [488]
    assert handle not in ua.dialogs
    assert statuses(ua.poll(0.5)) == [488]
    assert ua.receive(request("ACK", to_tag=handle), PEER, 0.6) == []
    assert ua.poll(1.5) == []


def test_bye_ends_the_call(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    ack(ua, handle, 0.01)
    out = ua.receive(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=handle), PEER, 5.0)
    assert statuses(out) == [200] and events(out) == [CallEnded(handle, "bye")]
    again = ua.receive(request("BYE", branch="z9hG4bK-bye", cseq=2, to_tag=handle), PEER, 5.2)
    assert statuses(again) == [200] and events(again) == []  # the transaction answers
    unknown = ua.receive(request("BYE", branch="z9hG4bK-x", cseq=3, to_tag=handle), PEER, 6)
    assert statuses(unknown) == [481]


def test_our_bye_retransmits_until_answered(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    ack(ua, handle, 0.01)
    (bye,) = sent(ua.hangup(handle, 1.0))
    assert isinstance(bye, SipRequest) and bye.method == "BYE"
    assert [m.method for m in sent(ua.poll(1.5))] == ["BYE"]  # type: ignore[union-attr]
    branch = bye.top_via.branch
    ok = (
        "SIP/2.0 200 OK\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\n"
        f"From: <sip:harken@192.0.2.1>;tag={handle}\r\nTo: <sip:x@y>;tag=caller1\r\n"
        "Call-ID: call-1@192.0.2.10\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    assert ua.receive(ok, PEER, 1.6) == []
    assert ua.poll(5.0) == [] and handle not in ua.dialogs


def test_hangup_before_the_ack_waits_for_it(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    assert ua.hangup(handle, 0.1) == []  # RFC 3261 15: no BYE before the ACK
    out = ack(ua, handle, 0.2)
    assert CallConfirmed(handle, b"") in events(out)
    assert [m.method for m in sent(out)] == ["BYE"]  # type: ignore[union-attr]


def test_hangup_before_answer_is_480(ua: SipUas) -> None:
    handle = invite(ua)
    assert statuses(ua.hangup(handle, 0.1)) == [480]


def test_options_and_unknown_methods(ua: SipUas) -> None:
    (opt,) = sent(ua.receive(request("OPTIONS", branch="z9hG4bK-o"), PEER, 0))
    assert isinstance(opt, SipResponse) and opt.status == 200
    assert "INVITE" in (opt.headers.get("Allow") or "")
    assert parse_name_addr(opt.headers.get("To") or "").tag  # a tag on a final response
    assert statuses(ua.receive(request("REGISTER", branch="z9hG4bK-r"), PEER, 0)) == [405]
    assert statuses(ua.receive(request("FROBNICATE", branch="z9hG4bK-f"), PEER, 0)) == [501]


def test_reinvite_is_an_offer_to_answer(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    ack(ua, handle, 0.01)
    out = ua.receive(
        request("INVITE", branch="z9hG4bK-re", cseq=2, to_tag=handle, body=SDP), PEER, 2
    )
    assert events(out) == [SessionOffer(handle, SDP)]
    assert statuses(ua.answer_offer(handle, 200, b"same sdp", 2.01)) == [200]
    assert statuses(ua.poll(2.6)) == [200]  # retransmitted until its ACK
    ack(ua, handle, 2.7, cseq=2)
    assert ua.poll(4.0) == []
    out = ua.receive(
        request("INVITE", branch="z9hG4bK-re3", cseq=3, to_tag=handle, body=SDP), PEER, 5
    )
    assert statuses(ua.answer_offer(handle, 488, b"", 5.01)) == [488]
    old = ua.receive(request("INVITE", branch="z9hG4bK-old", cseq=1, to_tag=handle), PEER, 6)
    assert statuses(old) == [500]  # CSeq out of order


def test_require_and_content_type_are_checked(ua: SipUas) -> None:
    out = ua.receive(request("INVITE", body=SDP, extra="Require: 100rel\r\n"), PEER, 0)
    assert statuses(out) == [420]
    assert "100rel" in (sent(out)[0].headers.get("Unsupported") or "")
    text = request("INVITE", branch="z9hG4bK-t", body=b"hello").replace(
        b"application/sdp", b"text/plain"
    )
    assert statuses(ua.receive(text, PEER, 0)) == [415]


def test_merged_request_is_a_loop(ua: SipUas) -> None:
    invite(ua)
    out = ua.receive(request("INVITE", branch="z9hG4bK-other", body=SDP), PEER, 0.1)
    assert statuses(out) == [482]


def test_info_dtmf(ua: SipUas) -> None:
    handle = invite(ua)
    ua.answer(handle, b"sdp", 0.0)
    ack(ua, handle, 0.01)
    body = b"Signal=5\r\nDuration=160\r\n"
    data = request("INFO", branch="z9hG4bK-i", cseq=2, to_tag=handle).replace(
        b"Content-Length: 0\r\n\r\n",
        b"Content-Type: application/dtmf-relay\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
    )
    out = ua.receive(data, PEER, 1)
    assert statuses(out) == [200] and events(out) == [DtmfInfo(handle, "5", 160)]


def test_malformed_requests_get_400_or_nothing(ua: SipUas) -> None:
    bad_cseq = request("INVITE", body=SDP).replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE")
    assert statuses(ua.receive(bad_cseq, PEER, 0)) == [400]
    no_contact = request("INVITE", branch="z9hG4bK-nc", body=SDP).replace(
        b"Contact: <sip:caller@192.0.2.10:5062>\r\n", b""
    )
    assert statuses(ua.receive(no_contact, PEER, 0)) == [400]
    assert ua.receive(b"\x00\x01garbage", PEER, 0) == []
    assert ua.receive(b"\r\n\r\n", PEER, 0) == []  # keep-alive
    assert ua.malformed == 2  # the missing Contact is answered, not counted as malformed


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "FOO"]),
    st.integers(0, 7),
    st.text(max_size=40),
    st.binary(max_size=40),
)
def test_fuzz_receive_never_raises(method: str, line: int, junk: str, body: bytes) -> None:
    """Whatever one header becomes, ``receive`` answers or drops; it never raises."""
    ua = SipUas("192.0.2.1", 5060)
    lines = request(method, body=body).split(b"\r\n")
    lines[line] = junk.encode("utf-8", "surrogatepass")
    data = b"\r\n".join(lines)
    for t in (0.0, 0.1):
        for out in ua.receive(data, PEER, t):
            if isinstance(out, IncomingCall):
                ua.answer(out.handle, SDP, t)
    ua.poll(100.0)
