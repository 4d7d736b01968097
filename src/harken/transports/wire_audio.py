"""PCM16 <-> the audio encodings carriers put on the wire (mulaw, alaw, l16, l16be).

G.711 runs once per 20 ms frame per call in each direction, so the per-call overhead matters
more than the per-sample cost: where CPython still ships :mod:`audioop` (3.11, 3.12; the
``audioop-lts`` package on 3.13+), its C converters are used, bit-exact with
:mod:`harken.audio.g711` (the same Sun/CCITT reference; checked on every input value by the
tests) and 4-6x cheaper per frame than numpy's ``frombuffer`` + ``take`` + ``tobytes``.
Elsewhere (no ``audioop``, or a big-endian machine) the numpy tables are used.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from types import ModuleType

import numpy as np

from harken.audio import g711
from harken.errors import AudioError

Convert = Callable[[bytes], bytes]


def _audioop() -> ModuleType | None:
    if sys.byteorder != "little":  # audioop works in native order; the wire is little-endian
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.11/3.12: deprecated, still fine
        try:
            import audioop
        except ImportError:
            return None
    return audioop


_AUDIOOP = _audioop()

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


def _c_converter(name: str, fallback: Convert) -> Convert:
    """``audioop.<name>(data, 2)``, or ``fallback`` without audioop; same errors either way."""
    if _AUDIOOP is None:
        return fallback
    convert: Callable[[bytes, int], bytes] = getattr(_AUDIOOP, name)
    encoding = name.startswith("lin2")
    audioop_error = _AUDIOOP.error

    def run(data: bytes) -> bytes:
        try:
            return convert(data, 2)
        except (audioop_error, TypeError):  # odd-length PCM, not bytes: the numpy path's error
            if encoding and len(data) % 2:
                return fallback(data)
            raise

    return run


_ENCODERS: dict[str, Convert] = {
    "mulaw": _c_converter("lin2ulaw", g711.ulaw_encode),
    "alaw": _c_converter("lin2alaw", g711.alaw_encode),
    "l16": _pcm_bytes,
    "l16be": _swap16,
}
_DECODERS: dict[str, Convert] = {
    "mulaw": _c_converter("ulaw2lin", g711.ulaw_decode),
    "alaw": _c_converter("alaw2lin", g711.alaw_decode),
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
