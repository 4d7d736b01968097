"""G.711 on the wire, linear PCM at any rate inside: decode+resample and resample+encode fused.

A telephone transport receives 8 kHz µ-law/A-law and hands the pipeline 16-bit PCM at the
pipeline's rate (usually 16 kHz); on the way out it does the reverse. Doing each direction as
one object saves the intermediate int16 array:

* the decoder keeps the *code bytes* in the resampler's delay line (writing a payload is a byte
  copy) and decodes while gathering the filter windows: one ``take`` through a 256-entry
  code -> float32 table, indexed by the strided window view of the codes;
* the encoder turns the filter output into G.711 codes with one lookup on ``trunc(2*y)`` (the
  same index :data:`ROUND_TABLE` uses), so the result is bit-identical to
  resample -> round -> encode done separately.
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
_FRAME: Final = G711_RATE // 50  # 20 ms of codes: the fast path's chunk
_U8: Final = np.dtype(np.uint8)
_I16: Final = np.dtype("<i2")
_U16: Final = np.dtype("<u2")


def _encode_by_index(law: Law) -> npt.NDArray[np.uint8]:
    table = encode_table(law).take(ROUND_TABLE.view(np.uint16))
    table.flags.writeable = False
    return table


_ENC_BY_INDEX: Final[dict[str, npt.NDArray[np.uint8]]] = {}


def _by_index(law: Law) -> npt.NDArray[np.uint8]:
    table = _ENC_BY_INDEX.get(law)
    if table is None:
        table = _ENC_BY_INDEX[law] = _encode_by_index(law)
    return table


class G711Decoder:
    """G.711 bytes (8 kHz) -> 16-bit PCM bytes at ``rate``, keeping resampler state across calls."""

    __slots__ = ("_fir", "_lut_f", "_lut_i", "_resampler", "law", "rate")

    def __init__(self, law: Law = "ulaw", rate: int = G711_RATE, *, quality: str = "voice") -> None:
        self.law = law
        self.rate = rate
        self._lut_i = decode_table(law)
        self._lut_f = self._lut_i.astype(np.float32)
        self._lut_f.flags.writeable = False
        self._resampler = Resampler(G711_RATE, rate, quality=quality)
        fir = self._resampler._fir
        # the resampler's filter design, with a delay line of code bytes decoded on gathering
        self._fir = None if fir is None else _FirStream(fir._k, _FRAME, ROUND_TABLE, self._lut_f)

    def decode(self, payload: bytes | bytearray | memoryview) -> bytes:
        """Decode one payload (any length; 160 bytes is 20 ms) and resample it."""
        fir = self._fir
        if fir is not None:
            return fir.push(payload)
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
        if self._fir is not None:
            self._fir.reset()


class G711Encoder:
    """16-bit PCM bytes at ``rate`` -> G.711 bytes at 8 kHz, keeping resampler state."""

    __slots__ = ("_enc", "_fir", "_resampler", "law", "rate")

    def __init__(self, law: Law = "ulaw", rate: int = G711_RATE, *, quality: str = "voice") -> None:
        self.law = law
        self.rate = rate
        self._enc = encode_table(law)
        self._resampler = Resampler(rate, G711_RATE, quality=quality)
        fir = self._resampler._fir
        # the resampler's filter design, with its output indexing a rounding+encoding table
        self._fir = None if fir is None else _FirStream(fir._k, rate // 50, _by_index(law))

    def encode(self, pcm: bytes | bytearray | memoryview) -> bytes:
        """Resample one chunk of int16 PCM (640 bytes is 20 ms at 16 kHz) and encode it."""
        if len(pcm) & 1:
            raise AudioError(f"16-bit PCM must have an even number of bytes, got {len(pcm)}")
        fir = self._fir
        if fir is not None:
            return fir.push(pcm)
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
        if self._fir is not None:
            self._fir.reset()
