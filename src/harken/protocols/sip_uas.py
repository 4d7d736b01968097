"""A SIP user agent server over UDP (RFC 3261), sans-I/O: datagrams and time in, datagrams and
call events out.

The transport feeds every datagram with :meth:`SipUas.receive` and calls :meth:`SipUas.poll`
at :meth:`SipUas.next_deadline`; both return a list of outputs: :class:`Send` (a datagram to
send) and call events (:class:`IncomingCall`, :class:`CallConfirmed`, :class:`CallCancelled`,
:class:`SessionOffer`, :class:`DtmfInfo`, :class:`CallEnded`). The application answers events
with :meth:`ringing`, :meth:`answer`, :meth:`reject`, :meth:`answer_offer` and :meth:`hangup`.

What it does, by method:

=========  ==================================================================================
INVITE     100 Trying at once, then :class:`IncomingCall`; the application rings (180),
           answers (200 + SDP) or rejects (488, 503, ...). The 200 is retransmitted at T1,
           2*T1, ... (capped at T2) until the ACK; without an ACK after 64*T1 the call is ended
           with a BYE (:class:`CallEnded` ``"no-ack"``). A final non-2xx is retransmitted the
           same way until its ACK (timers G and H).
re-INVITE  :class:`SessionOffer`; the application answers (200 with SDP, or 488).
ACK        stops the 200's retransmission; the first one confirms the call.
CANCEL     before the final answer: 200 for the CANCEL, 487 for the INVITE,
           :class:`CallCancelled`; after it: 200 only; unknown: 481.
BYE        200 and :class:`CallEnded` ``"bye"``; outside a dialog: 481.
OPTIONS    200 with Allow / Accept.
INFO       200; ``application/dtmf-relay`` and ``application/dtmf`` become :class:`DtmfInfo`.
other      405 (with Allow) for SIP methods we do not serve, 501 for methods we do not know.
=========  ==================================================================================

Transactions follow RFC 3261 section 17.2 (with RFC 6026's "accepted" state): a retransmitted
request is answered with the last response and never reaches the application again. Responses
go back to the address the request came from (RFC 3581 ``rport`` semantics; ``received`` and
``rport`` are added to the top Via). In-dialog requests we send (BYE) go to the address the
INVITE came from, with the peer's Contact as Request-URI and its Record-Route as Route.

A malformed datagram never raises: it is answered ``400`` when enough of it can be read to
address a response, dropped otherwise, and counted in :attr:`SipUas.malformed`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from harken.errors import RemoteProtocolError

from .sip import (
    Headers,
    SipRequest,
    SipResponse,
    new_branch,
    new_tag,
    parse_message,
    parse_name_addr,
    response_to,
)
from .sip_dialog import (
    Addr,
    CallCancelled,
    CallConfirmed,
    CallEnded,
    ClientTx,
    Dialog,
    DtmfInfo,
    IncomingCall,
    Output,
    Send,
    ServerTx,
    SessionOffer,
    bad_request,
    dtmf_from_info,
    tx_key,
)

__all__ = [
    "ALLOW",
    "CallCancelled",
    "CallConfirmed",
    "CallEnded",
    "DtmfInfo",
    "IncomingCall",
    "Output",
    "Send",
    "SessionOffer",
    "SipUas",
]

ALLOW: Final = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO"
#: SIP methods of other RFCs, answered 405 (anything else is 501)
_KNOWN: Final = frozenset(
    ("REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "UPDATE", "REFER", "MESSAGE")
)
_SUPPORTED_EXTENSIONS: Final[frozenset[str]] = frozenset()
_MAX_TRANSACTIONS: Final = 20000


class SipUas:
    """The UAS state machine (see the module docstring)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        t1: float = 0.5,
        t2: float = 4.0,
        t4: float = 5.0,
        user_agent: str = "harken",
        tags: Callable[[], str] = new_tag,
        branches: Callable[[], str] = new_branch,
    ) -> None:
        self.host = host
        self.port = port
        self.t1, self.t2, self.t4 = t1, t2, t4
        self.user_agent = user_agent
        self._tags = tags
        self._branches = branches
        self.dialogs: dict[str, Dialog] = {}
        self._server: dict[tuple[str, ...], ServerTx] = {}
        self._client: dict[str, ClientTx] = {}
        self._merge: dict[tuple[str, str, int], str] = {}
        self._next: float | None = None
        self.malformed = 0
        self.retransmissions = 0
        self.dropped = 0

    @property
    def contact(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"<sip:harken@{host}:{self.port}>"

    # --- input -------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Addr, now: float) -> list[Output]:
        """One datagram from ``source`` at time ``now``."""
        if not data.strip(b"\r\n\t "):
            return []  # keep-alive
        try:
            message = parse_message(data)
            if isinstance(message, SipResponse):
                return self._on_response(message)
            return self._on_request(message, source, now)
        except RemoteProtocolError as exc:
            self.malformed += 1
            reply = bad_request(data, str(exc), source)
            return [Send(reply, source)] if reply is not None else []

    def _on_response(self, response: SipResponse) -> list[Output]:
        tx = self._client.get(response.top_via.branch)
        if tx is not None and response.status >= 200:
            del self._client[tx.branch]
            self._forget(tx.handle)
        return []

    def _on_request(self, request: SipRequest, source: Addr, now: float) -> list[Output]:
        method = request.method
        if method == "ACK":
            return self._on_ack(request, now)
        key = tx_key(request, method)
        tx = self._server.get(key)
        if tx is not None:  # a retransmission
            if tx.response is not None:
                self.retransmissions += 1
                return [Send(tx.response, source)]
            return []
        if len(self._server) >= _MAX_TRANSACTIONS:
            self.dropped += 1
            return []
        tx = ServerTx(key, method, request, source, expires_at=now + 64 * self.t1)
        self._server[key] = tx
        self._arm(tx.expires_at)
        try:
            return self._dispatch(tx, now)
        except RemoteProtocolError as exc:  # readable enough to answer, not to act on
            self.malformed += 1
            return self._final(tx, 400, now, reason=f"Bad Request ({exc})")

    def _dispatch(self, tx: ServerTx, now: float) -> list[Output]:
        request, method = tx.request, tx.method
        if method == "CANCEL":
            return self._on_cancel(tx, now)
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        if to_tag:
            return self._in_dialog(tx, to_tag, now)
        if method == "INVITE":
            return self._on_invite(tx, now)
        if method == "OPTIONS":
            return self._final(tx, 200, now, self._capabilities())
        if method in ("BYE", "INFO"):
            return self._final(tx, 481, now)
        if method in _KNOWN:
            return self._final(tx, 405, now, [("Allow", ALLOW)])
        return self._final(tx, 501, now, [("Allow", ALLOW)])

    def _capabilities(self) -> list[tuple[str, str]]:
        return [("Allow", ALLOW), ("Accept", "application/sdp"), ("Contact", self.contact)]

    def _on_invite(self, tx: ServerTx, now: float) -> list[Output]:
        request = tx.request
        h = request.headers
        from_tag = parse_name_addr(h.get("From") or "").tag
        merge_key = (request.call_id, from_tag, request.cseq[0])
        if merge_key in self._merge:  # the same INVITE by another path (RFC 3261 8.2.2.2)
            return self._final(tx, 482, now)
        unsupported = [r for r in h.get_all("Require") if r.lower() not in _SUPPORTED_EXTENSIONS]
        if unsupported:
            return self._final(tx, 420, now, [("Unsupported", ", ".join(unsupported))])
        ctype = (h.get("Content-Type") or "application/sdp").split(";")[0].strip().lower()
        if request.body and ctype != "application/sdp":
            return self._final(tx, 415, now, [("Accept", "application/sdp")])
        contact = h.get("Contact")
        if not contact:
            return self._final(tx, 400, now, reason="Missing Contact")
        handle = self._tags()
        dialog = Dialog(
            handle=handle,
            call_id=request.call_id,
            remote_tag=from_tag,
            local_party=f"{h.get('To')};tag={handle}",
            remote_party=h.get("From") or "",
            remote_target=parse_name_addr(contact).uri,
            route_set=h.get_all("Record-Route"),
            remote_cseq=request.cseq[0],
            flow=tx.source,
            invite_key=tx.key,
            merge_key=merge_key,
        )
        self.dialogs[handle] = dialog
        self._merge[merge_key] = handle
        tx.handle = handle
        out = self._provisional(tx, 100)
        out.append(IncomingCall(handle, request, tx.source))
        return out

    def _in_dialog(self, tx: ServerTx, to_tag: str, now: float) -> list[Output]:
        request = tx.request
        dialog = self.dialogs.get(to_tag)
        from_tag = parse_name_addr(request.headers.get("From") or "").tag
        if dialog is None or dialog.call_id != request.call_id or dialog.remote_tag != from_tag:
            return self._final(tx, 481, now)
        tx.handle = dialog.handle
        number = request.cseq[0]
        if number <= dialog.remote_cseq:
            return self._final(tx, 500, now, reason="CSeq Out of Order")
        dialog.remote_cseq = number
        method = request.method
        if method == "BYE":
            out = self._final(tx, 200, now)
            self._end(dialog)
            out.append(CallEnded(dialog.handle, "bye"))
            return out
        if method == "INVITE":
            if dialog.ok is not None or dialog.reinvite is not None or dialog.state != "confirmed":
                return self._final(tx, 500, now, [("Retry-After", "1")])
            target = request.headers.get("Contact")
            if target:
                dialog.remote_target = parse_name_addr(target).uri
            dialog.reinvite = tx
            return [SessionOffer(dialog.handle, request.body)]
        if method == "OPTIONS":
            return self._final(tx, 200, now, self._capabilities())
        if method == "INFO":
            out = self._final(tx, 200, now)
            dtmf = dtmf_from_info(request)
            if dtmf is not None:
                out.append(DtmfInfo(dialog.handle, *dtmf))
            return out
        if method in _KNOWN:
            return self._final(tx, 405, now, [("Allow", ALLOW)])
        return self._final(tx, 501, now, [("Allow", ALLOW)])

    def _on_ack(self, request: SipRequest, now: float) -> list[Output]:
        tx = self._server.get(tx_key(request, "INVITE"))
        if tx is not None and tx.state == "completed":  # ACK for our non-2xx final
            tx.state = "confirmed"
            tx.retransmit_at = None
            tx.expires_at = now + self.t4
            return []
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        dialog = self.dialogs.get(to_tag)
        if dialog is None or dialog.call_id != request.call_id or dialog.ok is None:
            return []  # late or stray ACK: absorbed
        if request.cseq[0] != dialog.ok_cseq:
            return []
        dialog.ok = None
        out: list[Output] = []
        if dialog.state == "early":
            dialog.state = "confirmed"
            out.append(CallConfirmed(dialog.handle, request.body))
        if dialog.bye_after_ack:
            out.extend(self._send_bye(dialog, now))
        return out

    def _on_cancel(self, tx: ServerTx, now: float) -> list[Output]:
        invite = self._server.get((*tx.key[:-1], "INVITE"))
        if invite is None:
            return self._final(tx, 481, now)
        out = self._final(tx, 200, now, to_tag=invite.handle)
        if invite.state in ("trying", "proceeding"):
            dialog = self.dialogs.get(invite.handle)
            out.extend(self._final(invite, 487, now))
            if dialog is not None:
                self._end(dialog)
                out.append(CallCancelled(dialog.handle))
        return out

    # --- responses ---------------------------------------------------------------------------

    def _response(
        self,
        tx: ServerTx,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        reason: str = "",
        to_tag: str = "",
    ) -> bytes:
        request = tx.request
        extra = [("Server", self.user_agent), *(headers or [])]
        if body:
            extra.append(("Content-Type", "application/sdp"))
        tag = to_tag or tx.handle or (self._tags() if status > 100 else "")
        response = response_to(
            request, status, reason, to_tag=tag, headers=extra, body=body, source=tx.source
        )
        return response.encode()

    def _provisional(self, tx: ServerTx, status: int) -> list[Output]:
        headers = [("Contact", self.contact)] if status > 100 else []
        tx.response = self._response(tx, status, headers)
        tx.state = "proceeding"
        return [Send(tx.response, tx.source)]

    def _final(
        self,
        tx: ServerTx,
        status: int,
        now: float,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        reason: str = "",
        to_tag: str = "",
    ) -> list[Output]:
        tx.response = self._response(tx, status, headers, body, reason, to_tag)
        if tx.method == "INVITE" and status >= 300:
            tx.state = "completed"
            tx.interval = self.t1
            tx.retransmit_at = now + self.t1
            tx.expires_at = now + 64 * self.t1
        elif tx.method == "INVITE":
            tx.state = "accepted"
            tx.expires_at = now + 64 * self.t1
        else:
            tx.state = "completed"
            tx.expires_at = now + 64 * self.t1
        self._arm(tx.retransmit_at or tx.expires_at)
        return [Send(tx.response, tx.source)]

    # --- application calls -------------------------------------------------------------------

    def _pending_invite(self, handle: str) -> tuple[Dialog, ServerTx] | None:
        dialog = self.dialogs.get(handle)
        if dialog is None:
            return None
        tx = self._server.get(dialog.invite_key)
        if tx is None or tx.state not in ("trying", "proceeding"):
            return None
        return dialog, tx

    def ringing(self, handle: str) -> list[Output]:
        """180 Ringing for a call not yet answered."""
        pending = self._pending_invite(handle)
        return [] if pending is None else self._provisional(pending[1], 180)

    def answer(self, handle: str, sdp: bytes, now: float) -> list[Output]:
        """200 OK with ``sdp``; retransmitted until the ACK comes."""
        pending = self._pending_invite(handle)
        if pending is None:
            return []
        dialog, tx = pending
        out = self._final(tx, 200, now, [("Contact", self.contact), ("Allow", ALLOW)], sdp)
        self._retransmit_ok(dialog, tx, now)
        return out

    def reject(self, handle: str, status: int, now: float, reason: str = "") -> list[Output]:
        """A final error response (486, 488, 503, ...) for a call not yet answered."""
        pending = self._pending_invite(handle)
        if pending is None:
            return []
        dialog, tx = pending
        out = self._final(tx, status, now, reason=reason)
        self._end(dialog)
        return out

    def answer_offer(self, handle: str, status: int, sdp: bytes, now: float) -> list[Output]:
        """Answer the pending re-INVITE of ``handle``: 200 with ``sdp``, or an error status."""
        dialog = self.dialogs.get(handle)
        if dialog is None or dialog.reinvite is None:
            return []
        tx, dialog.reinvite = dialog.reinvite, None
        if status >= 300:
            return self._final(tx, status, now)
        out = self._final(tx, status, now, [("Contact", self.contact), ("Allow", ALLOW)], sdp)
        self._retransmit_ok(dialog, tx, now)
        return out

    def _retransmit_ok(self, dialog: Dialog, tx: ServerTx, now: float) -> None:
        assert tx.response is not None
        dialog.ok = tx.response
        dialog.ok_cseq = tx.request.cseq[0]
        dialog.ok_interval = self.t1
        dialog.ok_next = now + self.t1
        dialog.ok_deadline = now + 64 * self.t1
        self._arm(dialog.ok_next)

    def hangup(self, handle: str, now: float) -> list[Output]:
        """End the call from our side: BYE once answered (after the ACK), 480 before."""
        dialog = self.dialogs.get(handle)
        if dialog is None or dialog.state == "ended":
            return []
        if self._pending_invite(handle) is not None:
            return self.reject(handle, 480, now)
        if dialog.ok is not None and dialog.state == "early":
            dialog.bye_after_ack = True  # RFC 3261 15: no BYE before the ACK (or its timeout)
            return []
        return self._send_bye(dialog, now)

    def _send_bye(self, dialog: Dialog, now: float) -> list[Output]:
        dialog.local_cseq += 1
        dialog.ok = None
        branch = self._branches()
        host = f"[{self.host}]" if ":" in self.host else self.host
        h = Headers()
        h.add("Via", f"SIP/2.0/UDP {host}:{self.port};branch={branch};rport")
        h.add("Max-Forwards", "70")
        for route in dialog.route_set:
            h.add("Route", route)
        h.add("From", dialog.local_party)
        h.add("To", dialog.remote_party)
        h.add("Call-ID", dialog.call_id)
        h.add("CSeq", f"{dialog.local_cseq} BYE")
        h.add("User-Agent", self.user_agent)
        data = SipRequest("BYE", dialog.remote_target, h).encode()
        self._end(dialog, keep=True)
        self._client[branch] = ClientTx(
            branch, data, dialog.flow, dialog.handle, now + self.t1, self.t1, now + 64 * self.t1
        )
        self._arm(now + self.t1)
        return [Send(data, dialog.flow)]

    def _end(self, dialog: Dialog, keep: bool = False) -> None:
        dialog.state = "ended"
        dialog.ok = None
        self._merge.pop(dialog.merge_key, None)
        if not keep:
            self.dialogs.pop(dialog.handle, None)

    def _forget(self, handle: str) -> None:
        dialog = self.dialogs.get(handle)
        if dialog is not None and dialog.state == "ended":
            del self.dialogs[handle]

    # --- timers ------------------------------------------------------------------------------

    def _arm(self, at: float | None) -> None:
        if at is not None and (self._next is None or at < self._next):
            self._next = at

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has work (None: no timer is running)."""
        return self._next

    def poll(self, now: float) -> list[Output]:
        """Run the timers due at ``now``: retransmissions and time-outs."""
        out: list[Output] = []
        nxt: float | None = None

        def arm(at: float | None) -> None:
            nonlocal nxt
            if at is not None and (nxt is None or at < nxt):
                nxt = at

        for key, tx in list(self._server.items()):
            if tx.expires_at is not None and now >= tx.expires_at:
                del self._server[key]
                continue
            if tx.retransmit_at is not None and now >= tx.retransmit_at and tx.response:
                out.append(Send(tx.response, tx.source))  # timer G
                self.retransmissions += 1
                tx.interval = min(2 * tx.interval, self.t2)
                tx.retransmit_at = now + tx.interval
            arm(tx.retransmit_at)
            arm(tx.expires_at)
        for dialog in list(self.dialogs.values()):
            if dialog.ok is None:
                continue
            if now >= dialog.ok_deadline:  # no ACK: confirm and end with a BYE (13.3.1.4)
                out.extend(self._send_bye(dialog, now))
                out.append(CallEnded(dialog.handle, "no-ack"))
                continue
            if now >= dialog.ok_next:
                out.append(Send(dialog.ok, dialog.flow))
                self.retransmissions += 1
                dialog.ok_interval = min(2 * dialog.ok_interval, self.t2)
                dialog.ok_next = now + dialog.ok_interval
            arm(dialog.ok_next)
        for branch, ctx in list(self._client.items()):
            if now >= ctx.expires_at:  # timer F: the peer never answered our BYE
                del self._client[branch]
                self._forget(ctx.handle)
                continue
            if now >= ctx.retransmit_at:  # timer E
                out.append(Send(ctx.data, ctx.dest))
                self.retransmissions += 1
                ctx.interval = min(2 * ctx.interval, self.t2)
                ctx.retransmit_at = now + ctx.interval
            arm(ctx.retransmit_at)
        self._next = nxt
        return out
