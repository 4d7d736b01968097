"""Local pocketsphinx: true streaming, fast finals, low accuracy.

pocketsphinx 5 ships a US English model inside its wheel (``pocketsphinx/model/en-us``:
acoustic model, ``en-us.lm.bin`` trigram language model, CMU dictionary); ``Decoder()`` finds it
without a download. It decodes incrementally: ``process_raw`` on each chunk, ``hyp()`` at any
time for a partial, ``end_utt()`` to finish, which is cheap when the second (``fwdflat``) pass
is off -- the default here, since it costs 5x in final latency for ~2 points of word error rate
(measured in docs/speech.md).

**Decoders are pooled per process**, not created per call: :class:`SphinxEngine` keeps
``pool_size`` decoders (loaded at :meth:`~SphinxEngine.warm_up`, ~0.5 s and ~30 MB each), and a
stream borrows one from the first audio of an utterance to its :meth:`~SphinxStream.finalize`.
If every decoder is busy, one more is loaded (off the event loop) and a warning is logged.

**The GIL.** Unlike CTranslate2, pocketsphinx holds the GIL while it decodes (measured: a
thread ticking every 1 ms got 8 ticks during a 2 s decode). Running it in the shared inference
pool keeps it off the event loop's *code* but not off its *interpreter*: each chunk blocks the
loop for as long as it decodes. Chunks are therefore kept short (``chunk_s``, 60 ms: ~10-30 ms
of decoding), so the loop stalls for short, bounded slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from harken.errors import ServiceError
from harken.speech.stt.base import SAMPLE_RATE, SttEvent, Transcription, run_inference

__all__ = ["SphinxEngine", "SphinxStream"]

log = logging.getLogger("harken.stt")

_DONE: Final = object()
_CLOSE: Final = b"close"


def _new_decoder(fwdflat: bool, bestpath: bool) -> Any:
    try:
        from pocketsphinx import Decoder  # type: ignore[import-untyped]
    except ImportError as exc:
        raise ServiceError("pocketsphinx is not installed: pip install pocketsphinx") from exc
    try:
        return Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", fwdflat=fwdflat, bestpath=bestpath)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ServiceError(f"could not load the pocketsphinx model: {exc}") from exc


class _Pool:
    """Idle decoders of one configuration, per process."""

    def __init__(self, fwdflat: bool, bestpath: bool) -> None:
        self.fwdflat = fwdflat
        self.bestpath = bestpath
        self.idle: list[Any] = []
        self.created = 0
        self.lock = threading.Lock()
        self.pid = os.getpid()

    def take(self) -> Any | None:
        with self.lock:
            return self.idle.pop() if self.idle else None

    def give(self, decoder: Any) -> None:
        with self.lock:
            self.idle.append(decoder)

    def grow(self) -> Any:
        decoder = _new_decoder(self.fwdflat, self.bestpath)
        with self.lock:
            self.created += 1
        return decoder


_pools: dict[tuple[bool, bool], _Pool] = {}
_pools_lock = threading.Lock()


def _pool(fwdflat: bool, bestpath: bool) -> _Pool:
    key = (fwdflat, bestpath)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None or pool.pid != os.getpid():
            pool = _pools[key] = _Pool(fwdflat, bestpath)
        return pool


def _text(decoder: Any) -> str:
    hyp = decoder.hyp()
    return str(hyp.hypstr) if hyp is not None else ""


class SphinxEngine:
    """Streaming pocketsphinx engine (:class:`~harken.speech.stt.base.StreamingSttEngine`); it
    also transcribes whole buffers (:meth:`transcribe`) for benches and batch use."""

    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE
    partials = False  # as a batch engine: a whole-buffer decode per pass is not worth repeating

    def __init__(
        self,
        *,
        pool_size: int = 2,
        fwdflat: bool = False,
        bestpath: bool = True,
        chunk_s: float = 0.06,
    ) -> None:
        self.pool_size = pool_size
        self.chunk_bytes = int(chunk_s * SAMPLE_RATE) * 2
        self._pool = _pool(fwdflat, bestpath)

    @property
    def loaded(self) -> int:
        """Decoders this process has loaded for this configuration."""
        return self._pool.created

    def warm_up_sync(self) -> None:
        pool = self._pool
        while pool.created < self.pool_size:
            decoder = pool.grow()
            decoder.start_utt()
            decoder.process_raw(bytes(3200), False, False)
            decoder.end_utt()
            pool.give(decoder)

    async def warm_up(self) -> None:
        if self._pool.created < self.pool_size:
            await run_inference(self.warm_up_sync)

    async def acquire(self) -> Any:
        decoder = self._pool.take()
        if decoder is None:
            log.warning("pocketsphinx: all %d decoders busy, loading one more", self._pool.created)
            decoder = await run_inference(self._pool.grow)
        return decoder

    def release(self, decoder: Any) -> None:
        self._pool.give(decoder)

    async def open_stream(self) -> SphinxStream:
        return SphinxStream(self)

    async def aclose(self) -> None:
        """Decoders belong to the process."""

    def _decode_all(self, decoder: Any, pcm: bytes) -> str:
        decoder.start_utt()
        for i in range(0, len(pcm), self.chunk_bytes):
            decoder.process_raw(pcm[i : i + self.chunk_bytes], False, False)
        decoder.end_utt()
        return _text(decoder)

    async def transcribe(self, pcm: bytes, *, prompt: str = "", prefix: str = "") -> Transcription:
        """Decode a whole buffer (``prompt`` and ``prefix`` are not supported and ignored)."""
        decoder = await self.acquire()
        t0 = time.perf_counter()
        try:
            text = await run_inference(lambda: self._decode_all(decoder, pcm))
        finally:
            self.release(decoder)
        return Transcription(
            text=text, audio_s=len(pcm) / 2 / SAMPLE_RATE, elapsed_s=time.perf_counter() - t0
        )


class SphinxStream:
    """One call's pocketsphinx stream: a decoder is borrowed per utterance.

    ``send`` queues audio; a worker feeds it to the decoder in ``chunk_s`` slices on the shared
    pool and reports a partial (``hyp()``) when it changes; ``finalize`` ends the utterance and
    answers with one final, flushed event.
    """

    def __init__(self, engine: SphinxEngine) -> None:
        self.engine = engine
        self._events: asyncio.Queue[SttEvent | object] = asyncio.Queue()
        self._pending = bytearray()
        self._work: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._decoder: Any = None
        self._partial = ""
        self._closed = False
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="harken:sphinx")

    async def send(self, pcm: bytes) -> None:
        if self._closed:
            raise ServiceError("pocketsphinx stream is closed")
        self._pending += pcm
        while len(self._pending) >= self.engine.chunk_bytes:
            n = self.engine.chunk_bytes
            self._work.put_nowait(bytes(self._pending[:n]))
            del self._pending[:n]

    async def finalize(self) -> None:
        if self._pending:
            self._work.put_nowait(bytes(self._pending))
            self._pending.clear()
        self._work.put_nowait(None)

    def _process(self, decoder: Any, chunk: bytes) -> str:
        decoder.process_raw(chunk, False, False)
        return _text(decoder)

    def _end(self, decoder: Any) -> str:
        decoder.end_utt()
        return _text(decoder)

    async def _run(self) -> None:
        engine = self.engine
        while True:
            chunk = await self._work.get()
            if chunk is _CLOSE:
                if self._decoder is not None:
                    decoder, self._decoder = self._decoder, None
                    with contextlib.suppress(RuntimeError):
                        await run_inference(decoder.end_utt)
                    engine.release(decoder)
                return
            if chunk is None:
                text = ""
                if self._decoder is not None:
                    decoder, self._decoder = self._decoder, None
                    try:
                        text = await run_inference(functools.partial(self._end, decoder))
                    finally:
                        engine.release(decoder)
                self._partial = ""
                self._events.put_nowait(SttEvent(text, final=True, flushed=True))
                continue
            if self._decoder is None:
                self._decoder = await engine.acquire()
                await run_inference(self._decoder.start_utt)
            text = await run_inference(functools.partial(self._process, self._decoder, chunk))
            if text and text != self._partial:
                self._partial = text
                self._events.put_nowait(SttEvent(text))

    async def events(self) -> AsyncIterator[SttEvent]:
        while True:
            event = await self._events.get()
            if event is _DONE:
                return
            assert isinstance(event, SttEvent)
            yield event

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        while not self._work.empty():  # queued audio is not decoded any more
            self._work.get_nowait()
        self._work.put_nowait(_CLOSE)
        # the worker finishes the chunk in flight (the decoder must not be shared meanwhile)
        await asyncio.shield(self._worker)
        self._events.put_nowait(_DONE)
