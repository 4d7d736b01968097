"""Media-plane DSP: pure, synchronous, numpy-based (no asyncio, no I/O), used by every transport.

The curated public API (everything else in the submodules is private):

G.711 (:mod:`~harken.audio.g711`)
    :func:`ulaw_encode` / :func:`ulaw_decode` / :func:`alaw_encode` / :func:`alaw_decode`
    (bytes), :func:`encode_array` / :func:`decode_array` (numpy); bit-exact with the reference.
Resampling (:mod:`~harken.audio.resample`, :mod:`~harken.audio.transcode`)
    :class:`Resampler` (streaming, 8/16/22.05/24/48 kHz and more), :func:`resample` (one
    shot), :class:`Rechunker` (exact 20 ms frames), :class:`G711Decoder` / :class:`G711Encoder`
    (G.711 at 8 kHz on the wire, PCM at any rate inside, fused for speed).
Jitter buffer and concealment (:mod:`~harken.audio.jitter`, :mod:`~harken.audio.plc`)
    :class:`JitterBuffer`, :class:`JitterStats`, :class:`Concealer`, and the wraparound helpers
    :func:`seq_diff`, :func:`ts_diff`, :class:`Unwrapper`.
DTMF (:mod:`~harken.audio.dtmf`)
    :class:`TelephoneEvent` and :class:`EventReceiver` (RFC 4733), :func:`event_packets`,
    :class:`DtmfDetector` (in-band Goertzel), :func:`dtmf_tone` / :func:`generate_dtmf`,
    :class:`DtmfDigit`.
Levels (:mod:`~harken.audio.level`)
    :func:`rms_dbfs`, :func:`peak_dbfs`, :func:`is_silent`, :func:`silence`, :class:`LevelMeter`.
"""

from __future__ import annotations

from harken.audio.dtmf import (
    DtmfDetector,
    DtmfDigit,
    EventReceiver,
    TelephoneEvent,
    dtmf_tone,
    event_packets,
    generate_dtmf,
)
from harken.audio.g711 import (
    alaw_decode,
    alaw_encode,
    decode_array,
    encode_array,
    ulaw_decode,
    ulaw_encode,
)
from harken.audio.jitter import JitterBuffer, JitterStats, Unwrapper, seq_diff, ts_diff
from harken.audio.level import LevelMeter, is_silent, peak_dbfs, rms_dbfs, silence
from harken.audio.plc import Concealer
from harken.audio.resample import Rechunker, Resampler, frame_samples, resample
from harken.audio.transcode import G711Decoder, G711Encoder

__all__ = [
    "Concealer",
    "DtmfDetector",
    "DtmfDigit",
    "EventReceiver",
    "G711Decoder",
    "G711Encoder",
    "JitterBuffer",
    "JitterStats",
    "LevelMeter",
    "Rechunker",
    "Resampler",
    "TelephoneEvent",
    "Unwrapper",
    "alaw_decode",
    "alaw_encode",
    "decode_array",
    "dtmf_tone",
    "encode_array",
    "event_packets",
    "frame_samples",
    "generate_dtmf",
    "is_silent",
    "peak_dbfs",
    "resample",
    "rms_dbfs",
    "seq_diff",
    "silence",
    "ts_diff",
    "ulaw_decode",
    "ulaw_encode",
]
