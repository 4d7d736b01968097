"""The records of the SIP user agent server (:mod:`harken.protocols.sip_uas`): the outputs it
returns (:class:`Send` and the call events), its transactions and dialogs, and the small helpers
that read requests for it (transaction keys, INFO digits, a 400 for a malformed request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from harken.errors import RemoteProtocolError

from .sip import (
    MAGIC_COOKIE,
    SipRequest,
    new_tag,
    parse_name_addr,
    parse_via,
    response_to,
    split_message,
)

__all__ = [
    "Addr",
    "CallCancelled",
    "CallConfirmed",
    "CallEnded",
    "Dialog",
    "DtmfInfo",
    "IncomingCall",
    "Output",
    "Send",
    "SessionOffer",
]

Addr = tuple[str, int]
_DIGITS: Final = "0123456789*#ABCD"


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts superscripts that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes
    addr: Addr


@dataclass(frozen=True, slots=True)
class IncomingCall:
    """A new INVITE (100 Trying already sent): ring, answer or reject ``handle``."""

    handle: str
    request: SipRequest
    source: Addr


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 200 arrived; ``body`` is its SDP (an answer to an offer we made)."""

    handle: str
    body: bytes


@dataclass(frozen=True, slots=True)
class CallCancelled:
    """The caller cancelled before we answered (200 and 487 already sent)."""

    handle: str


@dataclass(frozen=True, slots=True)
class SessionOffer:
    """A re-INVITE: answer it with :meth:`SipUas.answer_offer` (``body`` empty: no offer)."""

    handle: str
    body: bytes


@dataclass(frozen=True, slots=True)
class DtmfInfo:
    """A SIP INFO digit (``application/dtmf-relay`` or ``application/dtmf``)."""

    handle: str
    digit: str
    duration_ms: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """The call is over on the peer's side: ``"bye"`` or ``"no-ack"`` (we sent a BYE)."""

    handle: str
    reason: str


Output = Send | IncomingCall | CallConfirmed | CallCancelled | SessionOffer | DtmfInfo | CallEnded


@dataclass(slots=True)
class ServerTx:
    key: tuple[str, ...]
    method: str
    request: SipRequest
    source: Addr
    handle: str = ""
    state: str = "trying"  # trying | proceeding | completed | confirmed | accepted
    response: bytes | None = None
    retransmit_at: float | None = None
    interval: float = 0.0
    expires_at: float | None = None


@dataclass(slots=True)
class ClientTx:
    branch: str
    data: bytes
    dest: Addr
    handle: str
    retransmit_at: float
    interval: float
    expires_at: float


@dataclass(slots=True)
class Dialog:
    """One call's dialog, from our (the callee's) side."""

    handle: str  # our To tag
    call_id: str
    remote_tag: str
    local_party: str  # To value, with our tag: the From of our requests
    remote_party: str  # From value, with their tag: the To of our requests
    remote_target: str  # their Contact URI: the Request-URI of our requests
    route_set: list[str]
    remote_cseq: int
    flow: Addr
    invite_key: tuple[str, ...]
    merge_key: tuple[str, str, int]
    local_cseq: int = 0
    state: str = "early"  # early | confirmed | ended
    ok: bytes | None = None  # the 2xx being retransmitted until its ACK
    ok_cseq: int = 0
    ok_next: float = 0.0
    ok_interval: float = 0.0
    ok_deadline: float = 0.0
    reinvite: ServerTx | None = None
    bye_after_ack: bool = False


def tx_key(request: SipRequest, method: str) -> tuple[str, ...]:
    via = request.top_via
    branch = via.branch
    if branch.startswith(MAGIC_COOKIE):
        return (branch, via.sent_by.lower(), method)
    # RFC 2543 peers: no unique branch; match on the request's identity instead
    from_tag = parse_name_addr(request.headers.get("From") or "").tag
    return ("2543", request.call_id, from_tag, str(request.cseq[0]), via.sent_by, method)


def dtmf_from_info(request: SipRequest) -> tuple[str, int] | None:
    ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = request.body.decode("utf-8", "replace")
    if ctype == "application/dtmf":
        digit, duration = text.strip()[:1], 250
    elif ctype == "application/dtmf-relay":
        fields = {}
        for line in text.splitlines():
            k, _, v = line.partition("=")
            fields[k.strip().lower()] = v.strip()
        digit = fields.get("signal", "")[:1]
        dur = fields.get("duration", "250")
        duration = int(dur) if _digits(dur) and len(dur) < 7 else 250
    else:
        return None
    digit = digit.upper()
    if digit and digit in _DIGITS:
        return digit, duration
    return None


def bad_request(data: bytes, why: str, source: Addr) -> bytes | None:
    """A 400 for a request we could not accept, if it can be addressed at all."""
    try:
        start, headers, _ = split_message(data)
        method = start.split(" ", 1)[0]
        if method.upper() in ("SIP/2.0", "ACK") or not method:
            return None
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            if not headers.get(name):
                return None
        parse_via(headers.get("Via") or "")
        request = SipRequest(method, "sip:invalid", headers)
        response = response_to(
            request, 400, f"Bad Request ({why})", to_tag=new_tag(), source=source
        )
        return response.encode()
    except RemoteProtocolError:
        return None
