"""G.711 µ-law (PCMU) and A-law (PCMA), vectorised with lookup tables.

Bit-exact with the Sun/CCITT reference implementation (``g711.c``), which is also what CPython's
``audioop`` used:

* µ-law encodes the 16-bit sample shifted right by 2 (14-bit), biased by 0x21, clipped at 8159;
* A-law encodes the 16-bit sample shifted right by 3 (13-bit), with even-bit inversion (0x55);
* decoding returns the segment midpoints scaled to 16 bits.

Every table is built once at import with numpy (no per-sample Python). Encoding indexes a
65,536-entry table with the samples' unsigned 16-bit view, so ``encode`` is one ``take``.

:mod:`harken.audio.transcode` derives from these tables one indexed by ``trunc(2*y)`` for a float
sample ``y`` (the index of :data:`harken.audio.resample.ROUND_TABLE`): it folds *round half away
from zero, clip to int16, encode* into one lookup and lets the resampler feed the encoder without
an int16 round trip (:class:`harken.audio.transcode.G711Encoder`).
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from harken.errors import AudioError

__all__ = [
    "ALAW",
    "ULAW",
    "Law",
    "alaw_decode",
    "alaw_decode_array",
    "alaw_encode",
    "alaw_encode_array",
    "decode_array",
    "decode_table",
    "encode_array",
    "encode_table",
    "ulaw_decode",
    "ulaw_decode_array",
    "ulaw_encode",
    "ulaw_encode_array",
]

Law = Literal["ulaw", "alaw"]
ULAW: Final = "ulaw"
ALAW: Final = "alaw"

_U8: Final = np.dtype(np.uint8)
_I16: Final = np.dtype("<i2")
_U16: Final = np.dtype("<u2")

# Segment ends of the reference implementation: the first segment whose end >= magnitude.
_SEG_UEND: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_SEG_AEND: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)
_ULAW_BIAS: Final = 0x84
_ULAW_CLIP: Final = 8159


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its unsigned 16-bit pattern (0, 1, ..., 32767, -32768, ...)."""
    return np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)


def _ulaw_encode_ref(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """Vectorised ``st_14linear2ulaw(sample >> 2)`` for int16-range samples."""
    pcm = samples >> 2  # arithmetic shift: floor, like C on two's complement
    negative = pcm < 0
    mask = np.where(negative, 0x7F, 0xFF)
    mag = np.minimum(np.where(negative, -pcm, pcm), _ULAW_CLIP) + (_ULAW_BIAS >> 2)
    seg = np.searchsorted(_SEG_UEND, mag, side="left")  # first seg with mag <= end
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    uval = np.where(seg >= 8, 0x7F, uval)
    return (uval ^ mask).astype(np.uint8)


def _alaw_encode_ref(samples: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """Vectorised ``st_linear2alaw(sample >> 3)`` for int16-range samples."""
    pcm = samples >> 3
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    mag = np.where(negative, -pcm - 1, pcm)
    seg = np.searchsorted(_SEG_AEND, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (seg << 4) | ((mag >> shift) & 0xF)
    aval = np.where(seg >= 8, 0x7F, aval)
    return (aval ^ mask).astype(np.uint8)


def _ulaw_decode_ref() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + _ULAW_BIAS) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _ULAW_BIAS - t, t - _ULAW_BIAS).astype(np.int16)


def _alaw_decode_ref() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ENC_TABLES: Final[dict[str, npt.NDArray[np.uint8]]] = {
    ULAW: _ulaw_encode_ref(_all_int16()),
    ALAW: _alaw_encode_ref(_all_int16()),
}
_DEC_TABLES: Final[dict[str, npt.NDArray[np.int16]]] = {
    ULAW: _ulaw_decode_ref(),
    ALAW: _alaw_decode_ref(),
}
for _enc in _ENC_TABLES.values():
    _enc.flags.writeable = False
for _dec in _DEC_TABLES.values():
    _dec.flags.writeable = False


def _check_law(law: str) -> None:
    if law not in _ENC_TABLES:
        raise AudioError(f"unknown G.711 law {law!r} (expected 'ulaw' or 'alaw')")


def encode_table(law: Law) -> npt.NDArray[np.uint8]:
    """The 65,536-entry encode table, indexed by a sample's unsigned 16-bit pattern."""
    _check_law(law)
    return _ENC_TABLES[law]


def decode_table(law: Law) -> npt.NDArray[np.int16]:
    """The 256-entry decode table (code byte -> int16 sample)."""
    _check_law(law)
    return _DEC_TABLES[law]


def _as_int16(pcm: bytes | bytearray | memoryview | npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    if isinstance(pcm, np.ndarray):
        if pcm.dtype != np.int16:
            raise AudioError(f"expected int16 samples, got {pcm.dtype}")
        return pcm
    if len(pcm) % 2:
        raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, _I16)


def encode_array(
    law: Law, pcm: bytes | bytearray | memoryview | npt.NDArray[np.int16]
) -> npt.NDArray[np.uint8]:
    """Encode int16 samples (array or little-endian bytes) to G.711 code bytes."""
    x = _as_int16(pcm)
    table = encode_table(law)
    return table.take(x.view(np.uint16))


def decode_array(
    law: Law, data: bytes | bytearray | memoryview | npt.NDArray[np.uint8]
) -> npt.NDArray[np.int16]:
    """Decode G.711 code bytes to an int16 array."""
    codes = data if isinstance(data, np.ndarray) else np.frombuffer(data, _U8)
    if codes.dtype != np.uint8:
        raise AudioError(f"expected uint8 codes, got {codes.dtype}")
    return decode_table(law).take(codes)


# Bytes-in, bytes-out shortcuts: the shapes transports use. The tables are bound at import so the
# hot path is frombuffer + take + tobytes.

_UENC = _ENC_TABLES[ULAW]
_AENC = _ENC_TABLES[ALAW]
_UDEC = _DEC_TABLES[ULAW]
_ADEC = _DEC_TABLES[ALAW]


def ulaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """16-bit little-endian PCM -> µ-law bytes (one byte per sample)."""
    if len(pcm) % 2:
        raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    return _UENC.take(np.frombuffer(pcm, _U16)).tobytes()


def alaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """16-bit little-endian PCM -> A-law bytes."""
    if len(pcm) % 2:
        raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
    return _AENC.take(np.frombuffer(pcm, _U16)).tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> bytes:
    """µ-law bytes -> 16-bit little-endian PCM."""
    return _UDEC.take(np.frombuffer(data, _U8)).tobytes()


def alaw_decode(data: bytes | bytearray | memoryview) -> bytes:
    """A-law bytes -> 16-bit little-endian PCM."""
    return _ADEC.take(np.frombuffer(data, _U8)).tobytes()


def ulaw_encode_array(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    """int16 array -> µ-law codes."""
    return encode_array(ULAW, pcm)


def alaw_encode_array(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.uint8]:
    """int16 array -> A-law codes."""
    return encode_array(ALAW, pcm)


def ulaw_decode_array(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """µ-law bytes -> int16 array."""
    return decode_array(ULAW, data)


def alaw_decode_array(data: bytes | bytearray | memoryview) -> npt.NDArray[np.int16]:
    """A-law bytes -> int16 array."""
    return decode_array(ALAW, data)
