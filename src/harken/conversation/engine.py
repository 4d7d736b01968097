"""The conversation engine: one inline stage per call that decides when the agent speaks.

Place it after the VAD, STT and turn stages and before TTS::

    transport in -> VadStage -> SttService -> TurnStage -> ConversationEngine -> TtsService -> out

It follows the transition table of :mod:`harken.conversation.states` and:

* **answers** each caller turn: at ``UserTurnEndFrame`` it waits for the final transcript (at
  most ``final_timeout_s``; an empty turn goes back to listening), then runs the brain's reply
  in one task. Text is cut into clauses (:class:`~harken.conversation.chunker.ClauseChunker`:
  the first one short) and sent to TTS as ``LLMResponseStartFrame``, ``TextFrame`` *,
  ``LLMResponseEndFrame`` — one utterance per reply;
* **barges in** per :class:`BargeIn`: while the agent is thinking or speaking, caller speech
  interrupts once it lasts ``interrupt_min_s`` (media time) or its interim transcript holds
  ``interrupt_min_words`` words that are not backchannels; "uh-huh", "yeah", "okay" do not
  interrupt, however long. An interruption bumps the call's generation (queued TTS audio and
  text are discarded, work in flight is cancelled, the transport stops playback and sends
  ``clear``), cancels the reply task, and — once the transport reports how much was played —
  tells the brain which words were heard (TTS word timings), so the context holds only those;
* **keeps the call alive and bounded**: a greeting at start; after ``idle_s`` of silence the
  brain's idle prompt, and after ``idle_prompts`` of them a goodbye and a hang-up; at
  ``max_duration_s`` a closing line and a hang-up; keypad digits gathered (until ``#``,
  ``dtmf_timeout_s``, or the brain's ``dtmf_complete`` says they are a whole entry: "0" for the
  operator needs no wait) and handed to the brain;
* **ends or transfers** after the words before it are heard (``HangupFrame`` /
  ``TransferFrame`` travel behind the reply's audio and the transport holds them until played).

Each reply leaves a :class:`ReplyRecord` (``engine.replies``) with its timings: final
transcript, first text to TTS (the engine's own overhead is ``first_text - final``), first
audio on the wire, what was spoken and heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from harken.audio.level import rms_dbfs
from harken.conversation.brain import Brain, Flush, Hangup, Heard, Piece, Say, ToolUsed, Transfer
from harken.conversation.chunker import ClauseChunker
from harken.conversation.hold import PlaybackHold
from harken.conversation.policy import BargeIn, BargeInParams
from harken.conversation.preempt import Preemptive
from harken.conversation.record import NO_HOOKS, EngineHooks, ReplyRecord
from harken.conversation.states import State, TurnMachine
from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    CancelFrame,
    DTMFFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InterruptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
    TranscriptFrame,
    TransferFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Stage

__all__ = ["ConversationEngine", "EngineSettings", "ReplyRecord"]

log = logging.getLogger("harken.conversation")

HeardLookup = Callable[[int, float], "str | None"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    greeting: bool = True
    final_timeout_s: float = 2.5
    barge_in: BargeInParams = field(default_factory=BargeInParams)
    idle_s: float = 8.0
    idle_prompts: int = 2
    idle_goodbye: str = "It seems you've stepped away. Goodbye!"
    max_duration_s: float = 900.0
    max_duration_message: str = "We've reached the time limit for this call. Goodbye!"
    dtmf_timeout_s: float = 1.5
    first_clause_words: int = 6
    #: hold the agent's audio as soon as the caller starts speaking over it; resume if it was
    #: a backchannel (the agent falls silent at once instead of after the barge-in threshold)
    pause_on_speech: bool = True
    #: hold sooner: when the caller's level stays above ``early_hold_dbfs`` for this long over
    #: the agent, before the VAD's start (which needs 160 ms of speech); released after
    #: ``early_hold_s`` unless the VAD confirms speech (0 disables; needs ``pause_on_speech``)
    early_hold_ms: float = 60.0
    early_hold_dbfs: float = -40.0
    early_hold_s: float = 0.3
    #: after a barge-in candidate's speech stops, wait at most this long for its words (the
    #: STT's speculative transcript) before treating it as a backchannel
    barge_words_s: float = 0.4
    #: ... and resume the held audio this long after its stop (unless the caller goes on)
    barge_resume_s: float = 0.2
    #: start the brain on the last interim transcript when the caller stops speaking, and again
    #: on the STT's speculative transcript if its words differ (brains with ``prepare``: the LLM
    #: agent); used if the final says the same words, else wasted
    preemptive: bool = False


class ConversationEngine(Stage):
    """Turn-taking, barge-in and replies for one call (see the module docstring)."""

    def __init__(
        self,
        brain: Brain,
        settings: EngineSettings | None = None,
        *,
        heard: HeardLookup | None = None,
        tts_delay: Callable[[int], float | None] | None = None,
        hooks: EngineHooks = NO_HOOKS,
        name: str = "conversation",
    ) -> None:
        super().__init__(name)
        self.brain = brain
        self.settings = s = settings or EngineSettings()
        self.heard_lookup = heard
        self.tts_delay = tts_delay  # utterance id -> seconds from its first clause to audio
        self.hooks = hooks
        self.t0 = 0.0  # perf_counter at the call's start
        self._t_speech_end: float | None = None
        self._t_endpoint: float | None = None
        self._endpoint_rule = ""
        self._close_reason = ""
        self.machine = TurnMachine()
        self.barge = BargeIn(s.barge_in)
        self.replies: list[ReplyRecord] = []
        self.interruptions = 0
        self.backchannels = 0
        self.empty_turns = 0
        self.idle_count = 0
        self._reply: ReplyRecord | None = None
        self._task: asyncio.Task[None] | None = None
        self._final_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._limit_timer: asyncio.TimerHandle | None = None
        self._dtmf_timer: asyncio.TimerHandle | None = None
        self._digits = ""
        self._awaiting_final = False
        self._ending = False
        self._by_uid: dict[int, ReplyRecord] = {}
        self.holds = PlaybackHold(
            self._send_system,
            enabled=s.pause_on_speech and s.barge_in.enabled,
            early_ms=s.early_hold_ms,
            early_dbfs=s.early_hold_dbfs,
            early_s=s.early_hold_s,
        )
        self._interim = ""
        self._preempt = Preemptive(brain, s.preemptive)
        #: preemptive generation: started, used (the final matched), wasted (it did not)
        self.preemptive = self._preempt.counts
        self._speech_start: float | None = None  # media time, while the caller speaks
        self._barge_timer: asyncio.TimerHandle | None = None  # waiting for a candidate's words
        self._resume_timer: asyncio.TimerHandle | None = None  # resuming after a candidate

    # --- state ----------------------------------------------------------------------------

    @property
    def state(self) -> State:
        return self.machine.state

    # --- frames ---------------------------------------------------------------------------

    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame):
            barge = self.barge
            if (
                barge.active
                and barge.due(frame.timestamp + frame.duration)
                and rms_dbfs(frame.pcm) > barge.params.min_dbfs
            ):
                self._barge_in()
            elif self._reply is not None and self._speech_start is None:
                self.holds.sound(frame, self.machine.agent_busy)
            return  # the caller's audio stops here
        if isinstance(frame, TranscriptFrame):
            self._transcript(frame)
            return
        if isinstance(frame, EndFrame):
            self._close_reason = self._close_reason or frame.reason
            self._close()
        self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, StartFrame):
            self._start(frame.metadata)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_started(frame.timestamp)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._speech_start = None
            self._t_speech_end = time.perf_counter()
            self._prepare()
            if self.barge.active:
                self.barge.on_stop()
                self._await_barge_words()
        elif isinstance(frame, UserTurnEndFrame):
            if self.machine.fire("turn_end"):
                self._t_endpoint = time.perf_counter()
                self._endpoint_rule = frame.reason
                self._await_final()
        elif isinstance(frame, AgentStartedSpeakingFrame):
            self._agent_started(frame.utterance_id)
        elif isinstance(frame, AgentStoppedSpeakingFrame):
            self._agent_stopped(frame)
        elif isinstance(frame, InterruptionFrame):
            self.holds.forget()
            self._cancel_reply()
        elif isinstance(frame, DTMFFrame):
            self._dtmf(frame.digit)
        elif isinstance(frame, CancelFrame):
            self._close_reason = self._close_reason or frame.reason
            self._close()

    # --- caller turns ---------------------------------------------------------------------

    def _user_started(self, timestamp: float) -> None:
        self._speech_start = timestamp
        self._cancel_timer("_barge_timer")
        self._cancel_timer("_resume_timer")
        self._preempt.drop()
        self._cancel_timer("_idle_timer")
        if self.machine.agent_busy and self._reply is not None:
            self._candidate(timestamp)
            return
        self.machine.fire("user_start")

    def _await_final(self) -> None:
        self._awaiting_final = True
        self._cancel_timer("_final_timer")
        loop = asyncio.get_running_loop()
        self._final_timer = loop.call_later(self.settings.final_timeout_s, self._final_missing)

    def _final_missing(self) -> None:
        self._final_timer = None
        if self._awaiting_final and self._task is None:
            self._awaiting_final = False
            self.empty_turns += 1
            self.machine.fire("idle_wait")
            self._arm_idle()

    def _transcript(self, frame: TranscriptFrame) -> None:
        if not frame.final:
            self._interim = frame.text
            if self.barge.active and self.barge.on_words(frame.text):
                self._barge_in()
            elif frame.speculative and self._barge_timer is None and not self.barge.active:
                self._prepare()  # the words up to the stop: what the final will say
            elif frame.speculative and self._barge_timer is not None:
                self._cancel_timer("_barge_timer")
                if self.barge.verdict(frame.text):
                    self._barge_in()
                else:
                    self._backchannel()
            return
        text = frame.text.strip()
        self._interim = ""
        if self._barge_timer is not None:  # a short candidate's words: the whole turn's final
            self._cancel_timer("_barge_timer")
            if not self.barge.verdict(text):
                self._backchannel()
                return
        if self._awaiting_final:
            self._awaiting_final = False
            self._cancel_timer("_final_timer")
            self.idle_count = 0
            self._begin("turn", self._preempt.reply(text), text)
            return
        if self.machine.agent_busy and self._reply is not None:
            # a caller turn that ended while the agent went on speaking (it did not barge in)
            if BargeIn.only_backchannel(text, self.settings.barge_in.backchannels):
                return
            self.interruptions += 1
            self._interrupt()
            self.idle_count = 0
            self._begin("turn", self.brain.reply(text), text)

    def _candidate(self, timestamp: float) -> None:
        """Caller speech over the agent: maybe a barge-in; hold the audio meanwhile."""
        if self.settings.barge_in.enabled:
            self.barge.begin(timestamp)
            self.holds.onset()

    def _await_barge_words(self) -> None:
        """A candidate's speech stopped short of the thresholds: most likely a backchannel, so
        the agent goes on after ``barge_resume_s`` (a held gap is audible; the grace covers the
        comma pause of "Sorry, | where are you?") or as soon as its words say backchannel; its
        words, when the STT has them, can still make it an interruption."""
        self._cancel_timer("_barge_timer")
        loop = asyncio.get_running_loop()
        self._barge_timer = loop.call_later(self.settings.barge_words_s, self._backchannel)
        self._cancel_timer("_resume_timer")
        self._resume_timer = loop.call_later(self.settings.barge_resume_s, self._resume)

    def _resume(self) -> None:
        """Let the held audio go, unless the caller sounds again (a comma pause the VAD has
        not seen end yet): then look again shortly, up to 1 s after the candidate's stop."""
        self._resume_timer = None
        if self.barge.active:  # the caller has started again
            return
        if self.holds.audible() and time.perf_counter() - (self._t_speech_end or 0.0) < 1.0:
            self._resume_timer = asyncio.get_running_loop().call_later(0.04, self._resume)
            return
        self.holds.release()

    def _backchannel(self) -> None:
        """The candidate was a backchannel (or its words never came): the agent goes on."""
        self._barge_timer = None
        self._cancel_timer("_resume_timer")
        self.backchannels += 1
        self.hooks.event("backchannel", {"held": self.holds.enabled})
        self._resume()

    def _send_system(self, frame: SystemFrame) -> bool:
        call = self.call
        if call is None or call.closed:
            return False
        call.system(frame)
        return True

    def _prepare(self) -> None:
        """Preemptive generation on the caller's stop (see ``EngineSettings.preemptive``)."""
        if self.machine.state is State.USER_SPEAKING:
            self._preempt.prepare(self._interim)

    def _barge_in(self) -> None:
        self.barge.reset()
        self._cancel_timer("_barge_timer")
        self._cancel_timer("_resume_timer")
        if self._reply is None or self._ending:
            return
        record = self._reply
        record.t_bargein_onset = self.holds.t_onset
        record.t_bargein_stopped = self.holds.t_held or time.perf_counter()
        self.hooks.event("barge_in", {"stop_ms": record.timeline_ms(0.0)["bargein_stop_ms"]})
        self.interruptions += 1
        self._interrupt()
        self.machine.fire("barge_in")

    def _interrupt(self) -> None:
        call = self.call
        if call is not None and not call.closed:
            call.interrupt()  # reaches _cancel_reply through on_system
        else:
            self._cancel_reply()

    # --- keypad, idle, time limit ---------------------------------------------------------

    def _dtmf(self, digit: str) -> None:
        self._cancel_timer("_idle_timer")
        self._cancel_timer("_dtmf_timer")
        if digit == "#":
            self._digits_done()
            return
        self._digits += digit
        complete = getattr(self.brain, "dtmf_complete", None)
        if complete is not None and complete(self._digits):
            self._digits_done()
            return
        loop = asyncio.get_running_loop()
        self._dtmf_timer = loop.call_later(self.settings.dtmf_timeout_s, self._digits_done)

    def _digits_done(self) -> None:
        self._dtmf_timer = None
        digits, self._digits = self._digits, ""
        if not digits or self._ending:
            return
        if self._reply is not None:
            self._interrupt()
        self._begin("dtmf", self.brain.dtmf(digits), digits)

    def _arm_idle(self) -> None:
        self._cancel_timer("_idle_timer")
        if self._ending or self.settings.idle_s <= 0:
            return
        loop = asyncio.get_running_loop()
        self._idle_timer = loop.call_later(self.settings.idle_s, self._idle)

    def _idle(self) -> None:
        self._idle_timer = None
        if self.machine.state is not State.LISTENING or self._ending:
            return
        self.idle_count += 1
        if self.idle_count > self.settings.idle_prompts:
            self._begin("idle", _closing(self.settings.idle_goodbye, "caller idle"))
        else:
            self._begin("idle", self.brain.idle(self.idle_count))

    def _time_limit(self) -> None:
        self._limit_timer = None
        if self._ending:
            return
        if self._reply is not None:
            self._interrupt()
        self._begin("limit", _closing(self.settings.max_duration_message, "time limit"))

    # --- replies --------------------------------------------------------------------------

    def _start(self, metadata: dict[str, Any]) -> None:
        self.t0 = time.perf_counter()
        self.hooks.call_started(self.t0, metadata)
        loop = asyncio.get_running_loop()
        if self.settings.max_duration_s > 0:
            self._limit_timer = loop.call_later(self.settings.max_duration_s, self._time_limit)
        if self.settings.greeting:
            self._begin("greeting", self.brain.greet())
        else:
            self.machine.fire("idle_wait")
            self._arm_idle()

    def _begin(self, kind: str, pieces: AsyncIterator[Piece], user_text: str = "") -> None:
        if self._ending:
            return
        self._cancel_reply()
        self._cancel_timer("_idle_timer")
        self.barge.reset()
        self.holds.release()
        if self._speech_start is not None:  # the caller is talking: the reply may be cut
            self._candidate(self._speech_start)
        self.machine.fire("reply")
        record = ReplyRecord(kind, user_text, t_trigger=time.perf_counter())
        if kind == "turn":
            record.t_speech_end, self._t_speech_end = self._t_speech_end, None
            record.t_endpoint, self._t_endpoint = self._t_endpoint, None
            record.endpoint_rule, self._endpoint_rule = self._endpoint_rule, ""
        self._reply = record
        self.replies.append(record)
        del self.replies[:-64]
        self._task = asyncio.get_running_loop().create_task(
            self._run(record, pieces), name="harken:reply"
        )

    async def _run(self, record: ReplyRecord, pieces: AsyncIterator[Piece]) -> None:
        chunker = ClauseChunker(first_max_words=self.settings.first_clause_words)
        opened = False
        ending: HangupFrame | TransferFrame | None = None

        def speak(clauses: list[str]) -> None:
            nonlocal opened
            for clause in clauses:
                if not opened:
                    opened = True
                    record.t_first_text = time.perf_counter()
                    self.push_down(LLMResponseStartFrame())
                record.spoken = f"{record.spoken} {clause}".strip()
                self.push_down(TextFrame(clause))

        cancelled = False
        try:
            async for piece in pieces:
                if isinstance(piece, Say):
                    if record.t_first_piece is None:
                        record.t_first_piece = time.perf_counter()
                    speak(chunker.push(piece.text))
                elif isinstance(piece, Flush):
                    speak(chunker.flush())
                elif isinstance(piece, ToolUsed):
                    record.tools.append(piece.outcome)
                elif isinstance(piece, Hangup):
                    ending = HangupFrame(reason=piece.reason)
                elif isinstance(piece, Transfer):
                    ending = TransferFrame(target=piece.target, reason=piece.reason)
            speak(chunker.flush())
        except asyncio.CancelledError:
            cancelled = True  # a barge-in: the generation bump already discarded what was sent
            raise
        except Exception as exc:
            log.exception("reply failed")
            if self.call is not None:
                self.call._stage_failed(self, exc)
        finally:
            if opened and not cancelled:
                self.push_down(LLMResponseEndFrame())
        if self._task is not asyncio.current_task():
            return
        self._task = None
        if ending is not None:
            record.ending = type(ending).__name__
            kind = "hangup" if isinstance(ending, HangupFrame) else "transfer"
            self.hooks.event(kind, {"reason": ending.reason})
            self._ending = True
            self.machine.fire("hangup")
            self._cancel_timer("_idle_timer")
            self._cancel_timer("_limit_timer")
            self.push_down(ending)
        elif not opened:  # nothing to say
            self._reply = None
            self._report(record)
            self.machine.fire("done")
            self._arm_idle()

    def _cancel_reply(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        record = self._reply
        if record is not None and record.utterance_id is None:
            # cut off before any of it was heard (the transport reports only what it announced)
            self._reply = None
            record.heard = ""
            record.interrupted = True
            self.brain.heard(Heard(record.spoken, "", True))
            self._report(record)

    def _agent_started(self, utterance_id: int) -> None:
        record = self._reply
        if record is not None and record.utterance_id is None:
            record.utterance_id = utterance_id
            record.t_first_audio = time.perf_counter()
            if self.tts_delay is not None:
                delay = self.tts_delay(utterance_id)
                record.tts_first_audio_ms = None if delay is None else round(delay * 1000, 1)
            self._by_uid[utterance_id] = record
            while len(self._by_uid) > 8:
                del self._by_uid[next(iter(self._by_uid))]
            self.machine.fire("audio")

    def _agent_stopped(self, frame: AgentStoppedSpeakingFrame) -> None:
        record = self._by_uid.pop(frame.utterance_id, None)
        if record is None:
            return
        heard = record.spoken
        if frame.interrupted:
            looked = None
            if self.heard_lookup is not None:
                looked = self.heard_lookup(frame.utterance_id, frame.played_s)
            heard = looked if looked is not None else ""
        record.heard = heard
        record.interrupted = frame.interrupted
        record.t_played = time.perf_counter()
        record.playback_strategy = frame.strategy
        self.brain.heard(Heard(record.spoken, heard, frame.interrupted))
        self._report(record)
        if record is not self._reply:
            return  # an older reply, cut off before the one now running
        if frame.interrupted or self._task is not None:
            if frame.interrupted:
                self._reply = None
            return  # the caller's turn (or the rest of this reply) goes on
        self._reply = None
        if self.machine.fire("done"):
            if self._speech_start is not None:  # the caller is mid-sentence: their turn
                self.barge.reset()
                self.holds.release()
                self.machine.fire("user_start")
            else:
                self._arm_idle()

    # --- lifecycle ------------------------------------------------------------------------

    def _cancel_timer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _report(self, record: ReplyRecord) -> None:
        if not record.reported:
            record.reported = True
            self.hooks.reply_done(record)

    def _close(self) -> None:
        if self.machine.state is not State.ENDED:
            for record in self.replies:  # replies whose playback was never resolved
                self._report(record)
            self.hooks.call_ended(self._close_reason or "end")
        self.machine.fire("end")
        self._preempt.drop()
        self.holds.cancel_early()
        for name in ("_final", "_idle", "_limit", "_dtmf", "_barge", "_resume"):
            self._cancel_timer(f"{name}_timer")
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()

    async def teardown(self) -> None:
        self._close()
        with contextlib.suppress(Exception):
            aclose = getattr(self.brain, "aclose", None)
            if aclose is not None:
                await aclose()


async def _closing(text: str, reason: str) -> AsyncIterator[Piece]:
    yield Say(text)
    yield Hangup(reason)
