"""The speech-to-text pipeline stage.

:class:`SttService` sits after the VAD and turn stages of a call. It is VAD-gated: it keeps only
the audio between :class:`~harken.frames.UserStartedSpeakingFrame` and
:class:`~harken.frames.UserStoppedSpeakingFrame` (plus ``preroll_s`` from before the start, so a
first consonant the VAD was slow to notice is not lost), so silence never reaches a model.

A **turn** runs from the first start of speech to :class:`~harken.frames.UserTurnEndFrame`:

* while the caller speaks, interim :class:`~harken.frames.TranscriptFrame`\\ s (``final=False``)
  go downstream as the recogniser's reading improves;
* at each stop of speech the final text is computed at once, *speculatively*: the turn detector
  is still deciding, and by the time it says the turn is over the text is usually ready;
* if speech resumes before the turn ends, the speculative result is dropped and the turn goes
  on (one turn may hold several stretches of speech);
* that text goes downstream at once as a *speculative* interim (``speculative=True``), so the
  turn detector can read the whole turn and a barge-in candidate can be told from a backchannel;
* at :class:`~harken.frames.UserTurnEndFrame` the final ``TranscriptFrame(final=True)`` goes
  downstream (nothing when nothing was recognised; ``empty_turns`` counts those);
* a turn abandoned by cancel or end of the call never emits anything, whatever is in flight.

**Audio is handled inline**, not through the service lane: appending a 20 ms frame to a buffer
costs a few microseconds, and system frames (the VAD's start/stop) overtake lanes, so audio
queued in a lane could no longer be told apart as before or after a stop. Inline, each audio
frame and each system frame arrive in the order the VAD saw them. Every other frame goes
through the lane and :meth:`handle` as usual, and passes on downstream. An interruption (the
caller cutting the agent off) discards nothing here: it is the caller's speech.

Batch engines (:class:`~harken.speech.stt.base.SttEngine`) get a fresh
:class:`~harken.speech.stt.transcriber.AgreementTranscriber` per turn (LocalAgreement-2 partials
on the shared inference pool); streaming engines get one stream per call, opened in
:meth:`setup`, through a :class:`~harken.speech.stt.transcriber.StreamTranscriber`. Engine
failures are pushed upstream as :class:`~harken.frames.ErrorFrame`\\ s from this stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final

import numpy as np

from harken.audio import Resampler
from harken.errors import ConfigError
from harken.frames import (
    AudioFrame,
    CancelFrame,
    EndFrame,
    ErrorFrame,
    Frame,
    SystemFrame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import ServiceStage
from harken.pipeline.stage import Push
from harken.speech.stt.base import SAMPLE_RATE, StreamingSttEngine, SttEngine
from harken.speech.stt.transcriber import AgreementTranscriber, StreamTranscriber, TurnTranscriber

__all__ = ["SttService"]

log = logging.getLogger("harken.stt")

_BYTES_PER_S: Final = 2 * SAMPLE_RATE


class _Turn:
    __slots__ = ("abandoned", "final", "speaking", "timestamp", "transcriber")

    transcriber: TurnTranscriber

    def __init__(self, timestamp: float) -> None:
        self.timestamp = timestamp
        self.speaking = True
        self.abandoned = False
        self.final: asyncio.Task[str] | None = None


class SttService(ServiceStage):
    """VAD-gated speech-to-text: interim transcripts while the caller talks, a final per turn."""

    __slots__ = (
        "_preroll",
        "_preroll_bytes",
        "_resampler",
        "_stream",
        "_tasks",
        "_turn",
        "empty_turns",
        "engine",
        "final_sources",
        "finals",
        "force_prefix",
        "interim",
        "interims",
        "language",
        "max_buffer_s",
        "pass_audio",
        "preroll_s",
        "step_s",
    )

    def __init__(
        self,
        engine: SttEngine | StreamingSttEngine,
        *,
        name: str = "stt",
        preroll_s: float = 0.3,
        step_s: float = 0.5,
        max_buffer_s: float = 20.0,
        interim: bool = True,
        language: str | None = None,
        force_prefix: bool = False,
        pass_audio: bool = False,
    ) -> None:
        super().__init__(name)
        if not isinstance(engine, SttEngine | StreamingSttEngine):
            raise ConfigError(f"{engine!r} is not a speech-to-text engine")
        self.engine = engine
        self.preroll_s = preroll_s
        self.step_s = step_s
        self.max_buffer_s = max_buffer_s
        self.interim = interim
        self.language = language
        self.force_prefix = force_prefix
        #: also pass the caller's audio on downstream (for a turn stage placed after STT, so
        #: it hears the audio *and* sees the transcripts); inline, never through the lane
        self.pass_audio = pass_audio
        self._resampler: Resampler | None = None
        self._preroll: deque[bytes] = deque()
        self._preroll_bytes = 0
        self._turn: _Turn | None = None
        self._stream: StreamTranscriber | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.finals = 0
        self.interims = 0
        self.empty_turns = 0
        # where delivered turns' final text came from (AgreementTranscriber.final_source)
        self.final_sources: dict[str, int] = {}

    # --- lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Make sure the engine is warm (a no-op when start-up already warmed it); open the
        call's stream for a streaming engine."""
        await self.engine.warm_up()
        if isinstance(self.engine, StreamingSttEngine):
            stream = await self.engine.open_stream()
            self._stream = StreamTranscriber(stream)

    async def teardown(self) -> None:
        self._abandon()
        if self._tasks:  # closing transcribers; deliveries of abandoned turns end at once
            _, pending = await asyncio.wait(list(self._tasks), timeout=2.0)
            for task in pending:
                task.cancel()
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()

    # --- audio (inline) ----------------------------------------------------------------------

    def entry_down(self) -> Push:
        lane_put = self.lane.put
        on_audio = self._on_audio

        def entry(frame: Frame) -> None:
            if frame.is_audio:
                on_audio(frame)  # type: ignore[arg-type]
                if self.pass_audio:
                    self._next_down(frame)
            else:
                lane_put(frame)

        return entry

    def _to_16k(self, frame: AudioFrame) -> bytes:
        pcm = frame.pcm
        if frame.channels != 1:
            x = np.frombuffer(pcm, np.int16).reshape(-1, frame.channels).mean(axis=1)
            pcm = x.astype(np.int16).tobytes()
        if frame.sample_rate == SAMPLE_RATE:
            return pcm
        r = self._resampler
        if r is None or r.in_rate != frame.sample_rate:
            r = self._resampler = Resampler(frame.sample_rate, SAMPLE_RATE)
        return r.process(pcm)

    def _on_audio(self, frame: AudioFrame) -> None:
        pcm = self._to_16k(frame)
        turn = self._turn
        if turn is not None and turn.speaking:
            turn.transcriber.feed(pcm, frame.timestamp + frame.duration)
            return
        self._preroll.append(pcm)
        self._preroll_bytes += len(pcm)
        limit = int(self.preroll_s * _BYTES_PER_S)
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    def _take_preroll(self) -> bytes:
        pcm = b"".join(self._preroll)
        self._preroll.clear()
        self._preroll_bytes = 0
        return pcm

    # --- turns (system frames) ---------------------------------------------------------------

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, UserStartedSpeakingFrame):
            self._speech_started(frame.timestamp)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._speech_stopped(frame.timestamp)
        elif isinstance(frame, UserTurnEndFrame):
            self._turn_ended()
        elif isinstance(frame, CancelFrame):
            self._abandon()

    def _new_turn(self, timestamp: float) -> _Turn:
        turn = _Turn(timestamp)

        def interim(text: str) -> None:
            self._emit_interim(turn, text)

        if self._stream is not None:
            self._stream.reset()
            self._stream.on_interim = interim
            turn.transcriber = self._stream
        else:
            assert isinstance(self.engine, SttEngine)
            turn.transcriber = AgreementTranscriber(
                self.engine,
                interim,
                step_s=self.step_s,
                max_buffer_s=self.max_buffer_s,
                partials=self.engine.partials and self.interim,
                force_prefix=self.force_prefix,
            )
        return turn

    def _speech_started(self, timestamp: float) -> None:
        turn = self._turn
        if turn is None:
            turn = self._turn = self._new_turn(timestamp)
        else:
            if turn.speaking:
                return
            turn.speaking = True
            if turn.final is not None:
                turn.final.cancel()  # speculative: the turn goes on
                turn.final = None
            turn.transcriber.resume()
        preroll = self._take_preroll()
        if preroll:
            turn.transcriber.feed(preroll)

    def _speech_stopped(self, speech_end: float | None = None) -> None:
        turn = self._turn
        if turn is None or not turn.speaking:
            return
        turn.speaking = False
        final = turn.final = asyncio.get_running_loop().create_task(
            turn.transcriber.finish(speech_end), name="harken:stt-final"
        )
        final.add_done_callback(lambda task: self._speculative(turn, task))

    def _speculative(self, turn: _Turn, task: asyncio.Task[str]) -> None:
        """The final text of the speech so far is ready before the turn ended: send it on as a
        speculative interim, for the turn detector and the barge-in policy to read."""
        if (
            task.cancelled()
            or task.exception() is not None
            or turn.abandoned
            or turn is not self._turn
            or turn.speaking
            or turn.final is not task
        ):
            return
        text = task.result()
        if text.strip():
            self.push_down(
                TranscriptFrame(
                    text,
                    final=False,
                    language=self.language,
                    timestamp=turn.timestamp,
                    speculative=True,
                )
            )

    def _turn_ended(self) -> None:
        turn = self._turn
        if turn is None:
            return
        if turn.speaking:
            self._speech_stopped()
        self._turn = None
        self._spawn(self._deliver(turn))

    async def _deliver(self, turn: _Turn) -> None:
        final = turn.final
        assert final is not None
        try:
            text = await final
        except asyncio.CancelledError:
            if turn.abandoned:
                return
            raise
        except Exception as exc:  # noqa: BLE001 - an engine failure is this stage's error
            if not turn.abandoned:
                self.push_up(ErrorFrame(error=exc, stage=self.name))
            return
        finally:
            if turn.transcriber is not self._stream:
                await turn.transcriber.aclose()
        if turn.abandoned:
            return
        source = getattr(turn.transcriber, "final_source", None)
        if source is not None:
            self.final_sources[source] = self.final_sources.get(source, 0) + 1
        if not text.strip():
            self.empty_turns += 1
            return
        self.finals += 1
        self.push_down(
            TranscriptFrame(text, final=True, language=self.language, timestamp=turn.timestamp)
        )

    def _abandon(self) -> None:
        turn, self._turn = self._turn, None
        self._take_preroll()
        if turn is None:
            return
        turn.abandoned = True
        if turn.final is not None:
            turn.final.cancel()
        if turn.transcriber is not self._stream:
            self._spawn(turn.transcriber.aclose())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- interim text ------------------------------------------------------------------------

    def _emit_interim(self, turn: _Turn, text: str) -> None:
        if turn.abandoned or turn is not self._turn or not self.interim:
            return
        self.interims += 1
        self.push_down(
            TranscriptFrame(text, final=False, language=self.language, timestamp=turn.timestamp)
        )

    # --- other frames (through the lane) -----------------------------------------------------

    async def handle(self, frame: Frame) -> None:
        if isinstance(frame, EndFrame):
            self._abandon()
        self.push_down(frame)

    @property
    def active(self) -> bool:
        """True while a turn is open."""
        return self._turn is not None

    async def drain(self) -> None:
        """Wait for the finals already decided to be delivered (tests, benches)."""
        while self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
