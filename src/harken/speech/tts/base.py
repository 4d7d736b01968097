"""The engine interface, word timing, and the process-wide executor that local engines run on.

An engine turns text into a stream of int16 little-endian mono PCM at its own ``sample_rate``::

    stream = engine.stream("Hello there,")        # a TtsStream: AsyncIterator[bytes]
    async with contextlib.aclosing(stream):
        async for pcm in stream:
            ...
    stream.words                                  # [WordTiming(...), ...]

``stream.words`` holds word timings relative to the first sample of that stream: real ones where
the engine reports them (espeak-ng word events, Cartesia timestamps), an estimate otherwise
(:func:`estimate_words`: the words' characters spread over the voiced part of the audio). Closing
a stream early (``aclose``, or cancelling the task that iterates it) abandons synthesis: a local
engine's thread stops at its next chunk and nothing more is produced.

Local engines (Piper, espeak-ng) run in one process-wide thread pool (:func:`executor`), never on
the event loop; :func:`thread_stream` bridges a blocking producer in that pool to an async
iterator and stops the producer when the consumer goes away. :func:`active_jobs` counts producers
still running (tests use it to prove nothing leaks).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import os
import re
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import numpy as np

from harken.errors import HarkenError, ServiceError
from harken.speech.models import background_thread

__all__ = [
    "TtsEngine",
    "TtsStream",
    "WordTiming",
    "active_jobs",
    "estimate_words",
    "executor",
    "split_sentences",
    "thread_stream",
    "voiced_span",
    "word_spans",
]

log = logging.getLogger("harken.speech.tts")

T = TypeVar("T")

_VOICED_LEVEL: Final = 300  # |sample| above this counts as voiced (about -40 dBFS)
_WORD_RE: Final = re.compile(r"\S+")
# a sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace
_SENTENCE_RE: Final = re.compile(r"\S.*?(?:[.!?]+[\"')\]]*(?=\s|$)|$)", re.S)


@dataclass(slots=True, frozen=True)
class WordTiming:
    """One word of synthesised text: where it is in the text and when it is heard.

    ``start_s`` / ``end_s`` are seconds from the first sample of the stream (or, in an
    :class:`~harken.speech.tts.service.UtteranceRecord`, of the utterance); ``char_start`` /
    ``char_end`` index the text (``-1`` when a remote engine's word could not be found in it).
    """

    word: str
    start_s: float
    end_s: float
    char_start: int
    char_end: int

    def shifted(self, seconds: float, chars: int) -> WordTiming:
        """The same word, later by ``seconds`` and ``chars`` (placing a clause in an utterance)."""
        cs = self.char_start + chars if self.char_start >= 0 else -1
        ce = self.char_end + chars if self.char_end >= 0 else -1
        # never before the utterance's first sample (its leading silence may have been dropped)
        start, end = max(0.0, self.start_s + seconds), max(0.0, self.end_s + seconds)
        return WordTiming(self.word, start, end, cs, ce)


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` for every whitespace-separated word of ``text``."""
    return [(m.group(), m.start(), m.end()) for m in _WORD_RE.finditer(text)]


def split_sentences(text: str) -> list[tuple[str, int]]:
    """Sentences of ``text`` with their character offsets; whitespace-only pieces are dropped."""
    return [(m.group().rstrip(), m.start()) for m in _SENTENCE_RE.finditer(text)]


def estimate_words(
    text: str, start_s: float, end_s: float, *, char_offset: int = 0
) -> list[WordTiming]:
    """Spread ``text``'s words over ``[start_s, end_s]`` in proportion to their length.

    Each word weighs its characters plus one (the gap after it), so long words take longer. An
    estimate for engines that report no timing: within ~0.2 s for ordinary sentences.
    """
    spans = word_spans(text)
    if not spans:
        return []
    weights = [len(w) + 1.0 for w, _, _ in spans]
    total = sum(weights)
    span = max(0.0, end_s - start_s)
    out: list[WordTiming] = []
    t = start_s
    for (word, s, e), weight in zip(spans, weights, strict=True):
        d = span * weight / total
        end = t + d * len(word) / weight
        out.append(WordTiming(word, t, end, s + char_offset, e + char_offset))
        t += d
    return out


def voiced_span(pcm: bytes | np.ndarray, sample_rate: int) -> tuple[float, float] | None:
    """First and last voiced instants (s) of int16 audio, or None when it is all silence."""
    x = np.frombuffer(pcm, np.int16) if isinstance(pcm, bytes | bytearray) else pcm
    loud = np.flatnonzero(np.abs(x.astype(np.int32)) > _VOICED_LEVEL)
    if loud.size == 0:
        return None
    return float(loud[0]) / sample_rate, float(loud[-1] + 1) / sample_rate


# --------------------------------------------------------------------------------------------
# the stream an engine returns


class TtsStream:
    """One synthesis: an async iterator of int16 PCM chunks plus the words' timing.

    Attributes (filled while iterating): ``words`` (see :class:`WordTiming`), ``samples``
    (samples yielded so far), ``estimated`` (True when ``words`` is an estimate). Close it
    (``aclose``) to abandon synthesis early.
    """

    __slots__ = (
        "_agen",
        "_carry",
        "_first_voiced",
        "_last_voiced",
        "engine",
        "estimated",
        "sample_rate",
        "samples",
        "text",
        "words",
    )

    def __init__(self, engine: TtsEngine, text: str) -> None:
        self.engine = engine
        self.text = text
        self.sample_rate = engine.sample_rate
        self.words: list[WordTiming] = []
        self.samples = 0
        self.estimated = False
        self._carry = b""
        self._first_voiced = -1
        self._last_voiced = -1
        self._agen: AsyncIterator[bytes] = engine.generate(text, self)

    @property
    def duration_s(self) -> float:
        """Seconds of audio yielded so far."""
        return self.samples / self.sample_rate

    def __aiter__(self) -> TtsStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            try:
                pcm = await self._agen.__anext__()
            except StopAsyncIteration:
                self._finish()
                raise
            if self._carry:
                pcm = self._carry + pcm
                self._carry = b""
            if len(pcm) & 1:  # a network chunk may split a sample
                self._carry = pcm[-1:]
                pcm = pcm[:-1]
            if pcm:
                self._track(pcm)
                return pcm

    def _track(self, pcm: bytes) -> None:
        x = np.frombuffer(pcm, np.int16)
        loud = np.flatnonzero(np.abs(x.astype(np.int32)) > _VOICED_LEVEL)
        if loud.size:
            if self._first_voiced < 0:
                self._first_voiced = self.samples + int(loud[0])
            self._last_voiced = self.samples + int(loud[-1]) + 1
        self.samples += len(x)

    def _finish(self) -> None:
        if self.words or self.samples == 0:
            return
        rate = self.sample_rate
        if self._first_voiced >= 0:
            start, end = self._first_voiced / rate, self._last_voiced / rate
        else:
            start, end = 0.0, self.samples / rate
        self.words = estimate_words(self.text, start, end)
        self.estimated = True

    async def aclose(self) -> None:
        """Abandon synthesis (idempotent)."""
        closer = getattr(self._agen, "aclose", None)
        if closer is not None:
            await closer()


# --------------------------------------------------------------------------------------------
# engines


class TtsEngine(abc.ABC):
    """A text-to-speech engine. Subclasses implement :meth:`generate`; callers use :meth:`stream`.

    Engines are shared by every call of a process (they hold no per-call state), so one engine
    object serves a whole server. Model files are loaded once per process, by :meth:`warm_up` at
    start-up; :attr:`ready` says whether that has happened.
    """

    name: str = "tts"
    local: bool = True  # True: runs on this machine's CPU (executor); False: remote
    sample_rate: int = 22050

    def stream(self, text: str) -> TtsStream:
        """Synthesise ``text``; iterate the result for PCM chunks as soon as they exist."""
        return TtsStream(self, text)

    @abc.abstractmethod
    def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        """Yield int16 PCM for ``text``; append known word timings to ``stream.words``."""

    @property
    def ready(self) -> bool:
        """True once the engine's model is loaded (or, for remote engines, always)."""
        return True

    async def warm_up(self) -> None:  # noqa: B027 - optional hook
        """Load the model and run one tiny synthesis, so the first real call is warm."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections (remote engines); local models stay loaded for the process."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.sample_rate} Hz>"


# --------------------------------------------------------------------------------------------
# the process-wide executor and the thread -> asyncio bridge

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()
_jobs: set[_Job[Any]] = set()
_jobs_lock = threading.Lock()


def executor() -> ThreadPoolExecutor:
    """The process-wide pool local TTS inference runs in (re-created after ``fork``).

    Size: ``HARKEN_TTS_THREADS`` or ``min(4, cpu_count)`` threads. Each synthesis holds one
    thread for its duration; the ONNX session itself is limited to its own intra-op threads.
    """
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                n = int(os.environ.get("HARKEN_TTS_THREADS", "0")) or min(4, os.cpu_count() or 1)
                _pool = ThreadPoolExecutor(
                    max_workers=n, thread_name_prefix="harken-tts", initializer=background_thread
                )
                _pool_pid = pid
    return _pool


def active_jobs() -> int:
    """Producers still running in the executor (should drop to 0 once streams are closed)."""
    with _jobs_lock:
        return len(_jobs)


_END: Final = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Job(Generic[T]):
    """One blocking producer: it calls ``emit(item)``, which returns False once abandoned."""

    __slots__ = ("_loop", "_queue", "cancelled")

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        self._loop = loop
        self._queue = queue
        self.cancelled = threading.Event()

    def emit(self, item: T) -> bool:
        if self.cancelled.is_set():
            return False
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()
            return False
        return True

    def _finish(self, item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def run(self, produce: Callable[[Callable[[T], bool]], None]) -> None:
        with _jobs_lock:
            _jobs.add(self)
        try:
            if not self.cancelled.is_set():
                produce(self.emit)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._finish(_Failure(exc))
        else:
            self._finish(_END)
        finally:
            with _jobs_lock:
                _jobs.discard(self)


async def thread_stream(
    produce: Callable[[Callable[[T], bool]], None], *, what: str
) -> AsyncGenerator[T, None]:
    """Run ``produce(emit)`` in :func:`executor` and yield what it emits, as it emits it.

    ``emit`` returns False once the consumer has gone (the stream was closed or its task
    cancelled): the producer must then stop. An exception in the producer is re-raised here
    (a :class:`~harken.errors.HarkenError` as is, anything else as a ``ServiceError``).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    job: _Job[T] = _Job(loop, queue)
    loop.run_in_executor(executor(), job.run, produce)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                exc = item.exc
                if isinstance(exc, HarkenError):
                    raise exc
                raise ServiceError(f"{what} failed: {exc!r}") from exc
            yield item  # type: ignore[misc]
    finally:
        job.cancelled.set()
