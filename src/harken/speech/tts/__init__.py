"""Text-to-speech: engines that stream PCM, and the pipeline stage that speaks clauses.

Engines (all share :class:`TtsEngine`: ``stream(text)`` -> async iterator of int16 PCM at
``engine.sample_rate``, with ``stream.words`` timing each word):

=================  ========  ==========================================================
``PiperEngine``    local     neural (Piper ``en_US-joe-medium``, 22.05 kHz); the ``piper``
                             extra (GPL-3.0); sentence by sentence; estimated word timing
``EspeakEngine``   local     espeak-ng (default install), ~1 ms per sentence; real word timing
``OpenAITts``      remote    OpenAI-compatible ``/audio/speech``, streamed raw PCM (24 kHz)
``CartesiaTts``    remote    Cartesia WebSocket, one warm multiplexed connection, timestamps
=================  ========  ==========================================================

``CachedEngine(engine)`` wraps any of them with a process-wide cache of short clauses (the
recurring first clause of a reply: "Sure.", "Let me check,") filled at warm-up.

:func:`create_engine` builds one by name; ``"auto"`` (the default) is Piper when the extra is
installed, else espeak-ng. Local models load **once per process**: call ``await
engine.warm_up()`` at server start-up (it also runs one tiny synthesis) so no call pays for it.

:class:`TtsService` is the pipeline stage (see :mod:`harken.speech.tts.service`):
``TextFrame`` clauses in; ``TTSStartedFrame`` / ``AudioFrame`` (at the transport's rate) /
``TTSStoppedFrame`` out; an :class:`UtteranceRecord` per utterance maps seconds played back to
the words heard.
"""

from __future__ import annotations

import logging
from typing import Any

from harken.errors import ConfigError
from harken.speech.tts.base import (
    TtsEngine,
    TtsStream,
    WordTiming,
    active_jobs,
    estimate_words,
    executor,
)
from harken.speech.tts.cache import COMMON_OPENERS, CachedEngine
from harken.speech.tts.cartesia import CartesiaProtocol, CartesiaTts
from harken.speech.tts.espeak import EspeakEngine
from harken.speech.tts.openai import OpenAITts
from harken.speech.tts.piper import PiperEngine, piper_available
from harken.speech.tts.service import TtsService, UtteranceRecord

__all__ = [
    "COMMON_OPENERS",
    "ENGINES",
    "CachedEngine",
    "CartesiaProtocol",
    "CartesiaTts",
    "EspeakEngine",
    "OpenAITts",
    "PiperEngine",
    "TtsEngine",
    "TtsService",
    "TtsStream",
    "UtteranceRecord",
    "WordTiming",
    "active_jobs",
    "create_engine",
    "estimate_words",
    "executor",
    "piper_available",
]

log = logging.getLogger("harken.speech.tts")

ENGINES: dict[str, type[TtsEngine]] = {
    "piper": PiperEngine,
    "espeak": EspeakEngine,
    "openai": OpenAITts,
    "cartesia": CartesiaTts,
}


def create_engine(name: str = "auto", *, cache: bool = False, **options: Any) -> TtsEngine:
    """Build a TTS engine by name: ``auto``, ``piper``, ``espeak``, ``openai``, ``cartesia``.

    ``auto`` is Piper when the ``piper`` extra is installed, else espeak-ng (the default install
    still speaks, offline). ``cache=True`` wraps it in a :class:`CachedEngine` (common openers
    synthesised at warm-up; one cache per voice per process, shared by every engine made
    here). ``options`` go to the engine's constructor.
    """
    if name == "auto":
        if piper_available():
            name = "piper"
        else:
            log.info("Piper is not installed (pip install 'harken[piper]'); using espeak-ng")
            name = "espeak"
    cls = ENGINES.get(name)
    if cls is None:
        raise ConfigError(f"unknown TTS engine {name!r} (one of auto, {', '.join(ENGINES)})")
    try:
        engine = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for TTS engine {name!r}: {exc}") from exc
    return CachedEngine(engine, shared=True) if cache else engine
