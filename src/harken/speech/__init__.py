"""Speech models: VAD and turn detection here; speech-to-text in ``stt``, text-to-speech in ``tts``.

Every model is loaded once per worker process from a file shipped inside an installed wheel
(nothing downloads) and shared by all calls: Silero VAD through a cross-call batcher, Smart Turn
through a small thread pool. Call :func:`warm_up` at server start so the first call does not
pay for loading them.

The names below are imported lazily, so ``import harken.speech.tts`` does not load the VAD.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harken.speech.turn import TurnParams, TurnStage, text_complete
    from harken.speech.vad import VadStage, VadStream
    from harken.speech.vad_batch import SileroBatcher
    from harken.speech.vad_segment import SpeechSegmenter, VadParams

__all__ = [
    "SileroBatcher",
    "SpeechSegmenter",
    "TurnParams",
    "TurnStage",
    "VadParams",
    "VadStage",
    "VadStream",
    "text_complete",
    "warm_up",
]

_LAZY = {
    "SileroBatcher": "harken.speech.vad_batch",
    "SpeechSegmenter": "harken.speech.vad_segment",
    "TurnParams": "harken.speech.turn",
    "TurnStage": "harken.speech.turn",
    "VadParams": "harken.speech.vad_segment",
    "VadStage": "harken.speech.vad",
    "VadStream": "harken.speech.vad",
    "text_complete": "harken.speech.turn",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'harken.speech' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def warm_up(*, vad: bool = True, turn: bool = True) -> None:
    """Load the VAD and turn models now and run each once (server start-up, not per call).

    Raises :class:`harken.errors.ServiceError` with an install hint when a model file is missing.
    """
    if vad:
        from harken.speech.models import silero_check, silero_session

        silero_check(silero_session())
    if turn:
        import numpy as np

        from harken.speech.smart_turn import default_smart_turn

        default_smart_turn().predict(np.zeros(1600, np.float32))
