"""Playing a scenario: one emulated Twilio call, the caller's steps, and what came back.

:func:`run_call` dials ``url`` with a :class:`~harken.testing.twilio.TwilioEmulator` (paced
media, silence between utterances as a real call has, marks echoed, ``clear`` honoured),
executes the scenario's steps and returns a :class:`CallResult` with the caller's acts, the
agent's audio and the measurements (:mod:`harken.sim.measure`).

Caller times come from the emulator's send trace: an utterance's frames are the first frames
sent after it was queued, so the send time of every 20 ms frame is known, and with it the onset,
the end and the pauses of the speech in it. They are send times; a real carrier adds its own
packetisation and network delay (tens of ms) before the server hears anything.

Agent times come from :class:`~harken.sim.listen.AgentTrack`, polled every
:data:`POLL_S` while the call runs (it decides when ``wait_agent`` is over and when a
backchannel or barge-in is due), and from :func:`~harken.sim.listen.from_emulator` afterwards.

:func:`finish` does the work that must not overlap live calls: Whisper on the agent's audio for
the ``expect`` checks, and reading the server's per-reply records when they are reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.sim import voices
from harken.sim.listen import AgentAudio, AgentTrack, Span, from_emulator
from harken.sim.measure import ActKind, CallerAct, CallMetrics, analyse
from harken.sim.script import (
    Backchannel,
    BargeIn,
    Dtmf,
    Expect,
    Hangup,
    Say,
    Scenario,
    Silence,
    Wait,
    WaitAgent,
)
from harken.sim.server import ServerTurn, server_turns
from harken.sim.transcribe import Reply, Transcriber, check, replies, window_text
from harken.testing._playback import PlayedSpan
from harken.testing.twilio import TwilioEmulator

__all__ = ["POLL_S", "CallResult", "finish", "match_server_turns", "run_call"]

POLL_S: Final = 0.01
REPLY_WAIT_S: Final = 15.0  # how long a backchannel or barge-in waits for the agent to speak
HANGUP_WAIT_S: Final = 12.0  # how long the caller waits for an expected hang-up after its script


@dataclass(slots=True)
class CallResult:
    """One simulated call: what happened, what was measured, and what failed."""

    scenario: str
    call_sid: str
    concurrency: int = 1
    started_wall: float = 0.0
    duration_s: float = 0.0
    acts: list[CallerAct] = field(default_factory=list)
    metrics: CallMetrics = field(default_factory=CallMetrics)
    audio: AgentAudio = field(default_factory=AgentAudio)
    agent_hung_up: bool = False
    timed_out: bool = False
    error: str = ""
    issues: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    cut_short: int = 0  # the first step that had something to do when the call had ended
    late_sends: int = 0
    max_late_ms: float = 0.0
    replies: list[Reply] = field(default_factory=list)
    server: list[ServerTurn] | None = None
    # kept for finish(): the checks and the audio they need
    checks: list[tuple[Expect, Span]] = field(default_factory=list)
    final_expect: Expect = field(default_factory=Expect)
    pcm: npt.NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, np.int16))
    played: list[PlayedSpan] = field(default_factory=list)
    t0: float = 0.0
    wall0: float = 0.0  # the epoch time of t0 (the server's records are stamped in epoch time)

    @property
    def status(self) -> str:
        if self.error:
            return "error"
        if self.timed_out:
            return "timeout"
        return "fail" if self.failures else "pass"


class _Call:
    """The caller's side of one call while it runs."""

    def __init__(self, scenario: Scenario, em: TwilioEmulator, result: CallResult) -> None:
        self.scenario = scenario
        self.em = em
        self.track = AgentTrack(em)
        self.result = result
        self.loop = asyncio.get_running_loop()
        self.t_ref = 0.0  # end of the caller's last act (or the call's start)
        self.t_waited = 0.0  # when the last wait_agent was satisfied

    def now(self) -> float:
        return self.loop.time()

    async def until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate()`` until it holds (True), the call ends or the time is up."""
        deadline = self.now() + timeout
        while True:
            self.track.update()
            if predicate():
                return True
            if self.em.closed or self.now() >= deadline:
                return False
            await asyncio.sleep(POLL_S)

    async def sleep(self, seconds: float) -> None:
        await self.until(lambda: False, seconds)

    async def speak(self, utt: voices.Utterance) -> tuple[float, float, tuple[Span, ...]]:
        """Send an utterance; its onset, end and pauses as send times."""
        trace = self.em.send_trace
        assert trace is not None
        n0, t_submit = len(trace), self.now()
        await self.em.play(utt.pcm)
        i0 = next((i for i in range(n0, len(trace)) if trace[i][2] >= t_submit), len(trace))
        sent = [t for _, _, t in trace[i0 : i0 + utt.frames]]
        if len(sent) < utt.frames:
            raise ConnectionResetError("the call ended while the caller spoke")
        times = [(sent[a], sent[b]) for a, b in utt.segments]
        pauses = tuple(Span(times[k][1], times[k + 1][0]) for k in range(len(times) - 1))
        return times[0][0], times[-1][1], pauses

    async def say(
        self, i: int, kind: ActKind, text: str, utt: voices.Utterance, reply: bool
    ) -> None:
        onset, end, pauses = await self.speak(utt)
        self.result.acts.append(CallerAct(kind, i, text, onset, end, pauses, reply))
        self.t_ref = end

    async def wait_agent(self, i: int, step: WaitAgent) -> None:
        t_ref = max(self.t_ref, self.t_waited)

        def done() -> bool:
            now = self.now()
            return (
                self.track.spoke_since(t_ref, now) and self.track.quiet_since(now) >= step.quiet_s
            )

        if await self.until(done, step.timeout_s):
            self.t_waited = self.now()
        elif not self.em.closed:
            self.result.issues.append(
                f"step {i}: agent did not speak and go quiet in {step.timeout_s:g} s"
            )

    async def over_reply(self, i: int, step: Backchannel | BargeIn) -> None:
        """Speak ``step`` ``after_s`` into the agent's next reply."""
        t_ref, onset = max(self.t_ref, self.t_waited), None

        def started() -> bool:
            nonlocal onset
            onset = self.track.onset_after(t_ref, self.now())
            return onset is not None

        if not await self.until(started, REPLY_WAIT_S):
            if not self.em.closed:
                self.result.issues.append(f"step {i}: the agent never spoke to talk over")
            return
        assert onset is not None
        await self.sleep(max(0.0, onset + step.after_s - self.now()))
        if self.em.closed:
            return
        kind: ActKind = "backchannel" if isinstance(step, Backchannel) else "barge_in"
        reply = isinstance(step, BargeIn) and step.reply
        await self.say(i, kind, step.text, voices.utterance([step.text], 0.0), reply)

    async def dtmf(self, i: int, step: Dtmf) -> None:
        first = 0.0
        for k, digit in enumerate(step.digits):
            if k:
                await asyncio.sleep(step.interval_s)
            await self.em.dtmf(digit)
            first = first if k else self.now()
        last = self.now()
        self.result.acts.append(CallerAct("dtmf", i, step.digits, first, last))
        self.t_ref = last

    async def run(self) -> None:
        for i, step in enumerate(self.scenario.steps):
            if self.em.closed:
                left = self.scenario.steps[i:]
                if any(not isinstance(s, WaitAgent | Wait | Silence | Hangup) for s in left):
                    self.result.cut_short = i
                return
            if isinstance(step, Say):
                utt = voices.utterance(step.parts, step.pause_s)
                await self.say(i, "say", step.text, utt, step.reply)
            elif isinstance(step, WaitAgent):
                await self.wait_agent(i, step)
            elif isinstance(step, Wait | Silence):
                await self.sleep(step.seconds)
            elif isinstance(step, Dtmf):
                await self.dtmf(i, step)
            elif isinstance(step, Backchannel | BargeIn):
                await self.over_reply(i, step)
            elif isinstance(step, Expect):
                self.result.checks.append((step, Span(self.t_ref, self.now())))
            elif isinstance(step, Hangup):
                return
        if self.scenario.expect.hangup:
            await self.until(lambda: self.em.closed, HANGUP_WAIT_S)
        else:
            await self.sleep(0.3)


