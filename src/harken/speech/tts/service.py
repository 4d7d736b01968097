"""The TTS pipeline stage: clauses in, paced-ready audio at the transport's rate out.

:class:`TtsService` is a :class:`~harken.pipeline.ServiceStage`: its :meth:`handle` runs in its own
task behind a lane, and an interruption cancels the synthesis in flight (the engine's stream is
closed, so a local engine's thread stops at its next chunk) while the pipeline's generations drop
anything it emitted late.

**Utterances.** A :class:`~harken.frames.TextFrame` is a clause, already chunked by the
conversation engine. Clauses between an ``LLMResponseStartFrame`` and its ``LLMResponseEndFrame``
form **one utterance** (one agent reply: one ``TTSStartedFrame`` at the first clause, one
``TTSStoppedFrame`` at the response end, so the transport reports one played/heard figure per
reply and the clauses play back to back). A clause outside such a bracket is an utterance of its
own. ``EndFrame`` and ``HangupFrame`` close an open utterance first. Per utterance::

    TTSStartedFrame(uid, clause)  AudioFrame*  [more clauses' AudioFrame*]  TTSStoppedFrame(uid)

**Audio.** Each engine chunk is resampled at once (one streaming
:class:`~harken.audio.Resampler` per utterance, from the engine's rate to ``StartFrame
.sample_rate_out``) and cut into ``frame_ms`` frames (20 ms by default) that go downstream as soon
as they exist; the resampler is drained at the end of each clause so no clause waits for the
next one. The silence an engine puts before an utterance's first sound (Piper: 35-55 ms of
near-digital silence, then the resampler's ramp) is dropped, keeping ``_LEAD_KEEP_S`` before
the first sample above ``_LEAD_AMP`` (about -61 dBFS) and dropping at most ``_LEAD_MAX_S``: the
caller hears the reply that much sooner. The first clause's word times move back by what was
dropped; the pauses between clauses are kept.

**What was heard.** Every utterance keeps an :class:`UtteranceRecord`: its text, every word's
character span and its time in the utterance's audio (real timings where the engine gives them,
estimates otherwise), how long synthesis took to the first audio, and, once the transport
reports it (``AgentStoppedSpeakingFrame``), how much was played. ``record.heard_text(played_s)``
maps seconds heard back to the words heard, for truncating the assistant's message after a
barge-in. The last ``history`` records are kept (``TtsService.records``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from harken.audio import Rechunker, Resampler
from harken.errors import ConfigError
from harken.frames import (
    AgentStoppedSpeakingFrame,
    AudioFrame,
    EndFrame,
    Frame,
    HangupFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    StartFrame,
    SystemFrame,
    TextFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from harken.pipeline import ServiceStage
from harken.speech.tts.base import TtsEngine, TtsStream, WordTiming, word_spans

__all__ = ["TtsService", "UtteranceRecord"]

log = logging.getLogger("harken.speech.tts")

_NOMINAL_CPS: Final = 14.0  # characters per second of speech, for clauses cut off mid-synthesis
_LEAD_AMP: Final = 30  # a sample above this (about -61 dBFS) is the utterance's first sound
_LEAD_KEEP_S: Final = 0.005  # kept before it
_LEAD_MAX_S: Final = 0.3  # never drop more than this (a deliberate opening pause stays)


@dataclass(slots=True)
class UtteranceRecord:
    """What one utterance said, and when each word of it is heard.

    ``words`` are in utterance time (seconds from its first sample) and index ``text``;
    ``audio_s`` is the audio emitted so far; ``first_audio_s`` the delay from the first clause
    reaching the service to its first audio frame; ``played_s`` what the transport reported
    as played (None until ``AgentStoppedSpeakingFrame`` arrives).
    """

    utterance_id: int
    sample_rate: int
    text: str = ""
    words: list[WordTiming] = field(default_factory=list)
    clauses: list[tuple[int, float]] = field(default_factory=list)  # (char offset, start s)
    audio_s: float = 0.0
    first_audio_s: float | None = None
    complete: bool = False
    interrupted: bool = False
    played_s: float | None = None

    def words_heard(self, played_s: float | None = None) -> list[WordTiming]:
        """Words at least half played after ``played_s`` seconds (default: the reported figure)."""
        t = self._played(played_s)
        return [w for w in self.words if (w.start_s + w.end_s) / 2 <= t]

    def heard_text(self, played_s: float | None = None) -> str:
        """The text up to the last word heard (the whole text once it all played)."""
        t = self._played(played_s)
        if self.complete and not self.interrupted and t >= self.audio_s:
            return self.text
        heard = self.words_heard(t)
        if not heard:
            return ""
        last = heard[-1]
        if last.char_end >= 0:
            return self.text[: last.char_end]
        return " ".join(w.word for w in heard)

    def _played(self, played_s: float | None) -> float:
        if played_s is not None:
            return played_s
        if self.played_s is not None:
            return self.played_s
        return self.audio_s


class _Utterance:
    """Streaming state of the utterance being synthesised (resampler, rechunker)."""

    __slots__ = (
        "keep",
        "lead",
        "lead_max",
        "pending",
        "quiet",
        "rechunker",
        "record",
        "resampler",
        "started",
        "step",
        "trimmed",
    )

    def __init__(
        self, record: UtteranceRecord, resampler: Resampler, frame_ms: int, in_rate: int
    ) -> None:
        self.record = record
        self.resampler = resampler
        self.rechunker = Rechunker(record.sample_rate, frame_ms)
        self.started = 0.0
        # engine audio is resampled one frame at a time: a whole sentence in one call would
        # make a large matrix product (BLAS may hand it to other threads: tens of ms on a busy
        # machine) and hold back the first frame until the last one is converted
        self.step = max(2, in_rate * frame_ms // 1000 * 2)
        self.pending = bytearray()
        self.lead = True  # no sound yet: leading silence is dropped
        self.lead_max = int(_LEAD_MAX_S * record.sample_rate)
        self.trimmed = 0  # output samples of leading silence dropped
        self.quiet = b""  # the last _LEAD_KEEP_S of it, kept in case the sound starts next
        self.keep = 2 * int(_LEAD_KEEP_S * record.sample_rate)  # bytes of silence kept before it

    def _sound(self, pcm: bytes) -> bytes:
        """``pcm`` (output rate) without the utterance's leading silence (see the module doc)."""
        if not self.lead or not pcm:
            return pcm
        buf = self.quiet + pcm  # the silence held back so far, then the new audio
        loud = np.flatnonzero(np.abs(np.frombuffer(buf, np.int16).astype(np.int32)) > _LEAD_AMP)
        silent = 2 * int(loud[0]) if len(loud) else len(buf)  # bytes of silence at its head
        drop = max(0, silent - self.keep)  # bytes
        room = 2 * (self.lead_max - self.trimmed)
        if len(loud) == 0 and drop <= room:
            self.trimmed += drop // 2
            self.quiet = buf[drop:]  # at most _LEAD_KEEP_S, in case the sound starts next
            return b""
        self.lead = False
        self.quiet = b""
        drop = min(drop, room)
        self.trimmed += drop // 2
        return buf[drop:]

    def convert(self, pcm: bytes) -> Iterator[bytes]:
        """Output frames for engine audio ``pcm``, as each input frame is converted."""
        buf = self.pending
        buf += pcm
        step, n = self.step, len(buf) - len(buf) % self.step
        if not n:
            return
        view = memoryview(buf)
        try:
            for i in range(0, n, step):
                yield from self.rechunker.push(
                    self._sound(self.resampler.process(view[i : i + step]))
                )
        finally:
            view.release()
            del buf[:n]

    def drain(self) -> Iterator[bytes]:
        """The end of a clause: everything still held, the last frame possibly short."""
        rest = bytes(self.pending)
        self.pending.clear()
        yield from self.rechunker.push(
            self._sound(self.resampler.process(rest) + self.resampler.flush())
        )
        tail = self.rechunker.flush(pad=False)
        if tail:
            yield tail

    def reset(self) -> None:
        self.pending.clear()
        self.rechunker.clear()
        self.resampler.reset()


