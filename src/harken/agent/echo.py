"""The echo agent: the caller's audio is played straight back (for load tests and checks).

Echoed audio is grouped into utterances of ``utterance_s`` so the transport's playback
machinery (marks, completion, deadman) runs exactly as it does for a speaking agent. Pressing
``hangup_digit`` (``#`` by default) makes the agent hang up: the audio already queued plays, then
the carrier's REST hang-up is called.
"""

from __future__ import annotations

from harken.frames import (
    AudioFrame,
    DTMFFrame,
    Frame,
    HangupFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import Stage


class EchoAgent(Stage):
    __slots__ = (
        "_bytes",
        "_in_utterance",
        "_uid",
        "hangup_digit",
        "utterance_bytes",
        "utterance_samples",
    )

    def __init__(self, sample_rate: int, utterance_s: float = 1.0, hangup_digit: str = "#") -> None:
        super().__init__("echo")
        self.hangup_digit = hangup_digit
        self.utterance_samples = max(1, int(sample_rate * utterance_s))
        self.utterance_bytes = 2 * self.utterance_samples  # PCM16 bytes per channel
        self._bytes = 0
        self._uid = 0
        self._in_utterance = False

    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            if not self._in_utterance:
                self._uid += 1
                self._in_utterance = True
                self.push_down(TTSStartedFrame(utterance_id=self._uid, live=True))
            self.push_down(frame)
            self._bytes += len(frame.pcm) // frame.channels
            if self._bytes >= self.utterance_bytes:
                self._bytes = 0
                self._in_utterance = False
                self.push_down(TTSStoppedFrame(utterance_id=self._uid))
            return
        self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, DTMFFrame) and frame.digit == self.hangup_digit:
            if self._in_utterance:
                self._in_utterance = False
                self._bytes = 0
                self.push_down(TTSStoppedFrame(utterance_id=self._uid))
            self.push_down(HangupFrame(reason=f"caller pressed {frame.digit}"))
