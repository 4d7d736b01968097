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
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from harken.audio import resample
from harken.errors import ConfigError
from harken.frames import (
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
from harken.speech.smart_turn import SAMPLE_RATE, SmartTurn, default_smart_turn

__all__ = ["TurnParams", "TurnPool", "TurnStage", "decide", "default_turn_pool", "text_complete"]

log = logging.getLogger("harken.speech.turn")

TextMode = Literal["off", "veto", "vote"]

_INCOMPLETE = """
and but or nor because cause cuz although though unless whereas whether if than
um umm uh uhh er erm hmm
the a an my your our their every each
to of for with at from into onto towards toward via per between during against
i'm i'd i'll i've we're you're they're
"""
#: words after which an English sentence is not over (when the transcript does not end in "?")
INCOMPLETE_WORDS: Final = frozenset(_INCOMPLETE.split())
_TRAILING_OPEN: Final = (",", ";", ":", "-", "\u2013", "\u2014", "...", "\u2026")
_WORD = re.compile(r"[a-z']+")


def text_complete(text: str) -> bool | None:
    """Does this transcript read like a finished turn? True, False, or None (can't tell)."""
    t = text.strip().strip("\"'\u201d\u2019)").rstrip()
    if not t:
        return None
    if t.endswith(_TRAILING_OPEN):
        return False
    if t.endswith("?"):
        return True
    words = _WORD.findall(t.lower())
    if words and words[-1] in INCOMPLETE_WORDS:
        return False
    if t.endswith((".", "!")):
        return True
    return None


@dataclass(frozen=True, slots=True)
class TurnParams:
    """Turn-detection configuration."""

    #: ask Smart Turn v3.2 on every VAD stop
    model: bool = True
    #: its probability at or above which the turn is complete
    threshold: float = 0.5
    #: how transcripts are used (see the module docstring)
    text: TextMode = "veto"
    #: the model's bar when the transcript reads complete (``text="vote"``)
    text_threshold: float = 0.2
    #: the backstop: end the turn after this much silence (media time) after the VAD stop
    silence_s: float = 2.0
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
        if not 0 < self.max_audio_s <= 8:
            raise ConfigError("TurnParams.max_audio_s must be in (0, 8]")


def decide(
    prob: float | None, text: bool | None, params: TurnParams
) -> tuple[bool, str, float | None]:
    """(complete, reason, confidence) from the model's probability and the transcript's verdict.

    ``prob`` is None when the model is off or its answer has not come back.
    """
    if params.text == "off":
        text = None
    if not params.model:
        return (True, "text", None) if text is True else (False, "", None)
    if prob is None:
        return False, "", None
    if text is False:
        return False, "", prob  # veto
    if prob >= params.threshold:
        return True, "model", prob
    if text is True and params.text == "vote" and prob >= params.text_threshold:
        return True, "text", prob
    return False, "", prob


Done = Callable[[float | None], None]


class TurnPool:
    """Smart Turn for a whole process: one worker thread, batching the requests waiting.

    ``submit`` is called on an event loop and never blocks; ``done(probability)`` is called back
    on that loop (``None`` when the model failed or the queue was over ``max_waiting``: the turn
    then falls back to its silence backstop). Counters: ``runs``, ``predictions``, ``skipped``,
    ``failed``, ``busy_s``.
    """

    def __init__(
        self, model: SmartTurn | None = None, *, max_batch: int = 4, max_waiting: int = 64
    ) -> None:
        self._model = model
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self._queue: deque[tuple[npt.NDArray[np.int16], int, Done, asyncio.AbstractEventLoop]]
        self._queue = deque()
        self._lock = threading.Lock()
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harken-turn")
        self.runs = self.predictions = self.skipped = self.failed = 0
        self.busy_s = 0.0

    @property
    def model(self) -> SmartTurn:
        if self._model is None:
            self._model = default_smart_turn()
        return self._model

    def submit(self, pcm: npt.NDArray[np.int16], rate: int, done: Done) -> None:
        """Queue one clip (int16 at ``rate``; the worker resamples to 16 kHz)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if len(self._queue) >= self.max_waiting:
                self.skipped += 1
                loop.call_soon(done, None)
                return
            self._queue.append((pcm, rate, done, loop))
            if self._running:
                return
            self._running = True
        self._executor.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                n = min(self.max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(n)]
            t0 = time.perf_counter()
            probs: list[float | None]
            try:
                clips = [_to_model_input(pcm, rate) for pcm, rate, _, _ in batch]
                probs = list(self.model.predict_many(clips))
                self.predictions += len(batch)
            except Exception:
                log.exception("Smart Turn inference failed")
                self.failed += len(batch)
                probs = [None] * len(batch)
            self.busy_s += time.perf_counter() - t0
            self.runs += 1
            for (_, _, done, loop), p in zip(batch, probs, strict=True):
                with contextlib.suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(done, p)

    async def predict(self, pcm: npt.NDArray[np.int16], rate: int) -> float | None:
        """Await one verdict (a convenience for tools and tests)."""
        fut: asyncio.Future[float | None] = asyncio.get_running_loop().create_future()

        def done(p: float | None) -> None:
            if not fut.done():
                fut.set_result(p)

        self.submit(pcm, rate, done)
        return await fut


def _to_model_input(pcm: npt.NDArray[np.int16], rate: int) -> npt.NDArray[np.float32]:
    if rate != SAMPLE_RATE:
        pcm = np.frombuffer(resample(pcm.tobytes(), rate, SAMPLE_RATE), np.int16)
    out: npt.NDArray[np.float32] = pcm.astype(np.float32) * np.float32(1.0 / 32768.0)
    return out


_POOL: TurnPool | None = None
_POOL_LOCK = threading.Lock()


def default_turn_pool() -> TurnPool:
    """The process-wide :class:`TurnPool`."""
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                _POOL = TurnPool()
    return _POOL


_IDLE, _SPEAKING, _PAUSED = 0, 1, 2


class TurnStage(Stage):
    """Inline end-of-turn detection; broadcasts :class:`UserTurnEndFrame`."""

    __slots__ = (
        "_buf",
        "_end_ts",
        "_fill",
        "_gen",
        "_pool",
        "_prob",
        "_rate",
        "_requested",
        "_state",
        "_stop_seen",
        "_stop_ts",
        "_texts",
        "_timer",
        "_turn_start",
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
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.params = params or TurnParams()
        self._pool = pool
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
        self._timer: asyncio.TimerHandle | None = None
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
        if self._state == _PAUSED and self._end_ts >= self._stop_ts + self.params.silence_s:
            self._end_turn("silence", self._prob)

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
        self._state = _SPEAKING
        self._gen += 1
        self._prob = None
        self._requested = False
        self._cancel_timer()

    def _speech_stopped(self, ts: float) -> None:
        if self.closed or self._state != _SPEAKING:
            return
        self._state = _PAUSED
        self._gen += 1
        self._stop_ts = ts
        self.stops.append((ts, self._end_ts))
        self._prob = None
        p = self.params
        if p.model:
            gen = self._gen
            pool = self._pool or default_turn_pool()
            self._requested = True
            pool.submit(
                self._clip(), self._rate or SAMPLE_RATE, lambda prob: self._verdict(gen, prob)
            )
        if p.wall_backstop:
            with contextlib.suppress(RuntimeError):  # no running loop: media time only
                loop = asyncio.get_running_loop()
                gen = self._gen
                self._timer = loop.call_later(p.silence_s, self._wall_backstop, gen)
        self._decide()

    def _verdict(self, gen: int, prob: float | None) -> None:
        if gen != self._gen or self.closed or self._state != _PAUSED:
            return  # speech resumed, the turn ended or the call closed meanwhile
        self._requested = False
        self._prob = prob
        self.verdicts.append((self._stop_ts, prob, self._end_ts))
        if prob is None:
            return  # the model failed: the backstop decides
        self._decide()

    def _transcript(self, frame: TranscriptFrame) -> None:
        if self.closed or self.params.text == "off":
            return
        texts = self._texts
        if texts and texts[-1].startswith("\0"):
            texts.pop()  # the previous interim
        texts.append(frame.text if frame.final else "\0" + frame.text)
        if self._state == _PAUSED:
            self._decide()

    def _text_verdict(self) -> bool | None:
        if not self._texts:
            return None
        return text_complete(" ".join(t.lstrip("\0") for t in self._texts))

    def _decide(self) -> None:
        p = self.params
        if p.model and self._requested:
            return  # wait for the model
        done, reason, conf = decide(self._prob, self._text_verdict(), p)
        if done:
            self._end_turn(reason, conf)

    def _wall_backstop(self, gen: int) -> None:
        self._timer = None
        if gen == self._gen and self._state == _PAUSED and not self.closed:
            self._end_turn("silence", self._prob)

    def _end_turn(self, reason: str, confidence: float | None) -> None:
        self._state = _IDLE
        self._gen += 1
        self._requested = False
        self._cancel_timer()
        self._turn_start = math.nan
        self._texts = []
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
