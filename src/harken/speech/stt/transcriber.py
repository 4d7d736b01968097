"""Turn transcribers: one caller turn's audio in, interim text and one final text out.

:class:`AgreementTranscriber` makes a streaming recogniser out of a batch
:class:`~harken.speech.stt.base.SttEngine` with LocalAgreement-2:

* while the caller speaks, every ``step_s`` of new audio starts a *partial pass* over the turn's
  buffer (one at a time), with the context before the buffer as its prompt; the words two
  consecutive passes agree on are committed (:class:`~harken.speech.stt.agreement.LocalAgreement`)
  and an interim text (committed + tentative) is reported; committed words are never revised
  in interim text;
* past ``max_buffer_s`` the buffer is trimmed at the end of the committed words (where the
  engine can align words to audio), and those words become the prompt;
* :meth:`finish` (the caller stopped) returns the final text. A pass that already heard all the
  speech (every sample of the buffer, everything up to the VAD's end of speech, or, by the
  level watch below, a pass that ended on ``early_quiet_s`` of quiet with only quiet after it)
  stands as the final; otherwise one *final pass* runs over the buffer at once, beside any
  partial still in flight, never waiting for it. Passes decode freely by default
  (``force_prefix=False``): forcing the committed words as the decoder's prefix made finals
  *worse* (espeak voice, 50 clips: 14.0% WER against 9.7%, the same as one whole-clip pass) and
  *slower* (CTranslate2 feeds a forced prefix one decoder step per token, 214 ms against 172 ms
  p50), because two passes over audio cut mid-word sometimes agree on a wrong word. Committed
  words are stable *interim* text, not a constraint on the final;
* when the audio turns quiet for ``early_quiet_s`` (26 dB under the turn's loudest frame), a
  pass starts at once rather than at the next step, so it has usually heard the whole
  utterance by the time the VAD (~200 ms later) reports the stop.

:class:`StreamTranscriber` adapts a :class:`~harken.speech.stt.base.SttStream` (Deepgram,
pocketsphinx): audio is sent as it arrives, interim events are reported, and :meth:`finish`
asks the stream to finalize and collects its final pieces.

Both are driven by :class:`~harken.speech.stt.service.SttService`; neither knows about frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final, Protocol

import numpy as np

from harken.speech.stt.agreement import (
    LocalAgreement,
    continuation,
    final_words,
    split_words,
    trim_plan,
)
from harken.speech.stt.base import SAMPLE_RATE, SttEngine, SttEvent, SttStream, Transcription

__all__ = ["AgreementTranscriber", "StreamTranscriber", "TurnTranscriber"]

log = logging.getLogger("harken.stt")

Interim = Callable[[str], None]
_BYTES_PER_S: Final = 2 * SAMPLE_RATE
_CONTEXT_CHARS: Final = 400
_END_MARGIN_S: Final = 0.06  # a pass must have heard this much past the end of speech
_QUIET_RATIO: Final = 400.0  # 26 dB below the loudest 20 ms of the turn counts as quiet


def _retrieve(fut: asyncio.Future[Transcription]) -> None:
    if not fut.cancelled():
        fut.exception()


class TurnTranscriber(Protocol):
    """What the service drives, per turn."""

    def feed(self, pcm: bytes, media_end: float | None = None) -> None: ...

    async def finish(self, speech_end: float | None = None) -> str: ...

    def resume(self) -> None: ...

    def reset(self) -> None: ...

    async def aclose(self) -> None: ...


class AgreementTranscriber:
    """LocalAgreement-2 partials and a final pass over a batch engine (see the module doc)."""

    def __init__(
        self,
        engine: SttEngine,
        on_interim: Interim | None = None,
        *,
        step_s: float = 0.5,
        min_audio_s: float = 0.4,
        max_buffer_s: float = 20.0,
        partials: bool | None = None,
        early_quiet_s: float = 0.1,
        force_prefix: bool = False,
    ) -> None:
        self.engine = engine
        self.force_prefix = force_prefix
        self.on_interim = on_interim
        self.step = int(step_s * _BYTES_PER_S) & ~1
        self.min_audio = int(min_audio_s * _BYTES_PER_S) & ~1
        self.max_buffer_s = max_buffer_s
        self.partials = engine.partials if partials is None else partials
        self.buffer = bytearray()
        self.context: list[str] = []  # committed words before the buffer (the prompt)
        self.agreement = LocalAgreement(2)
        self.passes = 0
        self._speaking = True
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._inflight: asyncio.Future[Transcription] | None = None
        self._inflight_len = 0
        self._inflight_media: float | None = None
        # the last completed pass: (buffer length, media time of its end, epoch, result)
        self._last: tuple[int, float | None, int, Transcription] | None = None
        self._media_end: float | None = None
        # early pass: when the audio turns quiet, a pass starts at once (the VAD will need
        # ~200 ms more to call it a stop; by then that pass has heard the whole utterance)
        self.early_quiet = int(early_quiet_s * _BYTES_PER_S)
        self._peak = 0.0
        self._quiet = 0
        self._force = False
        self._early_armed = True
        self.early_passes = 0
        self._epoch = 0  # bumped by trims: results of an older buffer are not comparable
        self._last_interim = ""
        # where the final text came from (statistics): "inflight" (a partial pass still running
        # that heard all the speech), "partial" (the last completed partial pass), "pass" (a
        # final pass of its own), "none" (nothing to transcribe); None before finish()
        self.final_source: str | None = None
        if self.partials:
            self._loop = asyncio.get_running_loop().create_task(
                self._run(), name="harken:stt-partials"
            )

    # --- input -----------------------------------------------------------------------------

    def feed(self, pcm: bytes, media_end: float | None = None) -> None:
        """Append speech; ``media_end`` is the call's media time at the end of ``pcm``."""
        self.buffer += pcm
        self._media_end = media_end
        if self.early_quiet and pcm:
            self._watch_level(pcm)
        if len(self.buffer) - self._inflight_len >= self.step:
            self._wake.set()

    def _watch_level(self, pcm: bytes) -> None:
        x = np.frombuffer(pcm, np.int16).astype(np.float32)
        power = float(np.dot(x, x)) / max(1, len(x))
        if power > self._peak:
            self._peak = power
        if power * _QUIET_RATIO > self._peak:  # loud (within 26 dB of the turn's peak)
            self._quiet = 0
            self._early_armed = True
            return
        self._quiet += len(pcm)
        if self._early_armed and self._quiet >= self.early_quiet and self._peak > 0:
            self._early_armed = False
            self._force = True
            self.early_passes += 1
            self._wake.set()

    @property
    def buffer_s(self) -> float:
        return len(self.buffer) / _BYTES_PER_S

    # --- partial passes ----------------------------------------------------------------------

    def _prompt(self) -> str:
        return " ".join(self.context)[-_CONTEXT_CHARS:]

    def _start_pass(self) -> asyncio.Future[Transcription]:
        self.passes += 1
        prefix = " ".join(self.agreement.committed) if self.force_prefix else ""
        fut = asyncio.ensure_future(
            self.engine.transcribe(bytes(self.buffer), prompt=self._prompt(), prefix=prefix)
        )
        fut.add_done_callback(_retrieve)  # a pass nobody waits for any more may still fail
        return fut

    async def _run(self) -> None:
        done_len = 0
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._speaking:
                continue
            size = len(self.buffer)
            force, self._force = self._force, False
            fresh = size - done_len
            # an early pass needs only early_quiet_s of new audio (it is one per pause)
            if size < self.min_audio or fresh < (self.early_quiet if force else self.step):
                continue
            epoch = self._epoch
            prefix = " ".join(self.agreement.committed)
            self._inflight_len = size
            self._inflight_media = media = self._media_end
            self._inflight = fut = self._start_pass()
            try:
                result = await asyncio.shield(fut)
            except Exception as exc:  # noqa: BLE001 - the final pass reports engine failures
                log.warning("stt partial pass failed, no more partials this turn: %r", exc)
                return
            finally:
                self._inflight = None
            done_len = size
            if epoch != self._epoch or not self._speaking:
                continue
            self._last = (size, media, epoch, result)
            self.agreement.insert(continuation(result.text, prefix))
            self._report()
            await self._maybe_trim()
            if len(self.buffer) - size >= self.step:
                self._wake.set()

    def _report(self) -> None:
        text = " ".join([*self.context, *self.agreement.words])
        if text and text != self._last_interim and self.on_interim is not None:
            self._last_interim = text
            self.on_interim(text)

    async def _maybe_trim(self) -> None:
        word_end = getattr(self.engine, "word_end", None)
        committed = self.agreement.committed
        if word_end is None or self.buffer_s <= self.max_buffer_s or not committed:
            return
        size = len(self.buffer)
        end_s = await word_end(bytes(self.buffer[:size]), " ".join(committed))
        plan = trim_plan(self.buffer_s, len(committed), end_s, max_s=self.max_buffer_s)
        if plan is None:
            return
        cut = int(plan.cut_s * _BYTES_PER_S) & ~1
        del self.buffer[:cut]
        self.context.extend(committed[: plan.words])
        self.agreement.committed = committed[plan.words :]
        self.agreement.forget_history()
        self._epoch += 1
        self._last = None

    # --- the end of the turn -----------------------------------------------------------------

    def _covers(self, size: int, media: float | None, speech_end: float | None) -> bool:
        """Whether a pass over the first ``size`` bytes heard all the speech: it had the whole
        buffer, or what came after it is silence: the audio after ``speech_end`` (the VAD's
        end of speech), or, by the level watch, quiet audio after a pass that itself ended on
        at least ``early_quiet_s`` of quiet (the early pass, typically)."""
        if size == len(self.buffer):
            return True
        if (
            self.early_quiet
            and self._peak > 0
            and self._quiet >= len(self.buffer) - size + self.early_quiet
        ):
            return True
        return speech_end is not None and media is not None and media >= speech_end + _END_MARGIN_S

    async def finish(self, speech_end: float | None = None) -> str:
        """The final text of everything fed so far (context, committed and the last words).

        ``speech_end`` (media time the VAD says speech stopped) lets a pass that started after
        the speech ended stand as the final, even though silence was appended since.
        """
        self._speaking = False
        size = len(self.buffer)
        prefix = " ".join(self.agreement.committed)
        result: Transcription | None = None
        inflight, last = self._inflight, self._last
        source = "none"
        if inflight is not None and self._covers(
            self._inflight_len, self._inflight_media, speech_end
        ):
            source = "inflight"
            result = await asyncio.shield(inflight)
        elif (
            last is not None
            and last[2] == self._epoch
            and self._covers(last[0], last[1], speech_end)
        ):
            source = "partial"
            result = last[3]
        if result is None and size > 0:
            source = "pass"
            self.passes += 1
            result = await self.engine.transcribe(
                bytes(self.buffer),
                prompt=self._prompt(),
                prefix=prefix if self.force_prefix else "",
            )
        self.final_source = source
        committed = self.agreement.committed
        if result is None:
            words = list(committed)
        elif self.force_prefix:
            words = final_words(committed, result.text)
        else:
            words = split_words(result.text)  # the whole turn, decoded freely
        return " ".join([*self.context, *words])

    def resume(self) -> None:
        """Speech resumed before the turn ended: keep the buffer, go on with partial passes."""
        self._speaking = True
        self._wake.set()

    def reset(self) -> None:
        """Forget everything (the service makes a new transcriber per turn instead)."""
        self.buffer.clear()
        self.context = []
        self.agreement.reset()
        self._last = None
        self._epoch += 1

    async def aclose(self) -> None:
        self._speaking = False
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None