async def run_call(scenario: Scenario, url: str, *, concurrency: int = 1) -> CallResult:
    """Play ``scenario`` against the server at ``url`` (a Twilio media stream endpoint)."""
    await asyncio.to_thread(voices.prepare, scenario.texts())
    em = TwilioEmulator(
        url,
        background_silence=True,
        trace_sends=True,
        custom_parameters={"sim_scenario": scenario.name},
    )
    result = CallResult(scenario.name, em.call_sid, concurrency, time.time())
    result.final_expect = scenario.expect
    loop = asyncio.get_running_loop()
    try:
        await em.connect()
    except (TimeoutError, OSError, ConnectionError) as exc:
        result.error = f"cannot connect to {url}: {exc}"
        return result
    call = _Call(scenario, em, result)
    call.t_ref = result.t0 = em.t_start
    result.wall0 = time.time() - (loop.time() - em.t_start)
    try:
        async with asyncio.timeout(scenario.timeout_s):
            await call.run()
    except TimeoutError:
        result.timed_out = True
        result.issues.append(f"scenario timed out after {scenario.timeout_s:g} s")
    except ConnectionError:
        pass  # the server ended the call while the caller was speaking
    except asyncio.CancelledError:  # the run was interrupted: hang up before leaving
        with contextlib.suppress(ConnectionError):
            await em.stop()
        raise
    result.agent_hung_up = em.closed
    end = em.closed_at if em.closed_at is not None else loop.time()
    with contextlib.suppress(ConnectionError):
        await em.stop()
    result.duration_s = round(end - em.t_start, 2)
    result.audio = from_emulator(em)
    result.audio.closed_at = end if result.agent_hung_up else None
    result.metrics = analyse(result.acts, result.audio, end)
    result.late_sends = em.stats.late_sends
    result.max_late_ms = round(em.stats.max_late_s * 1000, 1)
    result.pcm = em.received_pcm()
    result.played = list(em.played)
    if em.protocol_errors:
        result.issues.extend(f"protocol: {p.reason}" for p in em.protocol_errors[:5])
    return result


