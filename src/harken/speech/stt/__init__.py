"""Speech-to-text: engines behind two small interfaces, and one pipeline stage.

Engines (:mod:`~harken.speech.stt.base` defines the interfaces)
    :class:`WhisperEngine` (local ``tiny.en``, CTranslate2 int8, reduced encoder context; batch),
    :class:`SphinxEngine` (local pocketsphinx; streaming, fast and inaccurate),
    :class:`DeepgramEngine` (Deepgram's live WebSocket API; streaming),
    :class:`OpenAITranscriptionEngine` (``/v1/audio/transcriptions`` of any OpenAI-compatible
    server; batch).
The stage
    :class:`SttService`: VAD-gated, LocalAgreement-2 interim transcripts for batch engines, a
    final transcript per turn (see :mod:`~harken.speech.stt.service`).
Start-up
    :func:`warm_up` loads the local models once per process; inference runs on one shared
    pool (:func:`inference_executor`).

Names are imported lazily: ``import harken.speech.stt`` loads no model library.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harken.speech.stt.agreement import LocalAgreement
    from harken.speech.stt.base import (
        StreamingSttEngine,
        SttEngine,
        SttEvent,
        SttStream,
        Transcription,
        inference_executor,
    )
    from harken.speech.stt.deepgram import DeepgramEngine
    from harken.speech.stt.openai import OpenAITranscriptionEngine
    from harken.speech.stt.service import SttService
    from harken.speech.stt.sphinx import SphinxEngine
    from harken.speech.stt.whisper import WhisperEngine

__all__ = [
    "DeepgramEngine",
    "LocalAgreement",
    "OpenAITranscriptionEngine",
    "SphinxEngine",
    "StreamingSttEngine",
    "SttEngine",
    "SttEvent",
    "SttService",
    "SttStream",
    "Transcription",
    "WhisperEngine",
    "inference_executor",
    "warm_up",
]

_LAZY = {
    "DeepgramEngine": "harken.speech.stt.deepgram",
    "LocalAgreement": "harken.speech.stt.agreement",
    "OpenAITranscriptionEngine": "harken.speech.stt.openai",
    "SphinxEngine": "harken.speech.stt.sphinx",
    "StreamingSttEngine": "harken.speech.stt.base",
    "SttEngine": "harken.speech.stt.base",
    "SttEvent": "harken.speech.stt.base",
    "SttService": "harken.speech.stt.service",
    "SttStream": "harken.speech.stt.base",
    "Transcription": "harken.speech.stt.base",
    "WhisperEngine": "harken.speech.stt.whisper",
    "inference_executor": "harken.speech.stt.base",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harken.speech.stt' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def warm_up(*, whisper: bool = True, sphinx: bool = False) -> None:
    """Load the local STT models now and run each once (server start-up, never per call)."""
    if whisper:
        from harken.speech.stt.whisper import WhisperEngine

        WhisperEngine().warm_up_sync()
    if sphinx:
        from harken.speech.stt.sphinx import SphinxEngine

        SphinxEngine().warm_up_sync()
