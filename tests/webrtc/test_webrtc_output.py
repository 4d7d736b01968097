"""The WebRTC output stage without a browser: pacing by the track's pulls, playback truth
("drained"), flush on interruption, hold and resume, hang-up after playback."""

from __future__ import annotations

import asyncio

import pytest

from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    EndFrame,
    HangupFrame,
    InterruptionFrame,
    PausePlaybackFrame,
    ResumePlaybackFrame,
    SystemFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import Call, Pipeline, Stage
from harken.transports.webrtc_output import WebRtcOutput

RATE = 48000
CHUNK = RATE // 50 * 2  # bytes in 20 ms


class Spy(Stage):
    """First stage: records every system frame the call broadcasts."""

    def __init__(self) -> None:
        super().__init__("spy")
        self.system: list[SystemFrame] = []

    def on_system(self, frame: SystemFrame) -> None:
        self.system.append(frame)

    def of(self, kind: type[SystemFrame]) -> list[SystemFrame]:
        return [f for f in self.system if isinstance(f, kind)]


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def started(**options: float) -> tuple[Call, WebRtcOutput, Spy, Clock]:
    clock = Clock()
    out = WebRtcOutput(RATE, clock=clock, **options)
    spy = Spy()
    call = Call(Pipeline([spy, out]), call_id="t")
    await call.start()
    return call, out, spy, clock


