"""One call's RTP: a UDP socket, the caller's audio through the jitter buffer, ours paced out.

Inbound (:class:`RtpSession`, an asyncio ``DatagramProtocol``):

* every datagram is parsed (:func:`harken.protocols.rtp.parse_rtp`); a malformed one is dropped
  and counted, never raised: a stray UDP packet must not end a call, let alone the process;
* **symmetric RTP**: the first valid packet (the negotiated audio or telephone-event payload
  type) *latches* the session to its source, which becomes where our RTP goes even if the SDP
  said otherwise (NAT); packets from any other source are then dropped (counted);
* audio is G.711-decoded into :class:`harken.audio.jitter.JitterBuffer` (reordering, loss
  concealment, adaptive delay); :meth:`RtpSession.tick`, driven every 20 ms by one process-wide
  :class:`MediaClock`, takes exactly one 20 ms frame per 20 ms of wall time from it and feeds it
  into the call, so the pipeline sees a steady 8 kHz stream whatever the network did;
* RFC 4733 ``telephone-event`` packets go to :class:`harken.audio.dtmf.EventReceiver`, which
  reports each digit once (the end packet is usually sent three times);
* packets carrying our own SSRC are a media loop (RFC 3550 8.2) and are dropped (counted in
  :attr:`RtpSession.loops`); a peer that echoes RTP, such as ``sipp -rtp_echo``, shows up here.

Outbound, :class:`RtpCodec` lets :class:`~harken.transports.output.CarrierOutput` (encode, pace
with a bounded lead, playback truth with the ``drained`` strategy, barge-in flush, hold/resume,
hang-up after the audio) put its 20 ms chunks into RTP packets. RTP has no ``clear``: what was
sent plays, which is why the SIP lead is kept small. While the agent is silent (or held) the
tick sends comfort silence, so the far end gets a continuous 50 packets/s stream; timestamps
follow the wall clock across any gap (and the marker bit flags the jump).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import random
from collections.abc import Callable
from typing import Final, cast

from harken.audio.dtmf import DtmfDigit, EventReceiver
from harken.audio.jitter import JitterBuffer
from harken.errors import LocalProtocolError, RemoteProtocolError
from harken.protocols.base import STREAMING, CarrierCodec
from harken.protocols.events import Encoding, Event
from harken.protocols.rtp import build_rtp, is_rtcp, parse_rtp
from harken.transports.wire_audio import SILENCE_BYTE, decoder

log = logging.getLogger("harken.rtp")

Addr = tuple[str, int]
RATE: Final = 8000
FRAME_S: Final = 0.02
FRAME_SAMPLES: Final = 160
_MAX_CATCH_UP: Final = 10  # frames fed in one tick after a stall; older ones are skipped
#: no audio packet for this long: the sender stopped (DTX, telephone-events only, hold), not a
#: loss burst; feed plain silence (concealment has long faded by then, and it costs CPU) and
#: start a fresh jitter-buffer timeline when audio resumes
DTX_S: Final = 0.25
#: outbound: sent this late after the previous packet's end, the stream jumps its timestamps
#: to the clock (a stall); anything less is send jitter the far end's buffer absorbs
_RESYNC_S: Final = 0.06
_SILENT_FRAME: Final = bytes(2 * FRAME_SAMPLES)


class RtpCodec(CarrierCodec):
    """The outbound side of an RTP stream, shaped as a carrier codec for ``CarrierOutput``.

    :meth:`media` wraps one chunk of G.711 in an RTP packet. The timestamp advances by the
    chunk's samples, and jumps by the wall-clock gap when nothing was sent for more than 60 ms
    (a stall: the marker bit is set on such a packet and on the first one).
    """

    name = "sip"
    supports_marks = False
    completion = "drained"

    def __init__(self, encoding: Encoding, payload_type: int, ssrc: int | None = None) -> None:
        super().__init__(encoding, RATE)
        self.state = STREAMING
        self.payload_type = payload_type
        self.ssrc = ssrc if ssrc is not None else random.getrandbits(32)
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.next_at: float | None = None  # wall time the next packet's audio starts playing
        self.packets = 0
        self.silence = SILENCE_BYTE[encoding] * FRAME_SAMPLES

    def receive_text(self, text: str | bytes) -> Event:
        raise RemoteProtocolError("sip: an RTP stream has no text messages")

    def packet(self, payload: bytes, now: float) -> bytes:
        """The RTP packet for ``payload`` (G.711 bytes, one per sample) sent at ``now``."""
        marker = False
        if self.next_at is None:
            marker = True
            self.next_at = now
        elif now - self.next_at > _RESYNC_S:  # nothing sent for a while: follow the clock
            self.timestamp += round((now - self.next_at) * RATE)
            self.next_at = now
            marker = True
        data = build_rtp(
            self.payload_type, self.sequence, self.timestamp, self.ssrc, payload, marker=marker
        )
        self.sequence += 1
        self.timestamp += len(payload)
        self.next_at += len(payload) / RATE
        self.packets += 1
        return data

    def media(self, payload: bytes) -> bytes:
        return self.packet(payload, asyncio.get_running_loop().time())

    def _build_mark(self, quoted_name: str) -> str:
        raise LocalProtocolError("sip: RTP has no marks (the drained strategy needs none)")

    def _build_clear(self) -> str:
        return ""  # nothing to send: RTP cannot recall what was sent


class RtpLink:
    """The ``Link`` ``CarrierOutput`` sends on: RTP packets to the peer's (latched) address."""

    __slots__ = ("session",)

    def __init__(self, session: RtpSession) -> None:
        self.session = session

    def send_text(self, text: str) -> None:
        """``clear`` and marks: nothing goes on the wire for RTP."""

    def send_bytes(self, data: bytes) -> None:
        self.session.send(data)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """The session (not the output) closes the socket."""

    def pause_reading(self) -> None:
        """UDP has no backpressure: full audio lanes drop their oldest frames instead."""

    def resume_reading(self) -> None:
        """See :meth:`pause_reading`."""


