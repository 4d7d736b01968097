"""What every transport's last stage shares: reporting finished utterances and running work
once everything queued has played.

:class:`PlaybackOutput` is the base of :class:`~harken.transports.output.CarrierOutput`
(Twilio, Telnyx, ... over WebSocket) and :class:`~harken.transports.webrtc_output.WebRtcOutput`
(browsers). Each subclass says when nothing is queued or playing (:meth:`_settled`); the base
keeps the waiters (an ``EndFrame``, a hang-up or a transfer waits for the audio before it) and
turns each :class:`~harken.transports.playback.Completion` into the Prometheus counters, the
``on_completion`` hook and an :class:`~harken.frames.AgentStoppedSpeakingFrame` for every stage.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter

from harken.frames import AgentStoppedSpeakingFrame, SystemFrame
from harken.pipeline import Stage
from harken.server import metrics
from harken.transports.playback import Completion

__all__ = ["PlaybackOutput"]


class PlaybackOutput(Stage):
    """Base of a transport's output stage (see the module docstring)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.remote_gone = False
        self.on_completion: Callable[[Completion], None] | None = None
        self.on_hangup: Callable[[], None] | None = None
        self._waiters: list[Callable[[], None]] = []

    def _settled(self) -> bool:
        """Nothing is queued, held or still playing at the far end."""
        raise NotImplementedError

    def after_playback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything queued has played (or could not be played)."""
        self._waiters.append(callback)
        self._run_waiters()

    def _run_waiters(self) -> None:
        if not self._waiters or (not self.remote_gone and not self._settled()):
            return
        waiters, self._waiters = self._waiters, []
        for callback in waiters:
            callback()

    def _report(self, completion: Completion) -> None:
        _playback_counter(completion.strategy).inc()
        if completion.strategy == "deadman":
            metrics.DEADMAN.inc()
        if self.on_completion is not None:
            self.on_completion(completion)
        self._broadcast(
            AgentStoppedSpeakingFrame(
                utterance_id=completion.utterance_id,
                played_s=completion.played_s,
                interrupted=completion.interrupted,
                strategy=completion.strategy,
            )
        )

    def _broadcast(self, frame: SystemFrame) -> None:
        call = self.call
        if call is not None and not call.closed:
            call.system(frame)


_PLAYBACK: dict[str, Counter] = {}  # strategy -> labelled child of metrics.PLAYBACK


def _playback_counter(strategy: str) -> Counter:
    """``metrics.PLAYBACK.labels(strategy)``, looked up once per strategy (labels() costs about
    three times the increment)."""
    child = _PLAYBACK.get(strategy)
    if child is None:
        child = _PLAYBACK[strategy] = metrics.PLAYBACK.labels(strategy)
    return child
