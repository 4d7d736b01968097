"""Browser calls over WebRTC (aiortc): a peer connection in, a harken call in the middle.

One :class:`WebRtcSession` per browser. Signalling is one HTTP exchange (non-trickle ICE): the
page posts its offer with every candidate gathered, :meth:`WebRtcSession.accept` answers with
ours (aiortc gathers before ``setLocalDescription`` returns). The session then

* admits the call through the worker's :class:`~harken.transports.carrier.CallManager` (the same
  ``max_calls`` and draining as carrier calls) and starts it when the connection is up;
* reads the browser's audio (:class:`InboundAudio`): aiortc decodes Opus into 48 kHz frames; they
  are mixed to mono, resampled to the agent's input rate (16 kHz by default), gaps in the RTP
  timeline are concealed (:class:`~harken.audio.Concealer`) so media time stays true, and
  exact 20 ms frames are fed to the call;
* sends the agent's audio on :class:`AgentAudioTrack`, whose ``recv()`` is paced at 20 ms and
  pulls one chunk per slot from the call's :class:`~harken.transports.webrtc_output.WebRtcOutput`;
* carries events to the page on a data channel (negotiated, id 0, label ``events``) and reads
  the page's messages (its jitter-buffer delay, which sets the output's ``sink_delay_s``);
* ends the call when the browser goes away, and closes the peer connection when the agent hangs
  up (after its last words have played).

**Jitter on the way in.** aiortc's receiver puts packets through its own jitter buffer, which
orders them by sequence number and releases a frame once ``prefetch`` newer frames are
complete; a missing packet holds the queue until the buffer (``capacity`` packets) overflows,
then it is skipped. aiortc's defaults (16 packets, prefetch 4) add 80 ms to every frame; the
agent does not play the caller's audio out (VAD and STT work in media time), so ordering is all
it needs, and :class:`WebRtcSettings` sets prefetch 1 (20 ms) and capacity 8 (a loss stalls at
most 160 ms, then the gap is concealed). That replaces a private attribute of aiortc's
``RTCRtpReceiver``; if a later aiortc renames it, its defaults stay and a warning is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import orjson
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from harken.audio import Concealer, Rechunker, Resampler
from harken.errors import RemoteProtocolError, TransportError
from harken.frames import AudioFrame, StartFrame
from harken.pipeline import Call, CallState, Pipeline, Stage
from harken.protocols.events import StreamStarted
from harken.server import metrics
from harken.transports.carrier import AgentFactory, CallManager, CarrierSession
from harken.transports.webrtc_output import FRAME_S, WebRtcOutput

__all__ = [
    "AgentAudioTrack",
    "InboundAudio",
    "WebRtcSession",
    "WebRtcSettings",
]

log = logging.getLogger("harken.webrtc")

CARRIER = "webrtc"
_BEHIND_MAX_S = 0.1  # a recv() later than this behind its schedule re-bases the schedule
_EVENT_BACKLOG = 256  # events kept while the data channel is not open yet


@dataclass(frozen=True, slots=True)
class WebRtcSettings:
    """Per-worker settings of browser calls (from ``webrtc:`` in the config)."""

    sample_rate_in: int = 16000  # what the agent hears (Silero and Whisper run at 16 kHz)
    sample_rate_out: int = 48000  # what the agent speaks (Opus codes 48 kHz)
    ice_servers: tuple[str, ...] = ()  # "stun:host:port"; none: host candidates only
    jitter_capacity: int = 8  # aiortc's receive jitter buffer, packets (a power of two)
    jitter_prefetch: int = 1  # frames it holds before decoding (aiortc's default is 4)
    max_conceal_s: float = 0.2  # longer gaps in the caller's audio jump media time instead
    connect_timeout_s: float = 15.0
    sink_delay_s: float = 0.06  # network + browser jitter buffer until the page reports it
    deadman_margin_s: float = 1.0


#: Adds stages around the agent's (the playground's event taps); gets the session too.
Decorate = Callable[[list[Stage], "WebRtcSession"], list[Stage]]


# --------------------------------------------------------------------------------------------
# audio in


def mono_pcm(frame: av.AudioFrame) -> tuple[npt.NDArray[np.int16], int, int | None]:
    """A decoded frame as (mono int16 samples, sample rate, pts in samples or None)."""
    data = frame.to_ndarray()
    channels = frame.layout.nb_channels
    if data.dtype != np.int16:
        if np.issubdtype(data.dtype, np.floating):
            data = np.clip(data * 32768.0, -32768, 32767)
        data = data.astype(np.int16)
    if frame.format.is_planar:
        pcm = data[0]
    else:
        pcm = data.reshape(-1)[::channels] if channels > 1 else data.reshape(-1)
    pts = frame.pts
    if (
        pts is not None
        and frame.time_base is not None
        and frame.time_base != fractions.Fraction(1, frame.sample_rate)
    ):
        pts = int(pts * frame.time_base * frame.sample_rate)
    return np.ascontiguousarray(pcm, dtype=np.int16), frame.sample_rate, pts


class InboundAudio:
    """The browser's decoded audio, as the agent hears it: mono, at ``rate``, in exact 20 ms
    frames stamped with media time; gaps in the sender's timeline (lost packets) up to
    ``max_conceal_s`` are concealed, longer ones move media time on without audio."""

    __slots__ = (
        "_concealer",
        "_next_pts",
        "_rechunk",
        "_resampler",
        "concealed_s",
        "gaps",
        "max_conceal_s",
        "media_s",
        "rate",
    )

    def __init__(self, rate: int = 16000, max_conceal_s: float = 0.2) -> None:
        self.rate = rate
        self.max_conceal_s = max_conceal_s
        self._resampler: Resampler | None = None
        self._rechunk = Rechunker(rate)
        self._concealer = Concealer(rate)
        self._next_pts: int | None = None
        self.media_s = 0.0  # media time of the next frame out
        self.concealed_s = 0.0
        self.gaps = 0

    def push(
        self, pcm: npt.NDArray[np.int16], rate: int, pts: int | None = None
    ) -> list[AudioFrame]:
        """One decoded chunk (any length) in; the complete 20 ms frames out."""
        resampler = self._resampler
        if resampler is None or resampler.in_rate != rate:
            resampler = self._resampler = Resampler(rate, self.rate)
            self._next_pts = None
        out: list[AudioFrame] = []
        if pts is not None:
            expected, self._next_pts = self._next_pts, pts + pcm.size
            if expected is not None and pts > expected:
                self.gaps += 1
                gap_s = (pts - expected) / rate
                if gap_s <= self.max_conceal_s:
                    fill = self._concealer.conceal(round(gap_s * self.rate))
                    self.concealed_s += gap_s
                    out += self._frames(fill.tobytes())
                else:
                    self.media_s += gap_s
        converted = resampler.process_array(pcm)
        out += self._frames(self._concealer.good(converted).tobytes())
        return out

    def _frames(self, pcm: bytes) -> list[AudioFrame]:
        frames = []
        for chunk in self._rechunk.push(pcm):
            frames.append(AudioFrame(chunk, self.rate, timestamp=self.media_s))
            self.media_s += FRAME_S
        return frames


# --------------------------------------------------------------------------------------------
# audio out


class AgentAudioTrack(MediaStreamTrack):
    """The agent's voice: ``recv()`` returns one 20 ms frame per 20 ms, pulled from the output.

    The schedule is the track's own (a start time plus 20 ms per frame); the slot's scheduled
    time is what :meth:`WebRtcOutput.pull` sees, so exactly one chunk leaves per slot. A
    ``recv()`` more than 100 ms behind schedule (an event-loop stall) re-bases the schedule
    instead of bursting to catch up.
    """

    kind = "audio"

    def __init__(self, output: WebRtcOutput) -> None:
        super().__init__()
        self.output = output
        self.rate = output.sample_rate
        self.samples = output.chunk_bytes // 2
        self.frames = 0
        self._start: float | None = None
        self._silence = bytes(output.chunk_bytes)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        else:
            due = self._start + self.frames * FRAME_S
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > _BEHIND_MAX_S:
                self._start = now - self.frames * FRAME_S
        slot = self._start + self.frames * FRAME_S
        try:
            pcm = self.output.pull(slot)
        except Exception:  # a bug here must not stop aiortc's sender: send silence
            log.exception("webrtc: output pull failed")
            pcm = None
        frame = av.AudioFrame(format="s16", layout="mono", samples=self.samples)
        frame.planes[0].update(pcm if pcm is not None else self._silence)
        frame.sample_rate = self.rate
        frame.time_base = fractions.Fraction(1, self.rate)
        frame.pts = self.frames * self.samples
        self.frames += 1
        return frame


# --------------------------------------------------------------------------------------------
# the session


def _tune_jitter_buffer(pc: RTCPeerConnection, capacity: int, prefetch: int) -> None:
    """Replace aiortc's receive jitter buffer of each audio receiver (see the module
    docstring): a private attribute, so a rename leaves aiortc's own and logs a warning."""
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind != "audio":
            continue
        name = "_RTCRtpReceiver__jitter_buffer"
        if hasattr(receiver, name):
            setattr(receiver, name, JitterBuffer(capacity=capacity, prefetch=prefetch))
        else:
            log.warning("webrtc: aiortc's receiver has no %s; its jitter buffer is kept", name)