class StreamTranscriber:
    """Drives a :class:`~harken.speech.stt.base.SttStream` for one call, turn after turn."""

    def __init__(
        self, stream: SttStream, on_interim: Interim | None = None, *, flush_timeout_s: float = 3.0
    ) -> None:
        self.stream = stream
        self.on_interim = on_interim
        self.flush_timeout_s = flush_timeout_s
        self.finals: list[str] = []
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._flushed: asyncio.Future[None] | None = None
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send(), name="harken:stt-send")
        self._reader = loop.create_task(self._read(), name="harken:stt-read")
        self.error: BaseException | None = None

    def feed(self, pcm: bytes, media_end: float | None = None) -> None:
        self._queue.put_nowait(pcm)

    async def _send(self) -> None:
        while True:
            pcm = await self._queue.get()
            try:
                if self.error is not None:
                    continue  # the stream is broken: finish() raises the error
                if pcm is None:
                    await self.stream.finalize()
                else:
                    await self.stream.send(pcm)
            except Exception as exc:  # noqa: BLE001 - kept and raised by finish()
                self.error = exc
                if self._flushed is not None and not self._flushed.done():
                    self._flushed.set_result(None)
            finally:
                self._queue.task_done()

    async def _read(self) -> None:
        try:
            async for event in self.stream.events():
                self._on_event(event)
        except Exception as exc:  # noqa: BLE001 - kept and raised by finish()
            self.error = exc
        finally:
            if self._flushed is not None and not self._flushed.done():
                self._flushed.set_result(None)

    def _on_event(self, event: SttEvent) -> None:
        if event.final and event.text:
            self.finals.append(event.text)
        if event.text and self.on_interim is not None:
            pieces = self.finals if event.final else [*self.finals, event.text]
            self.on_interim(" ".join(pieces))
        if event.flushed and self._flushed is not None and not self._flushed.done():
            self._flushed.set_result(None)

    async def finish(self, speech_end: float | None = None) -> str:
        """Ask the stream to finalize; the turn's text once every final piece has arrived."""
        if self.error is not None:
            raise self.error
        self._flushed = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._flushed), self.flush_timeout_s)
        except TimeoutError:
            log.warning("stt stream did not confirm the flush within %.1fs", self.flush_timeout_s)
        if self.error is not None:
            raise self.error
        return " ".join(split_words(" ".join(self.finals)))

    def resume(self) -> None:
        """Nothing to do: the stream keeps its state; later finals extend the turn."""

    def reset(self) -> None:
        """A new turn starts: forget the previous turn's final pieces."""
        self.finals = []

    async def aclose(self) -> None:
        for task in (self._sender, self._reader):
            task.cancel()
        for task in (self._sender, self._reader):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.stream.aclose()
