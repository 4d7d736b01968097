"""Turn detection: a short VAD stop asks "is the caller done?"; silence is only the backstop.

Flow per call (:class:`TurnStage`, inline, anywhere after the :class:`~harken.speech.vad.VadStage`
in the same call):

1. The stage keeps the caller's recent audio (a ring of ``max_audio_s`` + ``pre_speech_s`` at the
   input rate; 8 kHz audio is resampled to 16 kHz only when the model runs, in its thread).
2. On :class:`UserStoppedSpeakingFrame` (the VAD's short stop, ~200 ms) it sends the turn's audio
   (from ``pre_speech_s`` before the turn's first speech start to ``trail_s`` after the speech
   stopped, in media time, at most the last 8 s) to Smart Turn v3.2 in the process-wide
   :class:`TurnPool` (one worker thread, batching whatever is waiting; never on the loop).
3. The verdict, combined with the transcript when ``text`` allows (below), either ends the turn
   at once (:class:`UserTurnEndFrame` ``reason="model"`` or ``"text"``) or keeps waiting.
4. While waiting: speech resumes (the turn goes on, the pending verdict is discarded), a later
   transcript changes the verdict, or ``silence_s`` of media time passes after the stop:
   ``reason="silence"``. A wall-clock timer of the same length backs up the media clock in case
   the transport stops sending audio during silence.

Every asynchronous result carries the stage's generation; one that comes back after speech
resumed, the turn ended or the call closed is dropped.

**Text completeness** (:func:`text_complete`), when :class:`TranscriptFrame` s pass through the
stage (it sits after an STT stage): a transcript ending in ``?`` is complete; one ending in a
comma, dash, ellipsis, or a word that can hardly end an English sentence (a conjunction, filler,
article, possessive or a preposition that is rarely a particle: "and", "because", "um", "the",
"my", "for", "to", ...) is incomplete (words that often end sentences, such as "so", "you",
"in", "on" or "that", are left out on purpose); one ending in ``.`` or ``!`` is complete;
anything else is unknown. ``text`` modes:

* ``"off"``: transcripts are ignored;
* ``"veto"`` (default): an incomplete transcript overrides the model's "complete" (wait on);
* ``"vote"``: veto, and a complete transcript lowers the model's bar to ``text_threshold``.

With ``model=False`` a complete transcript alone ends the turn (``reason="text"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from harken.audio.level import rms_dbfs
from harken.errors import ConfigError
from harken.frames import (
    AgentStartedSpeakingFrame,
    AgentStoppedSpeakingFrame,
    AudioFrame,
    CancelFrame,
    Frame,
    SystemFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Stage
from harken.speech.endpoint import Plan, decide, plan, text_complete
from harken.speech.smart_turn import SAMPLE_RATE
from harken.speech.turn_pool import TurnPool, default_turn_pool

__all__ = [
    "EntryHook",
    "Plan",
    "TurnParams",
    "TurnPool",
    "TurnStage",
    "decide",
    "default_turn_pool",
    "plan",
    "text_complete",
]

log = logging.getLogger("harken.speech.turn")

TextMode = Literal["off", "veto", "vote"]
#: the dialogue's word on a transcript so far: a whole answer (True), not yet (False), or None
EntryHook = Callable[[str], "bool | None"]


@dataclass(frozen=True, slots=True)
class TurnParams:
    """Turn-detection configuration."""

    #: ask Smart Turn v3.2 on every VAD stop
    model: bool = True
    #: its probability at or above which the turn is complete
    threshold: float = 0.5
    #: how transcripts are used (see the module docstring)
    text: TextMode = "vote"
    #: the model's bar when the transcript reads complete (``text="vote"``)
    text_threshold: float = 0.2
    #: the backstop: end the turn after this much silence (media time) after the speech ended,
    #: when nothing says the turn is complete (or the transcript trails off: "and", "um", ",")
    silence_s: float = 2.0
    #: the transcript reads complete but the model is unsure: end after this much silence
    unsure_s: float = 1.0
    #: the turn is only an opener word or two ("Okay.", "Sorry,"): wait this long at least
    opener_s: float = 0.6
    #: no model verdict (it failed, or was skipped under load): a plain silence timer
    fallback_s: float = 0.7
    #: weigh the dialogue's word on the words so far (the ``entry`` hook, e.g. the brain's
    #: ``text_entry``): a whole answer ends the turn at once, a partial one waits ``partial_s``
    entry: bool = True
    #: the dialogue says the caller's answer is not whole yet ("Hi.", three digits of a phone
    #: number): wait at least this long
    partial_s: float = 1.2
    #: the caller's pace: once this caller has paused mid-turn and gone on (this turn or the
    #: one before), every end but a question or a farewell waits that pause times
    #: ``pace_ratio`` plus ``pace_margin_s``, at most ``pace_max_s`` (0: off; see
    #: :mod:`harken.speech.endpoint`). One caller's pauses differ a little (the suite's 1 s
    #: hesitations measure 1.03-1.06 s between the VAD's stop and start)
    pace_max_s: float = 1.2
    pace_ratio: float = 1.05
    pace_margin_s: float = 0.04
    #: with an STT stage before this one: after a stop, wait up to this long (media time) for
    #: the transcript of the speech up to the stop before deciding (0: decide without it). The
    #: reply needs that transcript anyway, so waiting for it costs no latency when it comes.
    wait_text_s: float = 0.0
    #: the caller is audible again (a 20 ms frame above ``min_dbfs`` in the last 100 ms) when
    #: the turn would end: speech may be resuming before the VAD's start says so (it needs 160
    #: ms of speech, and comes ~0.35 s after the onset). Wait, frame by frame, up to
    #: ``resume_wait_s`` (the backstop ignores it)
    min_dbfs: float = -45.0
    resume_wait_s: float = 0.5
    #: audio kept before the turn's first speech start (what the model was trained with)
    pre_speech_s: float = 0.5
    #: silence after the speech the model hears (pipecat runs it after a 0.2 s VAD stop)
    trail_s: float = 0.2
    #: the model sees at most this much (it takes 8 s)
    max_audio_s: float = 8.0
    #: arm a wall-clock copy of the backstop as well (transports that go quiet in silence)
    wall_backstop: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0 or not 0.0 < self.text_threshold < 1.0:
            raise ConfigError("TurnParams thresholds must be in (0, 1)")
        if self.text not in ("off", "veto", "vote"):
            raise ConfigError(f"TurnParams.text must be off, veto or vote, not {self.text!r}")
        if self.silence_s <= 0 or self.pre_speech_s < 0 or self.trail_s < 0:
            raise ConfigError("TurnParams: silence_s > 0, pre_speech_s >= 0, trail_s >= 0")
        waits = (
            self.unsure_s,
            self.opener_s,
            self.fallback_s,
            self.wait_text_s,
            self.partial_s,
            self.pace_max_s,
            self.pace_margin_s,
            self.pace_ratio - 1.0,
        )
        if min(waits) < 0:
            raise ConfigError(
                "TurnParams: unsure_s, opener_s, fallback_s, wait_text_s, partial_s, "
                "pace_max_s, pace_margin_s >= 0, pace_ratio >= 1"
            )
        if not 0 < self.max_audio_s <= 8:
            raise ConfigError("TurnParams.max_audio_s must be in (0, 8]")


_IDLE, _SPEAKING, _PAUSED = 0, 1, 2
#: nobody starts to speak *in reply* to the agent sooner than this after its first sound (a
#: word to hear, ~0.2 s to react); a caller who starts sooner was going on anyway
_REACTION_S = 0.5


class TurnStage(Stage):
    """Inline end-of-turn detection; broadcasts :class:`UserTurnEndFrame`."""

    __slots__ = (
        "_agent_on",
        "_agent_ts",
        "_buf",
        "_check_ts",
        "_end_ts",
        "_ended_over_agent",
        "_entry",
        "_entry_memo",
        "_fill",
        "_gen",
        "_heard_ts",
        "_hold_from",
        "_loud_until",
        "_pace",
        "_pace_prev",
        "_plan",
        "_pool",
        "_prob",
        "_rate",
        "_requested",
        "_spec",
        "_state",
        "_stop_seen",
        "_stop_ts",
        "_texts",
        "_timer",
        "_turn_start",
        "_wall_ts",
        "closed",
        "ends",
        "params",
        "stops",
        "verdicts",
    )

    def __init__(
        self,
        params: TurnParams | None = None,
        *,
        pool: TurnPool | None = None,
        entry: EntryHook | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.params = params or TurnParams()
        self._pool = pool
        self._entry = entry
        self._entry_memo: tuple[str, bool | None] = ("", None)
        self._rate = 0
        self._buf: npt.NDArray[np.int16] = np.zeros(0, np.int16)
        self._fill = 0
        self._end_ts = 0.0  # media time just after the last sample kept
        self._state = _IDLE
        self._gen = 0
        self._turn_start = math.nan
        self._stop_ts = 0.0
        self._stop_seen = 0.0
        self._prob: float | None = None
        self._requested = False
        self._texts: list[str] = []  # finals of this turn, then the latest interim
        self._spec = False  # the transcript of the speech up to the latest stop has come
        self._heard_ts = 0.0  # media time at which the latest stop was heard
        self._check_ts = math.inf  # media time of the next decision (a wait or the backstop)
        self._plan: Plan | None = None
        self._wall_ts = 0.0  # media time the wall clock vouches for while the audio is stalled
        self._loud_until = 0.0  # media time until which the caller counts as audible
        self._hold_from = math.inf  # media time an end was first put off: the caller audible
        self._timer: asyncio.TimerHandle | None = None
        # the longest pause the caller went on speaking after, in this turn and the one before
        self._pace = 0.0
        self._pace_prev = 0.0
        self._agent_ts = -math.inf  # caller media time when the agent last started speaking
        self._agent_on = False  # the agent is speaking
        self._ended_over_agent = False  # the last turn ended while the agent spoke
        self.closed = False
        #: (reason, speech_end, confidence, media time of the decision) of every turn end
        self.ends: list[tuple[str, float, float | None, float]] = []
        #: (stop media time, probability, media time it arrived) of every verdict in time
        self.verdicts: list[tuple[float, float | None, float]] = []
        #: (stop media time, media time the stop was heard) of every VAD stop in a turn
        self.stops: list[tuple[float, float]] = []

    # --- frames -------------------------------------------------------------------------------

    def on_down(self, frame: Frame) -> None:
        if frame.is_audio:
            self._audio(frame)  # type: ignore[arg-type]
        elif isinstance(frame, TranscriptFrame):
            self._transcript(frame)
        self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            self._speech_started(frame.timestamp)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._speech_stopped(frame.timestamp)
        elif isinstance(frame, AgentStartedSpeakingFrame):
            self._agent_ts = self._end_ts  # the caller's media time as the reply goes out
            self._agent_on = True
        elif isinstance(frame, AgentStoppedSpeakingFrame):
            self._agent_on = False
        elif isinstance(frame, CancelFrame):
            self._close()

    async def teardown(self) -> None:
        self._close()

    def _close(self) -> None:
        self.closed = True
        self._gen += 1
        self._cancel_timer()

    # --- audio ring ---------------------------------------------------------------------------

    def _audio(self, frame: AudioFrame) -> None:
        if self.closed:
            return
        x = np.frombuffer(frame.pcm, np.int16)
        if frame.channels > 1:
            x = x[:: frame.channels]
        rate = frame.sample_rate
        if rate != self._rate:
            self._rate = rate
            keep = math.ceil((self.params.max_audio_s + self.params.pre_speech_s + 0.5) * rate)
            self._buf = np.zeros(2 * keep, np.int16)
            self._fill = 0
        n = x.shape[0]
        buf = self._buf
        if self._fill + n > buf.shape[0]:
            keep = buf.shape[0] // 2
            buf[:keep] = buf[self._fill - keep : self._fill]
            self._fill = keep
        buf[self._fill : self._fill + n] = x
        self._fill += n
        self._end_ts = frame.timestamp + n / rate
        if self._state == _PAUSED:
            if rms_dbfs(x) > self.params.min_dbfs:
                self._loud_until = self._end_ts + 0.1  # a soft consonant may dip for a frame
            if self._end_ts >= self._check_ts:
                self._check()

    def _clip(self) -> npt.NDArray[np.int16]:
        """The turn's audio: from ``pre_speech_s`` before its start to ``trail_s`` after the
        speech stopped (not to whenever the stop happened to be heard: the verdict must not
        depend on the batcher's latency), at most ``max_audio_s``."""
        p = self.params
        rate = self._rate
        if rate == 0 or self._fill == 0:
            return np.zeros(0, np.int16)
        end = min(self._end_ts, self._stop_ts + p.trail_s)
        skip = max(0, min(self._fill, round((self._end_ts - end) * rate)))
        stop = self._fill - skip
        n = round(min(p.max_audio_s, end - (self._turn_start - p.pre_speech_s)) * rate)
        n = max(0, min(n, stop))
        return self._buf[stop - n : stop].copy()

    # --- turn state ---------------------------------------------------------------------------

    def _speech_started(self, ts: float) -> None:
        if self.closed:
            return
        if self._state == _IDLE:
            self._turn_start = ts
            self._texts = []
            self._went_on(ts)
        elif self._state == _PAUSED:
            self._pace = max(self._pace, ts - self._stop_ts)  # went on after this pause
        self._state = _SPEAKING
        self._gen += 1
        self._prob = None
        self._requested = False
        self._plan = None
        self._check_ts = math.inf
        self._cancel_timer()

    def _speech_stopped(self, ts: float) -> None:
        if self.closed or self._state != _SPEAKING:
            return
        self._state = _PAUSED
        self._gen += 1
        self._stop_ts = ts
        self._heard_ts = self._end_ts
        self._wall_ts = 0.0
        self._loud_until = 0.0
        self._hold_from = math.inf
        self._spec = False
        self._entry_memo = ("", None)  # the dialogue may have moved on since the last pause
        self.stops.append((ts, self._end_ts))
        self._prob = None
        p = self.params
        if p.model:
            gen = self._gen
            pool = self._pool or default_turn_pool()
            self._requested = True
            # a verdict later than the fallback timer is of no use: the pool may skip it
            deadline = time.monotonic() + max(0.0, ts + p.fallback_s - self._end_ts)
            pool.submit(
                self._clip(),
                self._rate or SAMPLE_RATE,
                lambda prob: self._verdict(gen, prob),
                deadline=deadline,
            )
        self._arm(ts + p.silence_s)  # the backstop, whatever happens
        self._decide()

    def _verdict(self, gen: int, prob: float | None) -> None:
        if gen != self._gen or self.closed or self._state != _PAUSED:
            return  # speech resumed, the turn ended or the call closed meanwhile
        self._requested = False
        self._prob = prob
        self.verdicts.append((self._stop_ts, prob, self._end_ts))
        self._decide()

    def _transcript(self, frame: TranscriptFrame) -> None:
        if self.closed or self.params.text == "off":
            return
        texts = self._texts
        if texts and texts[-1].startswith("\0"):
            texts.pop()  # the previous interim
        texts.append(frame.text if frame.final else "\0" + frame.text)
        if self._state == _PAUSED:
            if frame.final or frame.speculative:
                self._spec = True
            self._decide()

    def _text(self) -> str | None:
        if not self._texts:
            return None
        return " ".join(t.lstrip("\0") for t in self._texts)

    def _text_verdict(self) -> bool | None:
        text = self._text()
        return None if text is None else text_complete(text)

    def _now(self) -> float:
        return max(self._end_ts, self._wall_ts)

    def _decide(self) -> None:
        """Plan the end of the paused turn from what is known now (see :func:`plan`)."""
        p = self.params
        now = self._now()
        if p.model and self._requested:
            # the model's answer is pending; past the fallback timer, decide without it
            late = self._stop_ts + p.fallback_s
            if now < late:
                self._arm(late)
                return
        elif not self._spec and p.wait_text_s > 0 and p.text != "off":
            waited = self._heard_ts + p.wait_text_s
            if now < waited:
                self._arm(waited)  # the transcript up to the stop is on its way
                return
        prob = None if self._requested else self._prob
        text = self._text()
        pace = self.pace_s
        if now >= self._stop_ts + pace:
            pace = 0.0  # already waited: not what decides this end
        chosen = self._plan = plan(prob, text, p, self._entry_of(text), pace)
        end = self._stop_ts + chosen.wait_s
        if now >= end:
            self._end_or_hold(chosen)
        else:
            self._arm(end)

    def _went_on(self, ts: float) -> None:
        """A new turn starting at ``ts``: if the caller only went on after a pause the last
        turn ended in (before any reply, or before anyone could react to it), that pause is
        this caller's pace too: "I'd like to vote." ended the turn (a misheard "book"), and
        "... a table for four" came 0.64 s after it, 0.28 s into the agent's "Sorry"."""
        if not self.ends or self._ended_over_agent:
            return  # (a backchannel or a barge-in over the agent: not a pause before a reply)
        last = self.ends[-1][1]  # where the speech of the last turn ended
        gap = ts - last
        if not 0 < gap <= self.params.pace_max_s:
            return
        if self._agent_ts <= last or ts - self._agent_ts < _REACTION_S:
            self._pace = max(self._pace, gap)

    @property
    def pace_s(self) -> float:
        """The least wait this caller's own mid-turn pauses ask for (0 when none)."""
        p = self.params
        paused = max(self._pace, self._pace_prev)
        if p.pace_max_s <= 0 or paused <= 0:
            return 0.0
        return min(p.pace_max_s, paused * p.pace_ratio + p.pace_margin_s)

    def _entry_of(self, text: str | None) -> bool | None:
        """The dialogue's word on the words so far (see :func:`plan`); None without a hook."""
        hook = self._entry
        if hook is None or text is None or not self.params.entry:
            return None
        said, verdict = self._entry_memo
        if said == text:
            return verdict
        try:
            verdict = hook(text)
        except Exception:
            log.exception("the entry hook failed on %r", text)
            verdict = None
        self._entry_memo = (text, verdict)
        return verdict

    def _end_or_hold(self, chosen: Plan) -> None:
        """End the turn as planned, unless the caller is audible again (speech resuming that
        the VAD has not confirmed yet): then look again at the next frame."""
        now = self._now()
        if now < self._loud_until:
            self._hold_from = min(self._hold_from, now)
            if now - self._hold_from < self.params.resume_wait_s:
                self._arm(now + 0.02)  # look again a frame later (media or wall clock)
                return
        self._end_turn(chosen.reason, chosen.confidence)

    def _check(self) -> None:
        """The clock reached ``_check_ts``: end the turn, or decide again."""
        self._check_ts = math.inf
        chosen = self._plan
        now = self._now()
        p = self.params
        if chosen is not None and now >= self._stop_ts + chosen.wait_s:
            self._end_or_hold(chosen)
            return
        if now >= self._stop_ts + p.silence_s:
            self._end_turn("silence", self._prob)
            return
        if not self._spec and now >= self._heard_ts + p.wait_text_s:
            self._spec = True  # stop waiting for the transcript
        self._decide()

    def _arm(self, media_ts: float) -> None:
        """Check again at ``media_ts`` (media clock), with a wall-clock copy if configured."""
        self._check_ts = media_ts
        self._cancel_timer()
        if self.params.wall_backstop:
            with contextlib.suppress(RuntimeError):  # no running loop: media time only
                loop = asyncio.get_running_loop()
                delay = max(0.0, media_ts - self._now())
                self._timer = loop.call_later(delay, self._wall_check, self._gen, media_ts)

    def _wall_check(self, gen: int, media_ts: float) -> None:
        """The wall clock reached a check the media clock has not (the audio stopped)."""
        self._timer = None
        if gen != self._gen or self._state != _PAUSED or self.closed:
            return
        self._wall_ts = max(self._wall_ts, media_ts)
        self._check()

    def _end_turn(self, reason: str, confidence: float | None) -> None:
        self._state = _IDLE
        self._gen += 1
        self._requested = False
        self._plan = None
        self._check_ts = math.inf
        self._cancel_timer()
        self._turn_start = math.nan
        self._texts = []
        self._pace_prev, self._pace = self._pace, 0.0
        self._ended_over_agent = self._agent_on
        self.ends.append((reason, self._stop_ts, confidence, self._end_ts))
        call = self.call
        if call is not None and not call.closed:
            self.broadcast(
                UserTurnEndFrame(speech_end=self._stop_ts, reason=reason, confidence=confidence)
            )

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