class TtsService(ServiceStage):
    """Text-to-speech stage (see the module docstring for the frame contract).

    ``engine`` is shared across calls (load it once per process with ``await
    engine.warm_up()`` at start-up). ``sample_rate`` fixes the output rate; by default it comes
    from the call's ``StartFrame.sample_rate_out``. ``group_replies=False`` makes every clause
    its own utterance even inside an LLM response.
    """

    __slots__ = (
        "_current",
        "_in_reply",
        "_media_s",
        "_next_uid",
        "_rate_out",
        "engine",
        "fixed_rate",
        "frame_ms",
        "group_replies",
        "history",
        "quality",
        "records",
    )

    def __init__(
        self,
        engine: TtsEngine,
        *,
        name: str = "tts",
        sample_rate: int | None = None,
        frame_ms: int = 20,
        group_replies: bool = True,
        history: int = 32,
        quality: str = "voice",
        linger: float = 2.0,
    ) -> None:
        super().__init__(name, linger=linger)
        if frame_ms not in (10, 20, 40, 60, 80, 100):
            raise ConfigError(f"frame_ms must be 10, 20, 40, 60, 80 or 100, got {frame_ms}")
        self.engine = engine
        self.fixed_rate = sample_rate
        self.frame_ms = frame_ms
        self.group_replies = group_replies
        self.history = history
        self.quality = quality
        self.records: OrderedDict[int, UtteranceRecord] = OrderedDict()
        self._rate_out = sample_rate
        self._current: _Utterance | None = None
        self._in_reply = False
        self._next_uid = 0
        self._media_s = 0.0

    @property
    def sample_rate_out(self) -> int:
        """The rate audio leaves at (fixed, else the call's, else the engine's)."""
        return self._rate_out or self.engine.sample_rate

    def record(self, utterance_id: int) -> UtteranceRecord | None:
        """The record of an utterance (None once it has left the history)."""
        return self.records.get(utterance_id)

    def heard_text(self, utterance_id: int, played_s: float | None = None) -> str | None:
        """The text of ``utterance_id`` the caller heard (None if unknown)."""
        rec = self.records.get(utterance_id)
        return rec.heard_text(played_s) if rec is not None else None

    # --- lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        if not self.engine.ready:
            log.warning(
                "%s: TTS engine %s was not warmed up at start-up; loading it now",
                self.name,
                self.engine.name,
            )
            await self.engine.warm_up()

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, StartFrame):
            if self.fixed_rate is None:
                self._rate_out = frame.sample_rate_out
        elif isinstance(frame, AgentStoppedSpeakingFrame):
            rec = self.records.get(frame.utterance_id)
            if rec is not None:
                rec.played_s = frame.played_s
                rec.interrupted = rec.interrupted or frame.interrupted

    def on_interrupt(self) -> None:
        current, self._current = self._current, None
        self._in_reply = False
        if current is not None:
            current.record.interrupted = True

    # --- frames ------------------------------------------------------------------------------

    async def handle(self, frame: Frame) -> None:
        if isinstance(frame, TextFrame):
            await self._speak(frame.text)
            return
        if isinstance(frame, LLMResponseStartFrame):
            self._finish()
            self._in_reply = self.group_replies
        elif isinstance(frame, LLMResponseEndFrame | EndFrame | HangupFrame):
            self._in_reply = False
            self._finish()
        self.push_down(frame)

    async def _speak(self, text: str) -> None:
        clause = text.strip()
        if not clause:
            return
        utt = self._current
        if utt is None:
            utt = self._open(clause)
        try:
            await self._synthesise(utt, clause)
        except asyncio.CancelledError:
            raise
        except Exception:
            self._finish()  # the transport must not wait for audio that will never come
            raise
        if not self._in_reply:
            self._finish()

    def _open(self, first_clause: str) -> _Utterance:
        self._next_uid += 1
        uid = self._next_uid
        rate = self.sample_rate_out
        record = UtteranceRecord(uid, rate)
        resampler = Resampler(
            self.engine.sample_rate,
            rate,
            quality=self.quality,
            chunk_hint=self.engine.sample_rate * self.frame_ms // 1000,
        )
        utt = _Utterance(record, resampler, self.frame_ms, self.engine.sample_rate)
        utt.started = asyncio.get_running_loop().time()
        self._current = utt
        self.records[uid] = record
        while len(self.records) > self.history:
            self.records.popitem(last=False)
        self.push_down(TTSStartedFrame(utterance_id=uid, text=first_clause))
        return utt

    def _finish(self) -> None:
        utt, self._current = self._current, None
        if utt is None:
            return
        utt.record.complete = not utt.record.interrupted
        self.push_down(TTSStoppedFrame(utterance_id=utt.record.utterance_id))

    async def _synthesise(self, utt: _Utterance, clause: str) -> None:
        rec = utt.record
        char_offset = len(rec.text) + (1 if rec.text else 0)
        rec.text = f"{rec.text} {clause}" if rec.text else clause
        clause_start = rec.audio_s
        rec.clauses.append((char_offset, clause_start))
        if rec.first_audio_s is None:
            utt.started = asyncio.get_running_loop().time()
        stream = self.engine.stream(clause)
        complete = False
        trimmed = utt.trimmed
        try:
            async with contextlib.aclosing(stream):
                async for pcm in stream:
                    for chunk in utt.convert(pcm):
                        self._audio(utt, chunk)
            for chunk in utt.drain():
                self._audio(utt, chunk)
            complete = True
        finally:
            if not complete:
                utt.reset()
            delay = utt.resampler.delay_s  # the filter delays the audio, so the words too
            delay -= (utt.trimmed - trimmed) / rec.sample_rate  # leading silence dropped
            self._note_words(rec, stream, clause, char_offset, clause_start + delay, complete)

    def _audio(self, utt: _Utterance, pcm: bytes) -> None:
        rec = utt.record
        frame = AudioFrame(pcm, rec.sample_rate, timestamp=self._media_s)
        seconds = len(pcm) / (2 * rec.sample_rate)
        self._media_s += seconds
        rec.audio_s += seconds
        if rec.first_audio_s is None:
            rec.first_audio_s = asyncio.get_running_loop().time() - utt.started
        self.push_down(frame)

    def _note_words(
        self,
        rec: UtteranceRecord,
        stream: TtsStream,
        clause: str,
        char_offset: int,
        clause_start: float,
        complete: bool,
    ) -> None:
        """Place the clause's words in utterance time; estimate any the engine never timed."""
        words = [w.shifted(clause_start, char_offset) for w in stream.words]
        if not complete:
            # cut off mid-synthesis: words not yet timed follow at a nominal speaking rate
            timed_to = max((w.char_end for w in stream.words), default=0)
            t = max((w.end_s for w in words), default=clause_start)
            for word, s, e in word_spans(clause):
                if s < timed_to:
                    continue
                d = (e - s) / _NOMINAL_CPS
                words.append(WordTiming(word, t, t + d, s + char_offset, e + char_offset))
                t += d + 1 / _NOMINAL_CPS
        rec.words.extend(words)
