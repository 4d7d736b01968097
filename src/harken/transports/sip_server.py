"""The SIP endpoint of a worker: one UDP socket, the sans-I/O user agent, a SipCall per call.

:class:`SipServer` is an asyncio ``DatagramProtocol``. It feeds every datagram to
:class:`~harken.protocols.sip_uas.SipUas`, sends what the UA returns, turns the UA's call events
into :class:`~harken.transports.sip_call.SipCall` actions, and runs the UA's timers (200 and BYE
retransmissions, transaction expiry) from one timer handle. Each call gets its own RTP socket,
an even port from ``rtp_ports`` (the next free one, round robin).

Addresses: the SIP socket binds ``host``; what we advertise (Contact, SDP ``c=``) is
``public_ip`` when set, else ``host``, else (bound to every interface) the address of the
interface that routes to the internet, found without sending anything.

Nothing a peer sends can raise out of :meth:`SipServer.datagram_received`: the UA turns
malformed messages into 400s (or drops them); an unexpected exception in our own code is
logged and that datagram dropped. A stray or malformed RTP packet is dropped by the call's
RTP session.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import replace
from typing import cast

from harken.protocols.sip_dialog import (
    CallCancelled,
    CallConfirmed,
    CallEnded,
    DtmfInfo,
    IncomingCall,
    Output,
    Send,
    SessionOffer,
)
from harken.protocols.sip_uas import SipUas
from harken.transports.carrier import AgentFactory, CallManager
from harken.transports.output import PlaybackSettings
from harken.transports.rtp_session import RtpSession
from harken.transports.sip_call import SipCall

log = logging.getLogger("harken.sip")

Action = Callable[[SipUas, float], list[Output]]
#: RTP cannot recall what was sent (no ``clear``): keep at most this much ahead of the caller
SIP_MAX_LEAD_S = 0.04


def _outbound_ip() -> str:
    """The address of the interface that routes to the internet (nothing is sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: routing lookup only
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class SipServer(asyncio.DatagramProtocol):
    """See the module docstring."""

    def __init__(
        self,
        manager: CallManager,
        agent: AgentFactory,
        *,
        host: str,
        port: int,
        public_ip: str = "",
        rtp_ports: tuple[int, int] = (20000, 20999),
        playback: PlaybackSettings | None = None,
        t1: float = 0.5,
        answer_delay_s: float = 0.0,
        rtp_timeout_s: float = 60.0,
    ) -> None:
        self.manager = manager
        self.agent = agent
        self.host = host or "0.0.0.0"
        self.port = port
        self.public_ip = public_ip
        low, high = rtp_ports
        self.rtp_ports = list(range(low + (low % 2), high + 1, 2))
        base = playback or PlaybackSettings()
        self.playback = replace(base, strategy="drained", lead_s=min(base.lead_s, SIP_MAX_LEAD_S))
        self.t1 = t1
        self.answer_delay_s = answer_delay_s
        self.rtp_timeout_s = rtp_timeout_s
        self.media_address = ""
        self.calls: dict[str, SipCall] = {}
        self.ua: SipUas | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.internal_errors = 0
        self._ports_used: set[int] = set()
        self._port_index = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    async def start(self, *, reuse_port: bool = False) -> None:
        """Bind the SIP socket. With ``reuse_port`` (several workers) the kernel spreads the
        datagrams over the workers by source address: one peer's messages reach one worker."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self,
            local_addr=(self.host, self.port),
            family=family,
            reuse_port=reuse_port or None,
        )
        self.transport = transport
        self.port = int(self.transport.get_extra_info("sockname")[1])
        wildcard = self.host in ("0.0.0.0", "::")
        self.media_address = self.public_ip or (_outbound_ip() if wildcard else self.host)
        self.ua = SipUas(self.media_address, self.port, t1=self.t1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython 3.11's selector transport is not a DatagramTransport subclass)
        self.transport = cast(asyncio.DatagramTransport, transport)

    def close(self) -> None:
        """End every call (BYE, or 480 before the answer) and close the socket."""
        for call in list(self.calls.values()):
            call.fail("shutdown", 1001, "server shutting down")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.transport.close()

    # --- datagrams and timers ----------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        ua = self.ua
        if ua is None:
            return
        source = (str(addr[0]), int(addr[1]))
        try:
            self._apply(ua.receive(data, source, asyncio.get_running_loop().time()))
        except Exception:  # our bug, not the peer's: drop this datagram, keep serving
            self.internal_errors += 1
            log.exception("sip: unexpected error handling a datagram from %s", source)

    def error_received(self, exc: Exception) -> None:
        log.debug("sip: %s", exc)

    def act(self, action: Action) -> None:
        """Run a UA call (answer, reject, hang up, ...) and send what it returns."""
        if self.ua is not None:
            self._apply(action(self.ua, asyncio.get_running_loop().time()))

    def _apply(self, outputs: list[Output]) -> None:
        transport = self.transport
        for out in outputs:
            if isinstance(out, Send):
                if transport is not None and not transport.is_closing():
                    transport.sendto(out.data, out.addr)
                continue
            if isinstance(out, IncomingCall):
                call = SipCall(self, out)
                self.calls[out.handle] = call
                call.begin()
                continue
            call_or_none = self.calls.get(out.handle)
            if call_or_none is None:
                continue
            call = call_or_none
            if isinstance(out, CallConfirmed):
                call.confirmed(out.body)
            elif isinstance(out, SessionOffer):
                status, sdp = call.reoffer(out.body)
                ua = self.ua
                if ua is not None:
                    now = asyncio.get_running_loop().time()
                    self._apply(ua.answer_offer(out.handle, status, sdp, now))
            elif isinstance(out, DtmfInfo):
                call.dtmf_info(out.digit, out.duration_ms)
            elif isinstance(out, CallCancelled):
                call.cancelled()
            elif isinstance(out, CallEnded):
                call.remote_ended(out.reason)
        self._rearm()

    def _rearm(self) -> None:
        ua = self.ua
        at = ua.next_deadline() if ua is not None else None
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_at(at, self._poll)

    def _poll(self) -> None:
        self._timer = None
        self._timer_at = None
        if self.ua is not None:
            try:
                self._apply(self.ua.poll(asyncio.get_running_loop().time()))
            except Exception:
                self.internal_errors += 1
                log.exception("sip: unexpected error in the timers")
                self._rearm()

    # --- calls -------------------------------------------------------------------------------

    def forget(self, call: SipCall) -> None:
        if self.calls.get(call.handle) is call:
            del self.calls[call.handle]

    async def bind_rtp(self, session: RtpSession) -> bool:
        """Bind ``session`` to the next free even port of the range; False when none is."""
        loop = asyncio.get_running_loop()
        ports = self.rtp_ports
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(len(ports)):
            port = ports[self._port_index % len(ports)]
            self._port_index += 1
            if port in self._ports_used:
                continue
            self._ports_used.add(port)
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: session, local_addr=(self.host, port), family=family
                )
                session.transport = transport
            except OSError as exc:
                self._ports_used.discard(port)
                if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
                continue
            session.on_close = lambda port=port: self._ports_used.discard(port)  # type: ignore[misc]
            return True
        log.warning("sip: no free RTP port in %d-%d", ports[0], ports[-1])
        return False
