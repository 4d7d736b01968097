"""The engine interfaces every speech-to-text backend implements, and the shared inference pool.

Two shapes of engine:

* :class:`SttEngine` (batch): ``await transcribe(pcm16k, prompt=..., prefix=...)`` returns a
  :class:`Transcription` of a whole buffer. Local Whisper and the OpenAI-compatible client are
  batch engines; :class:`~harken.speech.stt.service.SttService` turns one into a streaming
  recogniser with LocalAgreement-2 (see :mod:`harken.speech.stt.agreement`).
* :class:`StreamingSttEngine`: ``await open_stream()`` returns an :class:`SttStream` that takes
  audio as it arrives and yields :class:`SttEvent`\\ s (interim and final pieces). Deepgram and
  pocketsphinx are streaming engines.

Audio is always 16-bit little-endian mono PCM at the engine's ``sample_rate`` (16 kHz for all
engines here). Local model inference runs on :func:`inference_executor`, one small thread pool
per process shared by every call and every engine: never on the event loop, never a pool or a
model per call. Models load once per process (``warm_up``), never on a call's first request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Final, Protocol, TypeVar, runtime_checkable

from harken.speech.models import background_thread

__all__ = [
    "SAMPLE_RATE",
    "StreamingSttEngine",
    "SttEngine",
    "SttEvent",
    "SttStream",
    "Transcription",
    "inference_executor",
    "run_inference",
]

SAMPLE_RATE: Final = 16000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Transcription:
    """The text of one buffer of audio.

    ``text`` covers the whole buffer, including a forced ``prefix`` when one was given.
    ``segments`` are ``(start_s, end_s, text)`` where the engine knows them (Whisper's timestamp
    tokens), relative to the start of the buffer. ``elapsed_s`` is the inference time.
    """

    text: str
    audio_s: float = 0.0
    elapsed_s: float = 0.0
    confidence: float | None = None
    language: str | None = None
    segments: tuple[tuple[float, float, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SttEvent:
    """A piece of transcript from a streaming engine.

    ``final`` (Deepgram ``is_final``): this span of audio will not be revised. ``speech_final``:
    the engine's own endpointing saw the speaker stop. ``utterance_end``: an ``UtteranceEnd``
    (gap in words) with no text. ``flushed``: the answer to :meth:`SttStream.finalize`; every
    final for the audio sent before it has been delivered. Times are seconds of stream audio.
    """

    text: str
    final: bool = False
    speech_final: bool = False
    utterance_end: bool = False
    flushed: bool = False
    confidence: float | None = None
    start: float = 0.0
    end: float = 0.0


@runtime_checkable
class SttEngine(Protocol):
    """A batch recogniser: whole buffers in, text out."""

    name: str
    sample_rate: int
    #: whether partial passes (LocalAgreement) are cheap enough to run while the caller talks
    partials: bool

    async def warm_up(self) -> None:
        """Load models / open connections now (process start-up), not on the first call."""
        ...

    async def transcribe(self, pcm: bytes, *, prompt: str = "", prefix: str = "") -> Transcription:
        """Transcribe ``pcm``; ``prompt`` is earlier context, ``prefix`` text the output must
        start with (already agreed words of this buffer)."""
        ...

    async def aclose(self) -> None:
        """Release connections (models stay loaded for the process)."""
        ...


@runtime_checkable
class SttStream(Protocol):
    """One live recognition stream (a call's, or a turn's)."""

    async def send(self, pcm: bytes) -> None:
        """Audio as it arrives."""
        ...

    async def finalize(self) -> None:
        """Flush: the engine finalizes everything sent so far and answers with a ``flushed``
        event."""
        ...

    def events(self) -> AsyncIterator[SttEvent]:
        """The events, in order, until the stream closes."""
        ...

    async def aclose(self) -> None:
        """Close the stream (and its connection)."""
        ...


@runtime_checkable
class StreamingSttEngine(Protocol):
    """A recogniser that streams: open a stream, send audio, read events."""

    name: str
    sample_rate: int

    async def warm_up(self) -> None: ...

    async def open_stream(self) -> SttStream: ...

    async def aclose(self) -> None: ...


# --------------------------------------------------------------------------------------------
# the process-wide inference pool

_pool_lock = threading.Lock()
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_pid = 0


def _default_threads() -> int:
    env = os.environ.get("HARKEN_STT_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(2, os.cpu_count() or 1))


def inference_executor() -> concurrent.futures.ThreadPoolExecutor:
    """The thread pool every local STT inference runs on (one per process, fork-aware).

    Its size is ``$HARKEN_STT_THREADS`` or ``min(2, cores)``: CTranslate2 and numpy release the
    GIL, so two workers let a final pass run while a partial pass finishes; more would only
    split the same cores.
    """
    global _pool, _pool_pid
    pid = os.getpid()
    if _pool is None or _pool_pid != pid:
        with _pool_lock:
            if _pool is None or _pool_pid != pid:
                _pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_default_threads(),
                    thread_name_prefix="harken-stt",
                    initializer=background_thread,
                )
                _pool_pid = pid
    return _pool


async def run_inference(fn: Callable[[], T]) -> T:
    """Run ``fn`` on :func:`inference_executor` and await its result."""
    return await asyncio.get_running_loop().run_in_executor(inference_executor(), fn)
