"""One carrier media stream, end to end: wire messages in, a call in the middle, audio out.

:class:`CarrierSession` is transport-agnostic: whatever owns the socket (the picows listener in
:mod:`harken.server.media`, or a test) feeds it each message and gives it a
:class:`~harken.transports.output.Link` to send on. It

* parses every message with the carrier's sans-I/O codec; a malformed message
  (:class:`~harken.errors.RemoteProtocolError`) ends this call only, with close code 1008;
* checks the optional stream secret (custom parameter ``token``) before any call exists;
* creates the call on ``start`` (admission through the :class:`CallManager`), decodes caller
  audio into PCM16 frames, turns DTMF into ``DTMFFrame``, routes mark echoes to the output's
  playback tracker, and ends the call gracefully on ``stop`` or when the socket closes;
* pauses reading from the socket while a text lane is over capacity (backpressure);
* runs exactly one task per call: it starts the call, waits for it, and cleans up.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from harken.errors import RemoteProtocolError
from harken.frames import AudioFrame, DTMFFrame, HangupFrame, StartFrame
from harken.pipeline import Call, CallState, Lane, Pipeline, Stage
from harken.protocols.base import CarrierCodec
from harken.protocols.events import (
    CarrierError,
    DtmfReceived,
    Event,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
)
from harken.server import metrics
from harken.transports.output import CarrierOutput, Link, PlaybackSettings
from harken.transports.wire_audio import decoder

log = logging.getLogger("harken.carrier")
_NEW = CallState.NEW

#: Builds the agent stages for a call: (stream info, input sample rate, output sample rate).
AgentFactory = Callable[[StreamStarted, int, int], list[Stage]]
#: Performs the carrier's REST hang-up for a call (the I/O lives with the server).
Hangup = Callable[[StreamStarted], Awaitable[None]]
#: Asks the carrier to transfer a call to a target (number or SIP URI).
Transfer = Callable[[StreamStarted, str], Awaitable[None]]

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
_EARLY_FRAMES = 50


@dataclass
class CallManager:
    """The calls of one worker: admission (``max_calls``, draining) and accounting."""

    max_calls: int = 500
    draining: bool = False
    sessions: set[CarrierSession] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def active(self) -> int:
        return len(self.sessions)

    @property
    def accepting(self) -> bool:
        return not self.draining and self.active < self.max_calls

    def refusal(self) -> str | None:
        if self.draining:
            return "draining"
        if self.active >= self.max_calls:
            return "capacity"
        return None

    def admit(self, session: CarrierSession) -> bool:
        reason = self.refusal()
        if reason is not None:
            metrics.REFUSED.labels(reason).inc()
            return False
        self.sessions.add(session)
        self.idle.clear()
        metrics.ACTIVE_CALLS.inc()
        return True

    def release(self, session: CarrierSession) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            metrics.ACTIVE_CALLS.dec()
        if not self.sessions:
            self.idle.set()


class CarrierSession:
    """See the module docstring."""

    def __init__(
        self,
        codec: CarrierCodec,
        link: Link,
        manager: CallManager,
        agent: AgentFactory,
        *,
        playback: PlaybackSettings | None = None,
        stream_secret: str = "",
        hangup: Hangup | None = None,
        transfer: Transfer | None = None,
    ) -> None:
        self.codec = codec
        self.link = link
        self.manager = manager
        self.agent = agent
        self.playback = playback or PlaybackSettings()
        self.stream_secret = stream_secret
        self.hangup_handler = hangup
        self.transfer_handler = transfer
        self.call: Call | None = None
        self.output: CarrierOutput | None = None
        self.info: StreamStarted | None = None
        self.task: asyncio.Task[None] | None = None
        self.closed = False
        self.outcome = ""
        self._decode = decoder(codec.encoding)
        self._media_audio = codec.media_audio
        self._mark_echo = codec.mark_echo
        self._rate = codec.sample_rate
        self._pcm_bytes_per_s = 2 * codec.sample_rate
        self._early: list[AudioFrame] = []
        self._media_s = 0.0
        self._paused = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._link_closed = False

    # --- messages in -------------------------------------------------------------------------

    def receive_text(self, text: str | bytes) -> None:
        if self.closed:
            return
        try:
            # the hot path, 50 per second per call: a media message (and a mark echo) in the
            # carrier's usual form is read at the byte level; anything else is parsed in full
            if type(text) is bytes:
                audio = self._media_audio(text)
                if audio is not None:
                    self._media(audio)
                    return
                mark = self._mark_echo(text)
                if mark is not None:
                    if self.output is not None:
                        self.output.on_mark(*mark)
                    return
            event = self.codec.receive_text(text)
            if type(event) is MediaReceived:
                self._media(event.payload)
            else:
                self._event(event)
        except Exception as exc:  # noqa: BLE001 - this call's error boundary
            self._failed(exc)

    def receive_bytes(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            event = self.codec.receive_bytes(data)
            if type(event) is MediaReceived:
                self._media(event.payload)
            else:
                self._event(event)
        except Exception as exc:  # noqa: BLE001 - this call's error boundary
            self._failed(exc)

    def _event(self, event: Event) -> None:
        if isinstance(event, MarkEchoed):
            if self.output is not None:
                self.output.on_mark(event.name, event.cleared)
        elif isinstance(event, MediaReceived):
            self._media(event.payload)
        elif isinstance(event, DtmfReceived):
            if self.call is not None and not self.call.closed:
                self.call.system(DTMFFrame(event.digit, event.duration_ms or 0))
        elif isinstance(event, StreamStarted):
            self._started(event)
        elif isinstance(event, StreamStopped):
            self._remote_ended("stop")
        elif isinstance(event, CarrierError):
            log.warning("%s reported an error: %s", self.codec.name, event)

    def _failed(self, exc: Exception) -> None:
        """Bad input (:class:`RemoteProtocolError`) or a bug: end this call only."""
        if isinstance(exc, RemoteProtocolError):
            metrics.PROTOCOL_ERRORS.labels(self.codec.name).inc()
            log.warning("%s stream %s: %s", self.codec.name, self.codec.stream_id, exc)
            self.fail("protocol error", CLOSE_POLICY, str(exc)[:120])
        else:
            log.error(
                "%s stream %s: unexpected error",
                self.codec.name,
                self.codec.stream_id,
                exc_info=exc,
            )
            self.fail("internal error", 1011, type(exc).__name__)

    def _media(self, payload: bytes) -> None:
        pcm = self._decode(payload)
        frame = AudioFrame(pcm, self._rate, 1, self._media_s)
        self._media_s += len(pcm) / self._pcm_bytes_per_s
        call = self.call
        if call is None or call.state is _NEW:
            if len(self._early) < _EARLY_FRAMES:
                self._early.append(frame)
            return
        if call.closed:
            return
        call.feed(frame)
        if call.congested:
            self._backpressure(call.take_overfull())

    def _backpressure(self, lanes: list[Lane]) -> None:
        if not lanes or self._paused:
            return
        self._paused = True
        self.link.pause_reading()

        async def resume() -> None:
            for lane in lanes:
                await lane.wait_space()
            self._paused = False
            if not self.closed:
                self.link.resume_reading()

        self._spawn(asyncio.get_running_loop().create_task(resume()))

    def _started(self, info: StreamStarted) -> None:
        if self.stream_secret:
            token = info.custom_parameters.get("token", "")
            if not hmac.compare_digest(token.encode(), self.stream_secret.encode()):
                metrics.REFUSED.labels("auth").inc()
                self.fail("refused: bad stream secret", CLOSE_POLICY, "bad stream secret")
                return
        if not self.manager.admit(self):
            self.closed = True
            self.outcome = "refused"
            self._close_link(CLOSE_TRY_AGAIN, "server busy")
            return
        self.info = info
        codec = self.codec
        # the format the stream announced (a Twilio stream may be A-law, an L16 one 16 kHz)
        self._decode = decoder(codec.encoding)
        self._rate = codec.sample_rate
        self._pcm_bytes_per_s = 2 * codec.sample_rate
        self.output = CarrierOutput(codec, self.link, self.playback)
        loop = asyncio.get_running_loop()
        self.output.on_hangup = lambda: self._spawn(loop.create_task(self.carrier_hangup()))
        self.output.on_transfer = lambda target: self._spawn(
            loop.create_task(self.carrier_transfer(target))
        )
        stages = self.agent(info, codec.sample_rate, codec.output_sample_rate)
        call_id = info.call_id or info.stream_id or ""
        self.call = Call(Pipeline([*stages, self.output]), call_id=call_id)
        start = StartFrame(
            call_id=call_id,
            sample_rate_in=codec.sample_rate,
            sample_rate_out=codec.output_sample_rate,
            metadata={"carrier": codec.name, "parameters": dict(info.custom_parameters)},
        )
        self.task = loop.create_task(self._run(self.call, start), name=f"harken:call:{call_id}")

    def _spawn(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, call: Call, start: StartFrame) -> None:
        try:
            await call.start(start)
            early, self._early = self._early, []
            for frame in early:
                if not call.closed:
                    call.feed(frame)
            await call.wait()
        finally:
            self._finish(call)

    def _finish(self, call: Call) -> None:
        outcome = self.outcome or call.state.value
        metrics.CALLS.labels(self.codec.name, outcome).inc()
        dropped = call.dropped_audio
        if self.output is not None:  # stale live audio dropped after stalls, in 20 ms frames
            dropped += self.output.pacer.dropped_bytes // self.output.pacer.chunk_bytes
        if dropped:
            metrics.DROPPED_AUDIO.inc(dropped)
        self.manager.release(self)
        self.closed = True
        self._close_link(CLOSE_NORMAL, "call ended")

    def _close_link(self, code: int, reason: str) -> None:
        if not self._link_closed:
            self._link_closed = True
            self.link.close(code, reason)

    # --- endings -----------------------------------------------------------------------------

    def _remote_ended(self, why: str) -> None:
        """The caller hung up or the socket closed: end the call; nothing more can play."""
        if self.output is not None:
            self.output.remote_closed()
        call = self.call
        if call is not None and not call.closed:
            self.outcome = self.outcome or "completed"
            call.end(why)
        self.closed = True

    def socket_closed(self) -> None:
        """The socket went away (with or without a ``stop``)."""
        if not self.closed or (self.call is not None and not self.call.closed):
            self._remote_ended("disconnected")

    def fail(self, outcome: str, code: int, reason: str) -> None:
        """End this call at once (bad input, refusal, bug) and close the socket."""
        self.outcome = outcome
        if self.call is not None and not self.call.closed:
            self.call.cancel(outcome)
        self.closed = True
        self._close_link(code, reason)

    def hang_up(self, reason: str = "agent") -> None:
        """Agent-initiated hang-up: remaining audio plays, then the carrier's REST hang-up."""
        if self.call is not None and not self.call.closed:
            self.call.feed(HangupFrame(reason=reason))

    async def carrier_hangup(self) -> None:
        """Called once the audio before a ``HangupFrame`` has played (or the deadman fired)."""
        handler, info = self.hangup_handler, self.info
        ok = "skipped"
        if handler is not None and info is not None:
            try:
                await handler(info)
                ok = "ok"
            except Exception as exc:  # noqa: BLE001 - reported; the call ends regardless
                log.warning("%s hang-up failed: %s", self.codec.name, exc)
                ok = "error"
        metrics.HANGUPS.labels(self.codec.name, ok).inc()
        self.outcome = "hangup"
        if self.call is not None and not self.call.closed:
            self.call.end("hangup")
        self.closed = True
        self._close_link(CLOSE_NORMAL, "hangup")

    async def carrier_transfer(self, target: str) -> None:
        """Called once the audio before a ``TransferFrame`` has played: the carrier moves the
        caller to ``target`` and our stream ends. Without a transfer handler (or when it fails)
        the call is hung up instead, never left hanging in silence."""
        handler, info = self.transfer_handler, self.info
        if handler is None or info is None:
            log.warning("%s: no transfer available; hanging up instead", self.codec.name)
            await self.carrier_hangup()
            return
        try:
            await handler(info, target)
        except Exception as exc:  # noqa: BLE001 - reported; the call is hung up instead
            log.warning("%s transfer to %s failed: %s", self.codec.name, target, exc)
            metrics.TRANSFERS.labels(self.codec.name, "error").inc()
            await self.carrier_hangup()
            return
        metrics.TRANSFERS.labels(self.codec.name, "ok").inc()
        self.outcome = "transfer"
        if self.call is not None and not self.call.closed:
            self.call.end("transfer")
        self.closed = True
        self._close_link(CLOSE_NORMAL, "transfer")
