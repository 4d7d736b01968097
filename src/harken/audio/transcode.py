"""G.711 on the wire, linear PCM at any rate inside: decode+resample and resample+encode fused.

A telephone transport receives 8 kHz µ-law/A-law and hands the pipeline 16-bit PCM at the
pipeline's rate (usually 16 kHz); on the way out it does the reverse. Doing each direction as
one object saves the intermediate int16 array: the decoder writes decoded samples straight into
the resampler's delay line (one table lookup), and the encoder turns the filter output into
G.711 codes with one lookup on ``trunc(2*y)`` (the same index :data:`ROUND_TABLE` uses), so the
result is bit-identical to resample -> round -> encode done separately.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from harken.audio.g711 import Law, decode_table, encode_table
from harken.audio.resample import ROUND_TABLE, Resampler, _FirStream
from harken.errors import AudioError

__all__ = ["G711_RATE", "G711Decoder", "G711Encoder"]

G711_RATE: Final = 8000
_U8: Final = np.dtype(np.uint8)
_I16: Final = np.dtype("<i2")
_U16: Final = np.dtype("<u2")


def _encode_by_index(law: Law) -> npt.NDArray[np.uint8]:
    table = encode_table(law).take(ROUND_TABLE.view(np.uint16))
    table.flags.writeable = False
    return table


_ENC_BY_INDEX: Final[dict[str, npt.NDArray[np.uint8]]] = {}


class G711Decoder:
    """G.711 bytes (8 kHz) -> 16-bit PCM bytes at ``rate``, keeping resampler state across calls."""

    __slots__ = ("_fir", "_lut_f", "_lut_i", "_resampler", "law", "rate")

    def __init__(self, law: Law = "ulaw", rate: int = G711_RATE, *, quality: str = "voice") -> None:
        self.law = law
        self.rate = rate
        self._lut_i = decode_table(law)
        self._lut_f = self._lut_i.astype(np.float32)
        self._resampler = Resampler(G711_RATE, rate, quality=quality)
        self._fir: _FirStream | None = self._resampler._fir

    def decode(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Decode one payload (any length; 160 bytes is 20 ms) and resample it."""
        fir = self._fir
        if fir is not None and len(payload) <= fir.max_chunk:
            slot, rows = fir.claim(len(payload))
            self._lut_f.take(np.frombuffer(payload, _U8), None, slot, "clip")
            if rows is None:
                return b""
            j = rows.dot(fir.matrix).astype(np.intp)
            return bytes(ROUND_TABLE.take(j, None, None, "wrap").tobytes())
        pcm = self._lut_i.take(np.frombuffer(payload, _U8))
        if self._resampler.engine == "passthrough":
            return pcm.tobytes()
        return self._resampler.process_array(pcm).tobytes()

    @property
    def delay_s(self) -> float:
        """Algorithmic delay of the resampler, in seconds."""
        return self._resampler.delay_s

    def reset(self) -> None:
        """Start a new stream."""
        self._resampler.reset()


class G711Encoder:
    """16-bit PCM bytes at ``rate`` -> G.711 bytes at 8 kHz, keeping resampler state."""

    __slots__ = ("_by_index", "_enc", "_fir", "_resampler", "law", "rate")

    def __init__(self, law: Law = "ulaw", rate: int = G711_RATE, *, quality: str = "voice") -> None:
        self.law = law
        self.rate = rate
        self._enc = encode_table(law)
        by_index = _ENC_BY_INDEX.get(law)
        if by_index is None:
            by_index = _ENC_BY_INDEX[law] = _encode_by_index(law)
        self._by_index = by_index
        self._resampler = Resampler(rate, G711_RATE, quality=quality)
        self._fir: _FirStream | None = self._resampler._fir

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Resample one chunk of int16 PCM (320 bytes is 10 ms at 16 kHz) and encode it."""
        if len(pcm) & 1:
            raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        fir = self._fir
        if fir is not None and len(pcm) <= 2 * fir.max_chunk:
            slot, rows = fir.claim(len(pcm) >> 1)
            slot[...] = np.frombuffer(pcm, _I16)
            if rows is None:
                return b""
            j = rows.dot(fir.matrix).astype(np.intp)
            return bytes(self._by_index.take(j, None, None, "wrap").tobytes())
        if self._resampler.engine == "passthrough":
            return self._enc.take(np.frombuffer(pcm, _U16)).tobytes()
        out = self._resampler.process_array(np.frombuffer(pcm, _I16))
        return self._enc.take(out.view(np.uint16)).tobytes()

    @property
    def delay_s(self) -> float:
        """Algorithmic delay of the resampler, in seconds."""
        return self._resampler.delay_s

    def reset(self) -> None:
        """Start a new stream."""
        self._resampler.reset()
