"""The ``bench_vad`` agent: the hot path of a real call without STT, LLM or TTS models.

Pipeline per call: ``VadStage`` (energy gate + batched Silero) -> ``TurnStage`` (Smart Turn v3.2
on each VAD stop, silence backstop) -> :class:`ReplyInPlaceAgent` -> the carrier output.

:class:`ReplyInPlaceAgent` echoes the caller's audio (grouped into utterances, as the ``echo``
agent does) and, at each :class:`~harken.frames.UserTurnEndFrame`, answers with a
pre-synthesised reply: ``TTSStartedFrame``, the reply audio, ``TTSStoppedFrame``. The reply goes
out **in place of the echo**, one 20 ms slice per caller frame, instead of as one long frame
queued ahead of the echo. That keeps the returned stream exactly as long as the caller's, so
the load generator measures every chunk's round trip by byte count in this scenario too (a
reply queued in front of the echo would delay all later echo by its length, for the rest of the
call, and no round trip would mean anything). The reply latency it sees (end of caller speech
-> first reply audio) is therefore turn detection + one frame + the transport's round trip.

The reply comes from ``$HARKEN_BENCH_REPLY`` (raw 8 kHz int16 PCM, written by the bench from
Piper), else a synthetic one (:func:`harken.bench.callers.tone_reply`). Select the agent with
``agent: {kind: bench_vad}`` in the server config.
"""

from __future__ import annotations

import os
from pathlib import Path

from harken.audio.resample import resample
from harken.frames import (
    AudioFrame,
    DTMFFrame,
    Frame,
    HangupFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Stage
from harken.protocols.events import StreamStarted
from harken.server.config import Config
from harken.transports.carrier import AgentFactory

REPLY_ENV = "HARKEN_BENCH_REPLY"
REPLY_RATE = 8000
_REPLY_UID_BASE = 1 << 30  # reply utterance ids, apart from the echo's


class ReplyInPlaceAgent(Stage):
    """Echo, and at each turn end a reply in place of the echo (see the module docstring)."""

    __slots__ = (
        "_echo_open",
        "_pos",
        "_replies",
        "_samples",
        "_uid",
        "hangup_digit",
        "reply",
        "turn_ends",
        "utterance_samples",
    )

    def __init__(
        self,
        sample_rate: int,
        reply_pcm: bytes,
        utterance_s: float = 1.0,
        hangup_digit: str = "#",
    ) -> None:
        super().__init__("bench-reply")
        self.reply = reply_pcm
        self.utterance_samples = max(1, int(sample_rate * utterance_s))
        self.hangup_digit = hangup_digit
        self.turn_ends = 0
        self._pos = -1  # byte position in the reply while one is playing
        self._samples = 0
        self._uid = 0
        self._replies = 0
        self._echo_open = False

    def on_down(self, frame: Frame) -> None:
        if not isinstance(frame, AudioFrame):
            self.push_down(frame)
            return
        if self._pos >= 0:
            self._reply_slice(frame)
            return
        if not self._echo_open:
            self._uid += 1
            self._echo_open = True
            self.push_down(TTSStartedFrame(utterance_id=self._uid, live=True))
        self.push_down(frame)
        self._samples += frame.num_samples
        if self._samples >= self.utterance_samples:
            self._close_echo()

    def _reply_slice(self, frame: AudioFrame) -> None:
        pos, n = self._pos, len(frame.pcm)
        piece = self.reply[pos : pos + n]
        pcm = piece + frame.pcm[len(piece) :]  # the reply's last slice is topped up with echo
        self.push_down(AudioFrame(pcm, frame.sample_rate, frame.channels, frame.timestamp))
        pos += n
        if pos >= len(self.reply):
            self._pos = -1
            self.push_down(TTSStoppedFrame(utterance_id=_REPLY_UID_BASE + self._replies))
        else:
            self._pos = pos

    def _close_echo(self) -> None:
        if self._echo_open:
            self._echo_open = False
            self._samples = 0
            self.push_down(TTSStoppedFrame(utterance_id=self._uid))

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, UserTurnEndFrame):
            self.turn_ends += 1
            if self._pos < 0 and self.reply:  # a reply already playing is not restarted
                self._close_echo()
                self._replies += 1
                self._pos = 0
                self.push_down(
                    TTSStartedFrame(utterance_id=_REPLY_UID_BASE + self._replies, live=True)
                )
        elif isinstance(frame, DTMFFrame) and frame.digit == self.hangup_digit:
            self._close_echo()
            self.push_down(HangupFrame(reason=f"caller pressed {frame.digit}"))


def load_reply(path: str | Path | None = None) -> bytes:
    """The reply PCM (8 kHz int16): ``path``, ``$HARKEN_BENCH_REPLY``, or a synthetic one."""
    path = path or os.environ.get(REPLY_ENV)
    if path:
        data = Path(path).read_bytes()
        return data[: len(data) - len(data) % 320]
    from harken.bench.callers import tone_reply

    return tone_reply().tobytes()


def bench_vad_agent(config: Config, reply_pcm: bytes | None = None) -> AgentFactory:
    """The agent factory for ``agent.kind: bench_vad`` (turn detection as ``agent.turn`` says:
    Smart Turn within its CPU share ``max_cpu``, the silence timer when it is late or over it)."""
    from harken.speech.turn import TurnParams, TurnStage, default_turn_pool
    from harken.speech.vad import VadStage

    t = config.agent.turn
    params = TurnParams(
        model=t.model,
        threshold=t.threshold,
        silence_s=t.silence_ms / 1000,
        fallback_s=t.fallback_ms / 1000,
        text="off",  # no STT in this agent
    )
    if t.model:
        default_turn_pool().max_busy = t.max_cpu
    reply = load_reply() if reply_pcm is None else reply_pcm
    by_rate: dict[int, bytes] = {REPLY_RATE: reply}
    utterance_s = config.agent.utterance_ms / 1000

    def make(info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        if rate_out not in by_rate:
            by_rate[rate_out] = resample(reply, REPLY_RATE, rate_out)
        if rate_in != rate_out:  # the echo must be at the output rate: not a bench setup
            raise ValueError(f"bench_vad needs equal in/out rates, got {rate_in}/{rate_out}")
        agent = ReplyInPlaceAgent(rate_in, by_rate[rate_out], utterance_s)
        return [VadStage(), TurnStage(params), agent]

    return make
