"""espeak-ng: the light offline voice, always installed (``espeakng-loader`` ships the library).

libespeak-ng is driven through ctypes in synchronous mode (``AUDIO_OUTPUT_SYNCHRONOUS``): the
synthesis callback receives PCM chunks (22,050 Hz int16) and word events on the thread that
called ``espeak_Synth``. The C library keeps one global state and is not thread-safe, so this
module holds **one** instance per process behind a lock; synthesis runs in the TTS executor and
returns in about a millisecond per sentence, so callers queue only briefly. Voice and rate are
set on every synthesis (0.1 ms), so engines with different settings can share the instance.

espeak-ng reports where each word starts in the audio (``espeakEVENT_WORD``), so word timings
are real, not estimated. A stream that is closed early makes the callback return 1, which
aborts synthesis at the next chunk.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harken.errors import ConfigError, ServiceError
from harken.speech.tts.base import (
    TtsEngine,
    TtsStream,
    WordTiming,
    executor,
    thread_stream,
    voiced_span,
)

__all__ = ["EspeakEngine", "espeak_instance"]

log = logging.getLogger("harken.speech.tts")

_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_INIT_DONT_EXIT: Final = 0x8000
_CHARS_UTF8: Final = 1
_ENDPAUSE: Final = 0x1000
_POS_CHARACTER: Final = 1
_PARAM_RATE: Final = 1
_PARAM_VOLUME: Final = 2
_PARAM_PITCH: Final = 3
_EVENT_LIST_TERMINATED: Final = 0
_EVENT_WORD: Final = 1
_EVENT_END: Final = 5
_EVENT_MSG_TERMINATED: Final = 6
_BUFFER_MS: Final = 40  # audio per callback


class _Event(ctypes.Structure):
    """``espeak_EVENT`` (speak_lib.h); the trailing union is 8 bytes."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)

Emit = Callable[[tuple[bytes, list[WordTiming]]], bool]


class _Job:
    """The synthesis in progress: forwards audio and words, turns word starts into spans."""

    __slots__ = ("_rate", "emit", "pending", "samples", "text", "voiced_s")

    def __init__(self, text: str, emit: Emit, sample_rate: int) -> None:
        self.text = text
        self.emit = emit
        self.pending: tuple[int, int, float] | None = None  # (char start, length, start s)
        self.samples = 0  # audio so far
        self.voiced_s = 0.0  # end of the last voiced sample so far (s)
        self._rate = sample_rate

    def word(self, position: int, length: int, start_s: float) -> list[WordTiming]:
        """A word starts: the previous one ends here."""
        done = self._close(start_s)
        self.pending = (position - 1, length, start_s)  # espeak counts characters from 1
        return done

    def end(self, end_s: float) -> list[WordTiming]:
        """The clause ends: its last word ends at ``end_s`` or its last voiced sample."""
        if self.pending is not None and self.voiced_s > self.pending[2]:
            end_s = min(end_s, self.voiced_s)
        return self._close(end_s)

    def _close(self, end_s: float) -> list[WordTiming]:
        if self.pending is None:
            return []
        cs, length, start = self.pending
        self.pending = None
        ce = min(len(self.text), cs + max(length, 0))
        return [WordTiming(self.text[cs:ce], start, max(start, end_s), cs, ce)]

    def audio(self, pcm: bytes) -> None:
        x = np.frombuffer(pcm, np.int16)
        span = voiced_span(x, self._rate)
        if span is not None:
            self.voiced_s = self.samples / self._rate + span[1]
        self.samples += len(x)


