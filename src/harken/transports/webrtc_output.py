"""The outbound end of a WebRTC call: agent audio, paced by the track that sends it.

:class:`WebRtcOutput` is the last stage of a browser call's pipeline, the WebRTC analogue of
:class:`~harken.transports.output.CarrierOutput`. It has no socket and no timer of its own:
the outbound media track (:class:`harken.transports.webrtc.AgentAudioTrack`) asks it for one
20 ms chunk every 20 ms (:meth:`WebRtcOutput.pull`), and that pull is the clock. The stage

* queues agent audio (PCM16; other rates than the track's are resampled) in a
  :class:`~harken.transports.pacer.Pacer` whose lead is one chunk, so each pull releases exactly
  one chunk and nothing waits anywhere between the pacer and the encoder;
* groups audio into utterances (``TTSStartedFrame`` … ``TTSStoppedFrame``; audio outside them
  opens an implicit one) and resolves each through a
  :class:`~harken.transports.playback.PlaybackTracker` with the ``drained`` strategy: an
  utterance is complete once its last chunk has been sent and, by the clock, played by the
  browser (``sink_delay_s`` covers the network and the browser's jitter buffer; the page
  reports its jitter-buffer delay, see :meth:`set_sink_delay`), broadcasting
  ``AgentStartedSpeakingFrame`` when an utterance's first chunk is sent and
  ``AgentStoppedSpeakingFrame`` when it is resolved;
* on ``InterruptionFrame`` drops every queued chunk at once (the next pull is silence) and
  reports the utterance as heard up to what was sent: audio already sent cannot be recalled
  from the browser, so it is heard;
* on ``PausePlaybackFrame`` holds the queue (pulls return silence, nothing is dropped) and on
  ``ResumePlaybackFrame`` continues where it held, with the deadman moved by the pause;
* holds ``EndFrame`` and ``HangupFrame`` until the audio before them has played (or the deadman
  fired), then ends the call or calls :attr:`WebRtcOutput.on_hangup` (the session closes the
  peer connection).

Everything takes the time as an argument or from :attr:`WebRtcOutput.clock`, so the stage is
tested without a browser or a peer connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np

from harken.audio import Resampler
from harken.frames import (
    AgentStartedSpeakingFrame,
    AudioFrame,
    CancelFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InterruptionFrame,
    PausePlaybackFrame,
    ResumePlaybackFrame,
    SystemFrame,
    TransferFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.transports.output_base import PlaybackOutput
from harken.transports.pacer import AUDIO, Pacer
from harken.transports.playback import PlaybackTracker

__all__ = ["WebRtcOutput"]

FRAME_S = 0.02
_IMPLICIT_UTTERANCE_BASE = 1 << 30
_MAX_SINK_DELAY_S = 0.5


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


class WebRtcOutput(PlaybackOutput):
    """Last stage of a WebRTC call (see the module docstring)."""

    def __init__(
        self,
        sample_rate: int = 48000,
        *,
        sink_delay_s: float = 0.06,
        deadman_margin_s: float = 1.0,
        live_max_s: float = 0.06,
        clock: Callable[[], float] = _loop_time,
    ) -> None:
        super().__init__("webrtc-out")
        self.sample_rate = sample_rate
        self.bytes_per_s = sample_rate * 2
        chunk = self.bytes_per_s // 50
        self.chunk_bytes = chunk
        self.silence = bytes(chunk)
        self.pacer = Pacer(chunk, self.bytes_per_s, self.silence, lead_s=FRAME_S)
        self.tracker = PlaybackTracker("drained", deadman_margin_s)
        #: time from a chunk leaving here to the browser playing it (network + jitter buffer)
        self.sink_delay_s = sink_delay_s
        self.live_max_s = live_max_s
        self.clock = clock
        #: chunks sent with agent audio in them (silence pulls are not counted)
        self.chunks_sent = 0
        #: called with each chunk of agent audio as it leaves, and the time (recordings, tests)
        self.on_sent: Callable[[bytes, float], None] | None = None
        self._resamplers: dict[int, Resampler] = {}
        self._uid: int | None = None
        self._live = False
        self._auto_uid = _IMPLICIT_UTTERANCE_BASE
        self._announce: list[tuple[float, int]] = []
        self._paused_at: float | None = None
        self._carry: list[bytes] = []
        self._sent_until = 0.0  # when the encoder has consumed the last chunk sent

    # --- downstream --------------------------------------------------------------------------

    def on_down(self, frame: Frame) -> None:
        if frame.is_audio:
            self._audio(frame)  # type: ignore[arg-type]
        elif isinstance(frame, TTSStartedFrame):
            self._close_utterance()
            self._open_utterance(frame.utterance_id)
            self._live = frame.live
        elif isinstance(frame, TTSStoppedFrame):
            if self._uid == frame.utterance_id:
                self._close_utterance()
        elif isinstance(frame, EndFrame):
            self._close_utterance()
            self.after_playback(lambda: self.push_down(frame))
        elif isinstance(frame, HangupFrame | TransferFrame):
            # a browser cannot be transferred anywhere: a transfer ends the call like a hang-up
            self._close_utterance()
            self.after_playback(self._hang_up)
        else:
            self.push_down(frame)

    def _audio(self, frame: AudioFrame) -> None:
        if self.remote_gone:
            return
        pcm = frame.pcm
        if frame.channels > 1:
            pcm = np.frombuffer(pcm, "<i2")[:: frame.channels].tobytes()
        if frame.sample_rate != self.sample_rate:
            resampler = self._resamplers.get(frame.sample_rate)
            if resampler is None:
                resampler = Resampler(frame.sample_rate, self.sample_rate)
                self._resamplers[frame.sample_rate] = resampler
            pcm = resampler.process(pcm)
        if self._uid is None:
            self._auto_uid += 1
            self._open_utterance(self._auto_uid)
        self.pacer.push(pcm)
        if self._live:
            excess = self.pacer.queued_s - self.live_max_s
            if excess > 1e-9:
                self.pacer.trim(max(0.0, self.pacer.queued_s - excess))

    def _open_utterance(self, uid: int) -> None:
        self._uid = uid
        self.pacer.flush()
        offset = self.pacer.pushed_bytes / self.bytes_per_s
        self.tracker.begin(uid, offset)
        self._announce.append((offset, uid))

    def _close_utterance(self) -> None:
        uid, self._uid = self._uid, None
        self._live = False
        if uid is None or self.remote_gone:
            return
        now = self.clock()
        self.pacer.flush()
        end = self.pacer.pushed_bytes / self.bytes_per_s
        self.tracker.finish(uid, end, self.pacer.remaining_s(now) + self.sink_delay_s, now)

    # --- the track's clock -------------------------------------------------------------------

    def pull(self, now: float) -> bytes | None:
        """One 20 ms chunk of agent audio for the slot starting at ``now`` (None: silence).

        Called by the outbound track once per 20 ms slot with the slot's scheduled time; this
        is also when finished utterances are resolved and waiting hang-ups run.
        """
        if self.remote_gone:
            self._run_waiters()
            return None
        pacer = self.pacer
        if pacer.far_end > now:  # set from the loop's clock (a clear between slots): re-align
            pacer.far_end = now
        data = self._carry.pop(0) if self._carry and not pacer.paused else None
        for item in pacer.release(now):
            if item.kind != AUDIO:
                continue
            if data is None:
                data = bytes(item.data)
            else:  # more than one chunk due (not expected with a one-chunk lead): keep order
                self._carry.append(item.data)
            while self._announce and self._announce[0][0] <= item.offset_s + 1e-9:
                _, uid = self._announce.pop(0)
                self._broadcast(AgentStartedSpeakingFrame(utterance_id=uid))
        if data is not None:
            self._sent_until = now + FRAME_S
            self.chunks_sent += 1
            if self.on_sent is not None:
                self.on_sent(data, now)
        if self._paused_at is None:
            for completion in self.tracker.on_clock(self.played_offset(now), now):
                self._report(completion)
        self._run_waiters()
        return data

    def played_offset(self, now: float) -> float:
        """Stream position the browser has played by the clock (seconds): everything sent,
        less what the last chunk sent and the browser's delay still hold."""
        sent = self.pacer.sent_bytes / self.bytes_per_s
        return sent - max(0.0, self._sent_until + self.sink_delay_s - now)

    def set_sink_delay(self, seconds: float) -> None:
        """What the browser reports (its jitter-buffer delay plus the network), bounded."""
        self.sink_delay_s = min(max(seconds, 0.0), _MAX_SINK_DELAY_S)

    @property
    def held(self) -> bool:
        return self._paused_at is not None

    # --- system frames -----------------------------------------------------------------------

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, InterruptionFrame):
            self._paused_at = None
            self._interrupt()
        elif isinstance(frame, PausePlaybackFrame):
            if self._paused_at is None and not self.remote_gone:
                self._paused_at = self.clock()
                self.pacer.paused = True
        elif isinstance(frame, ResumePlaybackFrame):
            paused_at, self._paused_at = self._paused_at, None
            if paused_at is not None:
                self.pacer.paused = False
                self.tracker.postpone(self.clock() - paused_at)
        elif isinstance(frame, CancelFrame):
            self.remote_gone = True
            self._waiters.clear()

    def _interrupt(self) -> None:
        now = self.clock()
        heard_to = self.pacer.sent_bytes / self.bytes_per_s  # sent is heard: no recall
        self.pacer.clear(now)
        self._carry.clear()
        self._uid = None
        self._announce.clear()
        completions = self.tracker.interrupt(heard_to)
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        for completion in completions:  # after the interruption has reached every stage
            if loop is not None:
                loop.call_soon(self._report, completion)
            else:
                self._report(completion)
        self._run_waiters()

    def remote_closed(self) -> None:
        """The peer connection is gone: nothing more can play; release whoever waits."""
        if self.remote_gone:
            return
        self.remote_gone = True
        heard_to = self.pacer.sent_bytes / self.bytes_per_s
        self.pacer.clear(self.clock())
        self._carry.clear()
        self._uid = None
        for completion in self.tracker.interrupt(heard_to, reason="remote_closed"):
            self._report(completion)
        self._run_waiters()

    # --- completion ---------------------------------------------------------------------------

    def _settled(self) -> bool:
        return self.pacer.idle and not self._carry and not self.tracker.active and not self.held

    def _hang_up(self) -> None:
        if self.on_hangup is not None:
            self.on_hangup()
        else:
            call = self.call
            if call is not None and not call.closed:
                call.end("hangup")