class WebRtcSession:
    """One browser call (see the module docstring)."""

    def __init__(
        self,
        manager: CallManager,
        agent: AgentFactory,
        settings: WebRtcSettings | None = None,
        *,
        decorate: Decorate | None = None,
        user_agent: str = "",
    ) -> None:
        self.manager = manager
        self.agent = agent
        self.settings = settings or WebRtcSettings()
        self.decorate = decorate
        self.user_agent = user_agent
        self.call_id = f"webrtc-{uuid.uuid4().hex[:12]}"
        self.pc: RTCPeerConnection | None = None
        self.channel: RTCDataChannel | None = None
        self.call: Call | None = None
        self.output: WebRtcOutput | None = None
        self.inbound = InboundAudio(self.settings.sample_rate_in, self.settings.max_conceal_s)
        self.track: AgentAudioTrack | None = None
        self.admitted = False
        self.closed = False
        self.outcome = ""
        #: called with each message the page sends on the data channel (decoded JSON)
        self.on_message: Callable[[dict[str, Any]], None] | None = None
        self._remote: MediaStreamTrack | None = None
        self._backlog: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self.connected = asyncio.Event()

    # --- signalling --------------------------------------------------------------------------

    async def accept(self, sdp: str, kind: str = "offer") -> RTCSessionDescription:
        """Answer the browser's offer (every candidate included); admits the call first.

        Raises :class:`TransportError` when the worker refuses calls (full or draining) and
        :class:`RemoteProtocolError` when the offer is unusable (no audio, bad SDP).
        """
        if kind != "offer" or "m=audio" not in sdp:
            raise RemoteProtocolError("expected an SDP offer with an audio section")
        if not self.manager.admit(self._as_session()):
            self.closed = True
            self.outcome = "refused"
            raise TransportError(self.manager.refusal() or "refused")
        self.admitted = True
        s = self.settings
        config = RTCConfiguration(iceServers=[RTCIceServer(url) for url in s.ice_servers])
        pc = self.pc = RTCPeerConnection(config)
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", self._state_changed)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as exc:  # aiortc's SDP parser raises assorted errors
            self.fail("bad offer")
            raise RemoteProtocolError(f"unusable offer: {exc!r}") from exc
        try:
            channel = self.channel = pc.createDataChannel("events", negotiated=True, id=0)
            channel.on("open", self._flush_events)
            channel.on("message", self._message)
            _tune_jitter_buffer(pc, s.jitter_capacity, s.jitter_prefetch)
            self.output = WebRtcOutput(
                s.sample_rate_out,
                sink_delay_s=s.sink_delay_s,
                deadman_margin_s=s.deadman_margin_s,
            )
            self.track = AgentAudioTrack(self.output)
            pc.addTrack(self.track)
            await pc.setLocalDescription(await pc.createAnswer())
        except ValueError as exc:  # aiortc's complaint about the offer (no ICE credentials…)
            self.fail("bad offer")
            raise RemoteProtocolError(f"unusable offer: {exc}") from exc
        except BaseException:
            self.fail("internal error")
            raise
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(s.connect_timeout_s, self._connect_timeout)
        answer = pc.localDescription
        assert answer is not None
        return answer

    def _as_session(self) -> CarrierSession:
        # the manager only needs identity and fail(): duck-typed like the SIP calls
        return self  # type: ignore[return-value]

    # --- peer connection events --------------------------------------------------------------

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._remote is None:
            self._remote = track
            self._spawn(self._read(track), "reader")

    def _state_changed(self) -> None:
        pc = self.pc
        if pc is None:
            return
        state = pc.connectionState
        if state == "connected" and not self.connected.is_set():
            self.connected.set()
            if self._timer is not None:
                self._timer.cancel()
            self._start_call()
        elif state in ("failed", "closed"):
            self._remote_ended("disconnected" if state == "closed" else "ice failed")

    def _connect_timeout(self) -> None:
        if not self.connected.is_set() and not self.closed:
            log.info("webrtc %s: no connection within the timeout", self.call_id)
            self.fail("connect timeout", 0, "")

    # --- the call ----------------------------------------------------------------------------

    def _start_call(self) -> None:
        if self.closed or self.call is not None or self.output is None:
            return
        s = self.settings
        info = StreamStarted(
            stream_id=self.call_id,
            call_id=self.call_id,
            account_id="",
            custom_parameters={"transport": CARRIER, "user_agent": self.user_agent[:200]},
            encoding="l16",
            sample_rate=s.sample_rate_in,
        )
        output = self.output
        output.on_hangup = self._agent_hung_up
        stages = self.agent(info, s.sample_rate_in, s.sample_rate_out)
        if self.decorate is not None:
            stages = self.decorate(stages, self)
        self.call = Call(Pipeline([*stages, output]), call_id=self.call_id)
        start = StartFrame(
            call_id=self.call_id,
            sample_rate_in=s.sample_rate_in,
            sample_rate_out=s.sample_rate_out,
            metadata={"carrier": CARRIER, "parameters": dict(info.custom_parameters)},
        )
        self._spawn(self._run(self.call, start), "call")

    async def _run(self, call: Call, start: StartFrame) -> None:
        try:
            await call.start(start)
            await call.wait()
        finally:
            self._finish(call)

    async def _read(self, track: MediaStreamTrack) -> None:
        inbound = self.inbound
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                break
            if not isinstance(frame, av.AudioFrame):
                continue
            pcm, rate, pts = mono_pcm(frame)
            frames = inbound.push(pcm, rate, pts)
            call = self.call
            if call is None or call.closed or call.state is CallState.NEW:
                continue  # before the call starts (the greeting has not begun): not heard
            for f in frames:
                call.feed(f)
            if call.congested:
                await call.relieve()
        self._remote_ended("disconnected")

    def _finish(self, call: Call) -> None:
        outcome = self.outcome or call.state.value
        metrics.CALLS.labels(CARRIER, outcome).inc()
        self._release()
        self.closed = True
        self._spawn(self._close_pc(), "close")

    def _release(self) -> None:
        if self.admitted:
            self.admitted = False
            self.manager.release(self._as_session())

    # --- endings -----------------------------------------------------------------------------

    def _remote_ended(self, why: str) -> None:
        """The browser went away (closed, ICE failed, its track ended): end the call."""
        if self.output is not None:
            self.output.remote_closed()
        call = self.call
        if call is not None and not call.closed:
            self.outcome = self.outcome or "completed"
            call.end(why)
        elif call is None:
            self.fail(self.outcome or why, 0, "")

    def _agent_hung_up(self) -> None:
        """The agent's last words have played: tell the page, end the call, close."""
        self.outcome = self.outcome or "hangup"
        self.send_event({"type": "bye", "reason": "agent hung up"})
        call = self.call
        if call is not None and not call.closed:
            call.end("hangup")

    def fail(self, outcome: str, code: int = 0, reason: str = "") -> None:
        """End this call at once (refusal, timeout, drain, bug) and close the connection."""
        self.outcome = self.outcome or outcome
        call = self.call
        if call is not None and not call.closed:
            call.cancel(outcome)  # _finish releases and closes
            return
        if call is None:
            self._release()
            if not self.closed:
                self.closed = True
                self._spawn(self._close_pc(), "close")

    async def _close_pc(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        pc = self.pc
        if pc is None:
            return
        await asyncio.sleep(0.05)  # let a last event (bye) leave on the data channel
        with contextlib.suppress(Exception):
            await pc.close()

    async def close(self) -> None:
        """Shut down (the worker is closing): end the call and close the peer connection."""
        self.fail("shutdown")
        pc = self.pc
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    # --- the data channel --------------------------------------------------------------------

    def send_event(self, event: dict[str, Any]) -> None:
        """Send one event to the page (kept until the channel opens; dropped once closed)."""
        text = orjson.dumps(event).decode()
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif (channel is None or channel.readyState == "connecting") and len(
            self._backlog
        ) < _EVENT_BACKLOG:
            self._backlog.append(text)

    def _flush_events(self) -> None:
        backlog, self._backlog = self._backlog, []
        channel = self.channel
        if channel is not None:
            for text in backlog:
                channel.send(text)

    def _message(self, message: str | bytes) -> None:
        try:
            data = orjson.loads(message)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if data.get("type") == "stats" and self.output is not None:
            delay = data.get("sink_delay_ms")
            if isinstance(delay, int | float):
                self.output.set_sink_delay(float(delay) / 1000)
        elif data.get("type") == "hangup":
            self._remote_ended("caller hung up")
        if self.on_message is not None:
            self.on_message(data)

    # --- tasks -------------------------------------------------------------------------------

    def _spawn(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"harken:{what}:{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