class Espeak:
    """libespeak-ng loaded once per process. Use :func:`espeak_instance`."""

    def __init__(self) -> None:
        try:
            import espeakng_loader  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise ConfigError(
                "espeakng-loader is not installed: pip install espeakng-loader"
            ) from exc
        try:
            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data = espeakng_loader.get_data_path()
        except (OSError, RuntimeError) as exc:
            raise ServiceError(f"cannot load libespeak-ng: {exc}") from exc
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.restype = ctypes.c_int
        self.lib = lib
        self.lock = threading.Lock()
        with self.lock:
            rate = lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data.encode(), _INIT_DONT_EXIT
            )
        if rate <= 0:
            raise ServiceError(f"espeak-ng failed to initialise (data at {data})")
        self.sample_rate = int(rate)
        self._job: _Job | None = None
        self._callback = _Callback(self._on_audio)  # referenced here so it is never collected
        self.syntheses = 0
        self.samples = 0  # samples synthesised (a statistic; shows abandoned work stopping)
        self.voices: set[str] = set()  # voices whose data has been loaded

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        job = self._job
        if job is None:
            return 1
        pcm = ctypes.string_at(wav, n * 2) if n > 0 and wav else b""
        if pcm:
            self.samples += n
            job.audio(pcm)
        words: list[WordTiming] = []
        i = 0
        while True:
            ev = events[i]
            kind = ev.type
            if kind == _EVENT_LIST_TERMINATED:
                break
            if kind == _EVENT_WORD:
                words += job.word(ev.text_position, ev.length, ev.audio_position / 1000)
            elif kind in (_EVENT_END, _EVENT_MSG_TERMINATED):
                words += job.end(ev.audio_position / 1000)
            i += 1
        if (pcm or words) and not job.emit((pcm, words)):
            return 1  # abandoned: abort synthesis
        return 0

    def synthesize(
        self,
        text: str,
        emit: Emit,
        *,
        voice: str,
        rate: int,
        pitch: int,
        volume: int,
        end_pause: bool,
    ) -> None:
        """Blocking: synthesise ``text``, calling ``emit((pcm, words))`` per chunk."""
        data = text.encode("utf-8")
        flags = _CHARS_UTF8 | (_ENDPAUSE if end_pause else 0)
        with self.lock:
            lib = self.lib
            lib.espeak_SetSynthCallback(self._callback)  # another user may have replaced it
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ConfigError(f"espeak-ng has no voice {voice!r}")
            lib.espeak_SetParameter(_PARAM_RATE, rate, 0)
            lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)
            lib.espeak_SetParameter(_PARAM_VOLUME, volume, 0)
            job = self._job = _Job(text, emit, self.sample_rate)
            try:
                err = lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, flags, None, None)
                lib.espeak_Synchronize()
            finally:
                self._job = None
                self.syntheses += 1
            if err not in (0, 1):  # EE_OK, or EE_INTERNAL_ERROR after an abort
                raise ServiceError(f"espeak-ng synthesis failed (error {err})")
            self.voices.add(voice)
            tail = job.end(float("inf"))
            if tail:
                emit((b"", tail))


_instance: Espeak | None = None
_instance_lock = threading.Lock()


def espeak_instance() -> Espeak:
    """The process-wide espeak-ng instance (initialised on first use; ~1 ms plus data on demand)."""
    global _instance
    if _instance is None:
        with _instance_lock:
            if _instance is None:
                _instance = Espeak()
    return _instance


def say(
    text: str, *, voice: str = "en-us", rate: int = 175, pitch: int = 50, volume: int = 100
) -> npt.NDArray[np.int16]:
    """Blocking: the whole of ``text`` as int16 PCM at 22,050 Hz (test data, benches).

    Goes through the one process-wide instance, so it never races the TTS engine for the
    library (espeak-ng is global state).
    """
    parts: list[bytes] = []

    def collect(chunk: tuple[bytes, list[WordTiming]]) -> bool:
        parts.append(chunk[0])
        return True  # keep going

    espeak_instance().synthesize(
        text,
        collect,
        voice=voice,
        rate=rate,
        pitch=pitch,
        volume=volume,
        end_pause=False,
    )
    return np.frombuffer(b"".join(parts), dtype=np.int16).copy()


class EspeakEngine(TtsEngine):
    """espeak-ng TTS at 22,050 Hz: robotic but instant (~1 ms per sentence) and always there.

    ``voice`` is an espeak-ng voice name (``en-us``, ``en``, ``de``, ...), ``rate`` words per
    minute, ``pitch`` and ``volume`` 0-100/0-200 as in espeak-ng. ``end_pause`` adds espeak's
    pause after the text (a natural gap between clauses).
    """

    name = "espeak"
    local = True
    sample_rate = 22050

    def __init__(
        self,
        voice: str = "en-us",
        *,
        rate: int = 175,
        pitch: int = 50,
        volume: int = 100,
        end_pause: bool = True,
    ) -> None:
        if not 80 <= rate <= 450:
            raise ConfigError(f"espeak-ng rate must be 80-450 words per minute, got {rate}")
        self.voice = voice
        self.rate = rate
        self.pitch = pitch
        self.volume = volume
        self.end_pause = end_pause

    @property
    def ready(self) -> bool:
        return _instance is not None and self.voice in _instance.voices

    def _produce(self, text: str) -> Callable[[Emit], None]:
        def produce(emit: Emit) -> None:
            espeak_instance().synthesize(
                text,
                emit,
                voice=self.voice,
                rate=self.rate,
                pitch=self.pitch,
                volume=self.volume,
                end_pause=self.end_pause,
            )

        return produce

    def synthesize(self, text: str) -> tuple[bytes, list[WordTiming]]:
        """Blocking one-shot synthesis: (PCM, word timings). Never on the event loop."""
        pcm: list[bytes] = []
        words: list[WordTiming] = []

        def collect(item: tuple[bytes, list[WordTiming]]) -> bool:
            pcm.append(item[0])
            words.extend(item[1])
            return True

        self._produce(text)(collect)
        return b"".join(pcm), words

    async def warm_up(self) -> None:
        """Initialise the library and load the voice's data (one tiny synthesis)."""
        await asyncio.get_running_loop().run_in_executor(executor(), self.synthesize, "Hi.")

    async def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        items: AsyncGenerator[tuple[bytes, list[WordTiming]], None] = thread_stream(
            self._produce(text), what="espeak-ng synthesis"
        )
        try:
            async for pcm, words in items:
                stream.words.extend(words)
                if pcm:
                    yield pcm
        finally:
            await items.aclose()
