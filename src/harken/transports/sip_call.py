"""One SIP call: admission, its RTP session, the agent's pipeline, and how the dialog ends.

:class:`SipCall` is created by :class:`~harken.transports.sip_server.SipServer` for each new
INVITE and runs exactly one task (set up, answer, wait, clean up)::

    INVITE ─► offer negotiated (488 if no codec matches, 400 if the SDP is malformed)
           ─► CallManager admission (486 at max_calls, 503 while draining)
           ─► RTP socket bound (503 if no port is free) ─► agent stages built
           ─► 180 Ringing ─► call.start() (stage setup) ─► 200 OK + SDP answer ─► media flows

An INVITE without an offer is answered with ours (PCMU, PCMA, telephone-event) and the media
starts once the ACK brings the answer.

Endings: the caller's BYE (the output learns nothing more can play, the call ends); a CANCEL
before the answer (487, the call is cancelled); the agent's ``HangupFrame`` (the output holds it
until the audio before it has played, then we send BYE); no ACK (the UA sends BYE); no RTP for
``rtp_timeout_s``; the worker's drain timeout (:meth:`SipCall.fail`); or the pipeline ending on
its own (we send BYE). The duck-typed ``fail(outcome, code, reason)`` and the ``CallManager``
accounting make a SIP call look like a carrier session to the worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING, cast

from harken.audio.dtmf import DtmfDigit
from harken.errors import RemoteProtocolError
from harken.frames import AudioFrame, DTMFFrame, StartFrame
from harken.pipeline import Call, CallState, Pipeline
from harken.protocols.events import StreamStarted
from harken.protocols.sdp import (
    Negotiated,
    SessionDescription,
    answer_sdp,
    negotiate,
    offer_sdp,
    parse_sdp,
)
from harken.protocols.sip import parse_name_addr, parse_uri
from harken.protocols.sip_dialog import IncomingCall
from harken.server import metrics
from harken.transports.output import CarrierOutput
from harken.transports.rtp_session import RATE, RtpLink, RtpSession, media_clock

if TYPE_CHECKING:
    from harken.transports.carrier import CarrierSession
    from harken.transports.sip_server import SipServer

log = logging.getLogger("harken.sip")

CARRIER = "sip"


def _user(uri_text: str) -> str | None:
    try:
        return parse_uri(parse_name_addr(uri_text).uri).user or None
    except RemoteProtocolError:
        return None


class SipCall:
    """See the module docstring."""

    def __init__(self, server: SipServer, incoming: IncomingCall) -> None:
        self.server = server
        self.handle = incoming.handle
        self.invite = incoming.request
        self.source = incoming.source
        self.offer: SessionDescription | None = None
        self.plan: Negotiated | None = None
        self.rtp: RtpSession | None = None
        self.output: CarrierOutput | None = None
        self.call: Call | None = None
        self.info: StreamStarted | None = None
        self.task: asyncio.Task[None] | None = None
        self.outcome = ""
        self.closed = False
        self.answered = False
        self.dialog_up = True  # False once a BYE went either way (or the INVITE was refused)
        self.admitted = False
        self._session_id = random.getrandbits(31)
        self._version = 1
        self._answer = b""
        self._ack: asyncio.Future[bytes] | None = None
        self._media_s = 0.0

    # --- set-up ------------------------------------------------------------------------------

    def begin(self) -> None:
        """Check the offer and admission synchronously, then start the call's task."""
        body = self.invite.body
        if body:
            try:
                self.offer = parse_sdp(body)
                self.plan = negotiate(self.offer)
            except RemoteProtocolError as exc:
                metrics.PROTOCOL_ERRORS.labels(CARRIER).inc()
                self._refuse(400, "protocol error", f"Bad SDP ({exc})")
                return
            if self.plan is None:
                self._refuse(488, "no common codec")
                return
        refusal = self.server.manager.refusal()
        if not self.server.manager.admit(cast("CarrierSession", self)):
            self._refuse(503 if refusal == "draining" else 486, "refused")
            return
        self.admitted = True
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"harken:sip:{self.invite.call_id}"
        )

    def _refuse(self, status: int, outcome: str, reason: str = "") -> None:
        self.outcome = outcome
        self.closed = True
        self.dialog_up = False
        self.server.act(lambda ua, now: ua.reject(self.handle, status, now, reason))
        self.server.forget(self)
        if not self.admitted:
            metrics.CALLS.labels(CARRIER, outcome).inc()

    async def _run(self) -> None:
        try:
            await self._setup()
            call = self.call
            if call is not None and not self.closed:
                await call.wait()
        except Exception:
            log.exception("sip call %s: unexpected error", self.invite.call_id)
            self.outcome = self.outcome or "internal error"
            if not self.answered and self.dialog_up:
                self.dialog_up = False
                self.server.act(lambda ua, now: ua.reject(self.handle, 500, now))
            if self.call is not None and not self.call.closed:
                self.call.cancel("internal error")
        finally:
            self._finish()

    async def _setup(self) -> None:
        server = self.server
        rtp = RtpSession(timeout_s=server.rtp_timeout_s)
        if not await server.bind_rtp(rtp):
            self._refuse_admitted(503, "no RTP port")
            return
        self.rtp = rtp
        if self._gone():  # cancelled while binding
            return
        address = server.media_address
        if self.plan is None:  # no offer: make ours; the answer comes with the ACK
            self._ack = asyncio.get_running_loop().create_future()
            self._answer = offer_sdp(
                address=address, port=rtp.local_port, session_id=self._session_id, version=1
            )
            server.act(lambda ua, now: ua.ringing(self.handle))
            self._answer_call()
            try:
                answer = parse_sdp(await self._ack)
            except RemoteProtocolError:
                answer = None
            except asyncio.CancelledError:
                if self._ack.cancelled():  # the call ended before the ACK: nothing to set up
                    return
                raise
            self.plan = negotiate(answer) if answer is not None else None
            if self.plan is None:
                self.fail("no common codec", 0, "")
                return
        else:
            assert self.offer is not None
            self._answer = answer_sdp(
                self.offer,
                self.plan,
                address=address,
                port=rtp.local_port,
                session_id=self._session_id,
                version=self._version,
            )
        plan = self.plan
        codec = rtp.configure(
            plan.encoding,
            plan.payload_type,
            plan.dtmf_payload_type,
            self._remote(plan),
            sending=plan.sends,
            receiving=plan.direction in ("sendrecv", "recvonly"),
        )
        self.info = self._stream_info(plan)
        stages = server.agent(self.info, RATE, RATE)
        output = CarrierOutput(codec, RtpLink(rtp), server.playback)
        self.output = output
        loop = asyncio.get_running_loop()

        def on_hangup() -> None:  # after the output's own bookkeeping, not inside it
            loop.call_soon(self._agent_hangup)

        output.on_hangup = on_hangup
        call = Call(Pipeline([*stages, output]), call_id=self.invite.call_id)
        self.call = call
        rtp.on_audio = self._audio
        rtp.on_dtmf = self._dtmf
        rtp.on_timeout = lambda: self.fail("rtp timeout", 0, "")
        rtp.fill = self._fill
        if not self.answered:
            server.act(lambda ua, now: ua.ringing(self.handle))
        await call.start(
            StartFrame(
                call_id=self.invite.call_id,
                sample_rate_in=RATE,
                sample_rate_out=RATE,
                metadata={"carrier": CARRIER, "parameters": dict(self.info.custom_parameters)},
            )
        )
        if self._gone():  # cancelled (or failed) during the stages' setup
            if not call.closed:
                call.cancel(self.outcome or "cancelled")
            return
        if server.answer_delay_s and not self.answered:
            await asyncio.sleep(server.answer_delay_s)
            if self._gone():
                call.cancel(self.outcome or "cancelled")
                return
        if not self.answered:
            self._answer_call()
        rtp.start(loop.time())
        media_clock().add(rtp)

    def _gone(self) -> bool:
        """The call was cancelled or failed while we awaited (a method: not narrowed away)."""
        return self.closed

    def _answer_call(self) -> None:
        self.answered = True
        sdp = self._answer
        self.server.act(lambda ua, now: ua.answer(self.handle, sdp, now))

    def _refuse_admitted(self, status: int, outcome: str) -> None:
        self.outcome = outcome
        self.closed = True
        self.dialog_up = False
        self.server.act(lambda ua, now: ua.reject(self.handle, status, now))

    @staticmethod
    def _remote(plan: Negotiated) -> tuple[str, int] | None:
        if plan.remote_port == 0 or plan.remote_address in ("0.0.0.0", "::"):
            return None
        return plan.remote_address, plan.remote_port

    def _stream_info(self, plan: Negotiated) -> StreamStarted:
        h = self.invite.headers
        params = {
            name[2:]: value for name, value in h if name.lower().startswith("x-") and len(name) > 2
        }
        to_user = _user(f"<{self.invite.uri}>") or _user(h.get("To") or "")
        return StreamStarted(
            stream_id=self.handle,
            call_id=self.invite.call_id,
            account_id="",
            custom_parameters=params,
            encoding=plan.encoding,
            sample_rate=RATE,
            from_number=_user(h.get("From") or ""),
            to_number=to_user,
            extra={
                "transport": "sip",
                "remote": f"{self.source[0]}:{self.source[1]}",
                "user_agent": (h.get("User-Agent") or "")[:120],
            },
        )

    # --- media -------------------------------------------------------------------------------

    def _audio(self, pcm: bytes) -> None:
        call = self.call
        if call is None or call.closed or call.state is not CallState.RUNNING:
            return
        call.feed(AudioFrame(pcm, RATE, timestamp=self._media_s))
        self._media_s += len(pcm) / (2 * RATE)
        if call.congested:
            call.take_overfull()  # UDP cannot be paused: full audio lanes drop the oldest

    def _dtmf(self, digit: DtmfDigit) -> None:
        call = self.call
        if call is not None and not call.closed:
            call.system(DTMFFrame(digit.digit, digit.duration_ms))

    def _fill(self, now: float) -> None:
        """Comfort silence: keep 50 packets/s going out while the agent is silent or held."""
        output, rtp = self.output, self.rtp
        if output is None or rtp is None or rtp.codec is None or not rtp.sending:
            return
        codec = rtp.codec
        if codec.next_at is not None and codec.next_at > now + 0.002:
            return  # audio is in flight
        if not output.pacer.idle:
            output.service(now)  # release what is due first: silence never delays speech
        for _ in range(3):  # a late tick catches up (a longer stall jumps the timestamps)
            if codec.next_at is not None and codec.next_at > now + 0.002:
                return
            rtp.send(codec.packet(codec.silence, now))

    # --- events from the dialog --------------------------------------------------------------

    def confirmed(self, body: bytes) -> None:
        """The ACK came (with the answer, when we made the offer)."""
        if self._ack is not None and not self._ack.done():
            self._ack.set_result(body)

    def dtmf_info(self, digit: str, duration_ms: int) -> None:
        self._dtmf(DtmfDigit(digit, duration_ms))

    def reoffer(self, body: bytes) -> tuple[int, bytes]:
        """A re-INVITE: keep the codec, follow the peer's address and direction (hold)."""
        rtp, plan = self.rtp, self.plan
        if rtp is None or plan is None:
            return 488, b""
        if not body:  # no offer: ours again (the ACK's answer can only keep our one codec)
            return 200, self._answer
        try:
            offer = parse_sdp(body)
            new = negotiate(offer, (plan.encoding,))
        except RemoteProtocolError:
            metrics.PROTOCOL_ERRORS.labels(CARRIER).inc()
            return 488, b""
        if new is None:
            return 488, b""
        rtp.configure(
            new.encoding,
            new.payload_type,
            new.dtmf_payload_type,
            self._remote(new),
            sending=new.sends,
            receiving=new.direction in ("sendrecv", "recvonly"),
        )
        self.plan = new
        answer = self._build_answer(offer, new, self._version)
        if answer != self._answer:
            self._version += 1
            answer = self._build_answer(offer, new, self._version)
            self._answer = answer
        return 200, answer

    def _build_answer(self, offer: SessionDescription, plan: Negotiated, version: int) -> bytes:
        assert self.rtp is not None
        return answer_sdp(
            offer,
            plan,
            address=self.server.media_address,
            port=self.rtp.local_port,
            session_id=self._session_id,
            version=version,
        )

    def cancelled(self) -> None:
        """CANCEL before the answer (the UA already sent 200 and 487)."""
        self.dialog_up = False
        self.fail("cancelled", 0, "")

    def remote_ended(self, reason: str) -> None:
        """The caller's BYE (already answered 200), or no ACK (the UA sent a BYE)."""
        self.dialog_up = False
        if self._ack is not None and not self._ack.done():
            self._ack.cancel()
        if self.output is not None:
            self.output.remote_closed()
        call = self.call
        if call is not None and not call.closed:
            self.outcome = self.outcome or ("completed" if reason == "bye" else reason)
            call.end(reason)
        elif not self.closed:
            self.outcome = self.outcome or reason
        self.closed = True

    # --- endings from our side -----------------------------------------------------------------

    def _agent_hangup(self) -> None:
        """The audio before the agent's HangupFrame has played: BYE, and the call ends."""
        metrics.HANGUPS.labels(CARRIER, "ok").inc()
        self.outcome = self.outcome or "hangup"
        self._bye()
        call = self.call
        if call is not None and not call.closed:
            call.end("hangup")
        self.closed = True

    def _bye(self) -> None:
        if self.dialog_up:
            self.dialog_up = False
            self.server.act(lambda ua, now: ua.hangup(self.handle, now))

    def fail(self, outcome: str, code: int, reason: str) -> None:
        """End the call now (drain timeout, RTP timeout, shutdown): BYE, or 480 if unanswered.
        ``code`` and ``reason`` are the WebSocket close code and reason of the carrier API."""
        self.outcome = self.outcome or outcome
        if self._ack is not None and not self._ack.done():
            self._ack.cancel()
        self._bye()
        call = self.call
        if call is not None and not call.closed:
            call.cancel(outcome)
        self.closed = True

    def _finish(self) -> None:
        call = self.call
        outcome = self.outcome or (call.state.value if call is not None else "failed")
        metrics.CALLS.labels(CARRIER, outcome).inc()
        if call is not None:
            dropped = call.dropped_audio
            if self.output is not None:
                dropped += self.output.pacer.dropped_bytes // self.output.pacer.chunk_bytes
            if dropped:
                metrics.DROPPED_AUDIO.inc(dropped)
        self._bye()
        if self.rtp is not None:
            log.info("sip call %s: %s; rtp %s", self.invite.call_id, outcome, self.rtp.summary())
            media_clock().remove(self.rtp)
            self.rtp.close()
        if self.admitted:
            self.server.manager.release(cast("CarrierSession", self))
        self.closed = True
        self.server.forget(self)
