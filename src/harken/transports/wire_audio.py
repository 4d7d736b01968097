"""PCM16 <-> the audio encodings carriers put on the wire (mulaw, alaw, l16, l16be)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harken.audio import g711
from harken.errors import AudioError

Convert = Callable[[bytes], bytes]

SILENCE_BYTE = {"mulaw": b"\xff", "alaw": b"\xd5", "l16": b"\x00", "l16be": b"\x00"}
BYTES_PER_SAMPLE = {"mulaw": 1, "alaw": 1, "l16": 2, "l16be": 2}


def _swap16(data: bytes) -> bytes:
    if len(data) % 2:
        raise AudioError("16-bit audio must have an even number of bytes")
    return np.frombuffer(data, dtype="<i2").byteswap().tobytes()


def _pcm_bytes(data: bytes) -> bytes:
    if len(data) % 2:
        raise AudioError("16-bit audio must have an even number of bytes")
    return bytes(data)


_ENCODERS: dict[str, Convert] = {
    "mulaw": g711.ulaw_encode,
    "alaw": g711.alaw_encode,
    "l16": _pcm_bytes,
    "l16be": _swap16,
}
_DECODERS: dict[str, Convert] = {
    "mulaw": g711.ulaw_decode,
    "alaw": g711.alaw_decode,
    "l16": _pcm_bytes,
    "l16be": _swap16,
}


def encoder(encoding: str) -> Convert:
    """PCM16 little-endian -> ``encoding``."""
    try:
        return _ENCODERS[encoding]
    except KeyError:
        raise AudioError(f"no encoder for wire encoding {encoding!r}") from None


def decoder(encoding: str) -> Convert:
    """``encoding`` -> PCM16 little-endian."""
    try:
        return _DECODERS[encoding]
    except KeyError:
        raise AudioError(f"no decoder for wire encoding {encoding!r}") from None