class RtpSession(asyncio.DatagramProtocol):
    """One call's RTP socket (see the module docstring)."""

    def __init__(self, *, timeout_s: float = 60.0) -> None:
        self.on_audio: Callable[[bytes], None] = _ignore
        self.on_dtmf: Callable[[DtmfDigit], None] = _ignore
        self.on_timeout: Callable[[], None] = _nothing
        self.on_close: Callable[[], None] = _nothing  # the port is free again
        #: outbound comfort silence, called at the end of each tick (set by the call)
        self.fill: Callable[[float], None] | None = None
        self.timeout_s = timeout_s
        self.codec: RtpCodec | None = None  # None until configured: datagrams are dropped
        self.payload_type = -1
        self.dtmf_payload_type: int | None = None
        self.remote: Addr | None = None
        self.sending = False
        self.receiving = True  # the peer sends media (not on hold): the RTP timeout applies
        self.jitter = JitterBuffer(RATE, 20)
        self.events = EventReceiver(RATE)
        self.transport: asyncio.DatagramTransport | None = None
        self.latched = False
        self.closed = False
        self.received = 0
        self.malformed = 0
        self.strays = 0
        self.loops = 0
        self.other_payloads = 0
        self.sent = 0
        self.send_errors = 0
        self._decode = decoder("mulaw")
        self._ssrc: int | None = None
        self._last_ts = 0
        self._last_at = 0.0
        self._audio_at = 0.0  # arrival of the last audio packet
        self._dtx = True  # no audio yet, or none for DTX_S: feed silence
        self._due: float | None = None

    def configure(
        self,
        encoding: Encoding,
        payload_type: int,
        dtmf_payload_type: int | None,
        remote: Addr | None,
        *,
        sending: bool = True,
        receiving: bool = True,
    ) -> RtpCodec:
        """Set (or, after a re-INVITE, change) what the stream carries and where it goes; the
        session latches again on the next valid packet. Returns the outbound codec."""
        if self.codec is None or self.codec.output_encoding != encoding:
            self.codec = RtpCodec(encoding, payload_type)
            self._decode = decoder(encoding)
        self.codec.payload_type = payload_type
        self.payload_type = payload_type
        self.dtmf_payload_type = dtmf_payload_type
        self.remote = remote
        self.sending = sending and remote is not None
        self.receiving = receiving
        self.latched = False
        if self._last_at:
            self._last_at = asyncio.get_running_loop().time()
        return self.codec

    def summary(self) -> dict[str, object]:
        """Counters for logs and tests."""
        j = self.jitter.stats
        return {
            "remote": self.remote,
            "received": self.received,
            "sent": self.sent,
            "malformed": self.malformed,
            "strays": self.strays,
            "loops": self.loops,
            "other_payloads": self.other_payloads,
            "send_errors": self.send_errors,
            "lost": j.packets_lost,
            "late": j.late_drops,
            "concealed_ms": round(j.concealed_ms),
            "jitter_delay_ms": round(j.current_delay_ms),
        }

    # --- socket ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython 3.11's selector transport is not a DatagramTransport subclass)
        self.transport = cast(asyncio.DatagramTransport, transport)

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def error_received(self, exc: Exception) -> None:
        self.send_errors += 1  # ICMP port unreachable and the like: the peer is not there (yet)

    def send(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closed or not self.sending or self.remote is None:
            return
        t.sendto(data, self.remote)
        self.sent += 1

    def close(self) -> None:
        self._due = None
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            self.on_close()

    # --- inbound -----------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: Addr) -> None:
        codec = self.codec
        if self.closed or codec is None:
            return
        remote = self.remote
        if self.latched and (remote is None or addr[0] != remote[0] or addr[1] != remote[1]):
            self.strays += 1
            return
        if is_rtcp(data):
            return  # RTCP multiplexed on the RTP port: not used
        try:
            pkt = parse_rtp(data)
        except RemoteProtocolError:
            self.malformed += 1
            return
        if pkt.ssrc == codec.ssrc and codec.packets:
            self.loops += 1
            return
        pt = pkt.payload_type
        if pt != self.payload_type and pt != self.dtmf_payload_type:
            self.other_payloads += 1  # comfort noise (13) and anything not negotiated
            return
        if not self.latched:
            self.latched = True
            self.remote = (addr[0], addr[1])
        now = asyncio.get_running_loop().time()
        self.received += 1
        self._last_at = now
        self._last_ts = pkt.timestamp
        if pt == self.payload_type:
            if pkt.ssrc != self._ssrc or (self._dtx and self._ssrc is not None):
                self.jitter.reset()  # a new source, or audio after a pause: a new timeline
            self._ssrc = pkt.ssrc
            self._audio_at = now
            self._dtx = False
            if pkt.payload:
                self.jitter.put(pkt.sequence, pkt.timestamp, self._decode(pkt.payload), now)
            return
        try:
            digits = self.events.feed(pkt.timestamp, pkt.payload)
        except RemoteProtocolError:
            self.malformed += 1
            return
        for digit in digits:
            self.on_dtmf(digit)

    # --- the 20 ms tick ----------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Start feeding the call: one frame per 20 ms from now on."""
        self._due = now
        if not self._last_at:
            self._last_at = now

    def delay_start(self, due: float) -> None:
        """Move the first frame to ``due`` (the clock picks the session's phase)."""
        if self._due is not None:
            self._due = due

    @property
    def next_due(self) -> float | None:
        """When the next frame is due (None: stopped)."""
        return self._due

    def _feed_due(self, now: float) -> bool:
        """True (and the clock moved on a frame) when a frame is due and the session is open."""
        due = self._due
        if due is None or due > now:
            return False
        self._due = due + FRAME_S
        return True

    def tick(self, now: float) -> None:
        """Feed the frames due by ``now``, resolve stale DTMF, send comfort silence."""
        due = self._due
        if due is None:
            return
        if now - due > _MAX_CATCH_UP * FRAME_S:  # a long stall: skip, do not replay it
            self._due = now - FRAME_S
        if not self._dtx and now - self._audio_at > DTX_S:
            self._dtx = True
        while self._feed_due(now):  # on_audio may end the call (and close this session)
            self.on_audio(_SILENT_FRAME if self._dtx else self.jitter.get(now))
        if self._due is None:  # closed meanwhile
            return
        if self.latched:
            elapsed = round((now - self._last_at) * RATE)
            for digit in self.events.poll(self._last_ts + elapsed):
                self.on_dtmf(digit)
        if self.fill is not None:
            self.fill(now)
        if self.receiving and now - self._last_at > self.timeout_s:
            log.info("rtp: no media for %.0f s", self.timeout_s)
            self._due = None
            self.on_timeout()


def _ignore(_: object) -> None:
    pass


def _nothing() -> None:
    pass


class MediaClock:
    """One timer for every RTP session of an event loop (see :meth:`RtpSession.tick`).

    Sessions keep the phase they started with, so their 20 ms ticks are spread over the period
    instead of all falling on one: the loop handles signalling between them. A heap ordered by
    due time means each wake-up touches only the sessions due (within ``batch_s``).
    """

    def __init__(self, batch_s: float = 0.001, slots: int = 10) -> None:
        self.batch_s = batch_s
        self.slots = slots
        self._epoch: float | None = None
        self._added = 0
        self.sessions: set[RtpSession] = set()
        self.ticks = 0
        self._heap: list[tuple[float, int, RtpSession]] = []
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._handle_at = 0.0

    def add(self, session: RtpSession) -> None:
        """Start ticking ``session`` (after :meth:`RtpSession.start`), in the next of
        ``slots`` phases of the 20 ms period: calls that start in step (a load generator's
        fixed rate) still spread out."""
        due = session.next_due
        if due is None or session in self.sessions:
            return
        if self._epoch is None:
            self._epoch = due
        phase = self._epoch + (self._added % self.slots) * FRAME_S / self.slots
        self._added += 1
        due = phase + math.ceil((due - phase) / FRAME_S) * FRAME_S
        session.delay_start(due)
        self.sessions.add(session)
        self._push(due, session)

    def remove(self, session: RtpSession) -> None:
        self.sessions.discard(session)  # its heap entry is dropped when it comes up

    def _push(self, due: float, session: RtpSession) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, session))
        if self._handle is None or due < self._handle_at:
            if self._handle is not None:
                self._handle.cancel()
            self._handle_at = due
            self._handle = asyncio.get_running_loop().call_at(due, self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        self._handle = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        limit = now + self.batch_s
        while heap and heap[0][0] <= limit:
            _, _, session = heapq.heappop(heap)
            if session not in self.sessions:
                continue
            try:
                session.tick(max(now, session.next_due or now))
            except Exception:  # one call's bug must not stop every call's clock
                log.exception("rtp: tick failed; closing that session")
                session.close()
                session.on_timeout()
            due = session.next_due
            if session.closed or due is None:
                self.sessions.discard(session)
            else:
                self._seq += 1
                heapq.heappush(heap, (due, self._seq, session))
        if heap:
            self._handle_at = heap[0][0]
            self._handle = loop.call_at(self._handle_at, self._tick)


_CLOCKS: dict[asyncio.AbstractEventLoop, MediaClock] = {}


def media_clock() -> MediaClock:
    """This event loop's :class:`MediaClock`."""
    loop = asyncio.get_running_loop()
    clock = _CLOCKS.get(loop)
    if clock is None:
        for old in [lp for lp in _CLOCKS if lp.is_closed()]:
            del _CLOCKS[old]
        clock = _CLOCKS[loop] = MediaClock()
    return clock