def speak(call: Call, uid: int, chunks: int, level: int = 1000, rate: int = RATE) -> None:
    call.feed(TTSStartedFrame(utterance_id=uid))
    sample = level.to_bytes(2, "little", signed=True)
    for _ in range(chunks):
        call.feed(AudioFrame(sample * (rate // 50), rate))
    call.feed(TTSStoppedFrame(utterance_id=uid))


def pulls(out: WebRtcOutput, clock: Clock, n: int) -> list[bytes | None]:
    got = []
    for _ in range(n):
        got.append(out.pull(clock.t))
        clock.t += 0.02
    return got


def stopped(spy: Spy) -> list[AgentStoppedSpeakingFrame]:
    return [f for f in spy.system if isinstance(f, AgentStoppedSpeakingFrame)]


async def test_each_pull_releases_exactly_one_chunk_of_a_burst() -> None:
    call, out, spy, clock = await started()
    speak(call, 1, 50)  # one second of TTS at once
    assert out.pacer.queued_s == pytest.approx(1.0)
    got = pulls(out, clock, 60)
    assert all(g is not None and len(g) == CHUNK for g in got[:50])
    assert got[50:] == [None] * 10  # then silence, filled in by the track
    assert out.chunks_sent == 50
    # the first chunk announced the utterance, once
    assert [f.utterance_id for f in spy.of(AgentStartedSpeakingFrame)] == [1]  # type: ignore[attr-defined]


async def test_drained_completion_waits_for_the_browser_to_play_the_end() -> None:
    call, out, spy, clock = await started(sink_delay_s=0.1)
    speak(call, 1, 10)
    pulls(out, clock, 10)  # last chunk sent at t0 + 0.18; the encoder has it until t0 + 0.2
    pulls(out, clock, 5)  # t0 + 0.2 .. 0.28: still in the browser's jitter buffer
    assert stopped(spy) == []
    pulls(out, clock, 2)  # t0 + 0.3: played
    (done,) = stopped(spy)
    assert done.strategy == "drained" and not done.interrupted
    assert done.played_s == pytest.approx(0.2)


async def test_interruption_flushes_queued_audio_at_once() -> None:
    call, out, spy, clock = await started()
    speak(call, 1, 50)
    pulls(out, clock, 10)  # 200 ms sent
    call.interrupt()
    assert out.pacer.queued_s == 0
    assert pulls(out, clock, 3) == [None, None, None]  # nothing more leaves
    await asyncio.sleep(0)  # reported on the next loop turn, after the interruption
    (done,) = stopped(spy)
    assert done.interrupted and done.strategy == "interrupted"
    assert done.played_s == pytest.approx(0.2)  # what was sent cannot be recalled: heard
    # the next reply plays normally
    speak(call, 2, 3)
    assert all(g is not None for g in pulls(out, clock, 3))


async def test_hold_keeps_the_audio_and_resume_continues_where_it_held() -> None:
    call, out, spy, clock = await started(deadman_margin_s=0.2)
    level = 1234
    speak(call, 1, 20, level=level)
    pulls(out, clock, 5)
    call.system(PausePlaybackFrame())
    assert out.held
    held = pulls(out, clock, 100)  # two seconds of caller speech: far past the deadman
    assert held == [None] * 100
    assert out.pacer.queued_s == pytest.approx(15 * 0.02)  # nothing was dropped
    assert stopped(spy) == []  # and no deadman fired while held
    call.system(ResumePlaybackFrame())
    rest = pulls(out, clock, 15)
    assert all(g == level.to_bytes(2, "little", signed=True) * (CHUNK // 2) for g in rest)
    pulls(out, clock, 10)
    (done,) = stopped(spy)
    assert done.strategy == "drained" and done.played_s == pytest.approx(0.4)


async def test_end_and_hangup_wait_for_playback() -> None:
    call, out, _spy, clock = await started(sink_delay_s=0.04)
    hung: list[float] = []
    out.on_hangup = lambda: hung.append(clock.t)
    start = clock.t
    speak(call, 1, 10)
    call.feed(HangupFrame())
    assert hung == []
    pulls(out, clock, 30)
    assert len(hung) == 1
    assert hung[0] - start >= 0.2 + 0.04 - 1e-9  # the last words were heard first
    # EndFrame the same way: the call ends once the audio before it has played
    speak(call, 2, 5)
    call.feed(EndFrame())
    assert not call.closed
    pulls(out, clock, 20)
    assert call.closed


async def test_hangup_without_a_handler_ends_the_call() -> None:
    call, out, _spy, clock = await started()
    speak(call, 1, 2)
    call.feed(HangupFrame())
    pulls(out, clock, 10)
    assert call.closed


async def test_agent_audio_at_another_rate_is_resampled() -> None:
    call, out, _spy, clock = await started()
    speak(call, 1, 25, level=3000, rate=16000)  # 0.5 s at 16 kHz
    got = [g for g in pulls(out, clock, 40) if g is not None]
    assert len(got) == 25
    assert all(len(g) == CHUNK for g in got)


async def test_live_audio_is_trimmed_to_the_budget() -> None:
    call, out, _spy, _clock = await started()
    call.feed(TTSStartedFrame(utterance_id=1, live=True))
    for _ in range(20):  # a burst after a stall
        call.feed(AudioFrame(bytes(CHUNK), RATE))
    assert out.pacer.queued_s <= out.live_max_s + 1e-9
    assert out.pacer.dropped_bytes > 0


async def test_remote_gone_releases_waiters_and_reports_what_was_sent() -> None:
    call, out, spy, clock = await started()
    speak(call, 1, 20)
    pulls(out, clock, 4)
    ended: list[bool] = []
    out.after_playback(lambda: ended.append(True))
    out.remote_closed()
    assert ended == [True]
    (done,) = stopped(spy)
    assert done.strategy == "remote_closed" and done.played_s == pytest.approx(0.08)
    assert out.pull(clock.t) is None


def test_the_browser_sets_a_bounded_sink_delay() -> None:
    out = WebRtcOutput(RATE, clock=lambda: 0.0)
    out.set_sink_delay(0.045)
    assert out.sink_delay_s == pytest.approx(0.045)
    out.set_sink_delay(7.0)
    assert out.sink_delay_s == 0.5
    out.set_sink_delay(-1.0)
    assert out.sink_delay_s == 0.0


async def test_an_interruption_before_any_audio_reports_nothing_heard() -> None:
    call, _out, spy, _clock = await started()
    speak(call, 1, 5)
    call.system(InterruptionFrame())
    await asyncio.sleep(0)  # the report follows the interruption on the next loop turn
    (done,) = stopped(spy)
    assert done.interrupted and done.played_s == 0.0
    assert spy.of(AgentStartedSpeakingFrame) == []