async def finish(
    result: CallResult, *, stt: Transcriber | None, records_db: Path | None = None
) -> None:
    """After the call (and any concurrent ones): transcripts, checks, the server's records."""
    exp = result.final_expect
    if exp.hangup is not None and exp.hangup != result.agent_hung_up:
        result.failures.append(
            "the agent did not hang up" if exp.hangup else "the agent hung up unexpectedly"
        )
    if result.cut_short:
        result.failures.append(f"the call ended before step {result.cut_short}")
    for turn in result.metrics.turns:
        if turn.false_cutoff:
            result.failures.append(f"step {turn.step}: the agent cut in mid-utterance")
        if turn.dead_air:
            late = "no reply" if turn.latency_ms is None else f"{turn.latency_ms:.0f} ms"
            result.failures.append(f"step {turn.step}: dead air ({late})")
    for b in result.metrics.barge_ins:
        if b.applicable and not b.interrupted:
            result.failures.append(f"step {b.step}: barge-in did not interrupt")
    for c in result.metrics.backchannels:
        if c.wrong:
            result.failures.append(f"step {c.step}: backchannel treated as an interruption")
    needs = exp.needs_stt or any(e.needs_stt for e, _ in result.checks)
    if stt is not None and needs and not result.error:
        result.replies = replies(result.audio.voiced)
        await asyncio.to_thread(stt.transcribe, result.pcm, result.played, result.replies)
        for expect, window in result.checks:
            text = window_text(result.replies, window)
            result.failures.extend(f"{f} (heard {text!r})" for f in check(expect, text))
        whole = " ".join(r.text for r in result.replies)
        result.failures.extend(check(exp, whole))
    if records_db is not None:
        await asyncio.sleep(0.3)  # the server's recorder commits within milliseconds
        result.server = await server_turns(records_db, result.call_sid)
        if result.server:
            match_server_turns(result)


def match_server_turns(result: CallResult) -> None:
    """Give each answered caller turn the server's record of the reply to it: the first reply
    triggered after the caller's act ended and before the agent's answer was heard (the same
    machine's clock on both sides)."""
    acts = {a.step: a for a in result.acts}
    replies = [t for t in result.server or [] if t.kind in ("turn", "dtmf")]
    for turn in result.metrics.turns:
        act = acts.get(turn.step)
        if act is None or turn.latency_ms is None:
            continue
        end = result.wall0 + (act.end - result.t0)
        heard = end + turn.latency_ms / 1000.0
        rec = next((r for r in replies if r.at is not None and end - 0.05 <= r.at <= heard), None)
        if rec is not None:
            turn.endpoint_rule = rec.endpoint_rule or rec.kind
            turn.server_v2v_ms = rec.v2v_ms
            if rec.speech_end_at is not None and turn.kind != "dtmf":
                turn.vad_lag_ms = round((rec.speech_end_at - end) * 1000.0, 1)
