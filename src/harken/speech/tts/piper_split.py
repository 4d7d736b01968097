"""Piper's VITS model cut in two at its vocoder, so one sentence's audio streams out in chunks.

A Piper voice is one ONNX graph: text encoder, duration predictor and flow turn phoneme ids into
latent frames (192 channels, one frame per 256 output samples for the medium voices), then the
HiFi-GAN decoder (``/dec/...``) turns the frames into the waveform. The decoder is ~70% of the
work and its cost grows with the audio's length, so a whole-sentence inference makes the first
sample of a 4-second sentence wait for all 4 seconds of it.

:func:`split_voice` cuts the graph (with the ``onnx`` package, in memory, at load time; the
shipped file is untouched and nothing is downloaded) into an *encoder* session (ids ->
frames) and a *decoder* session (frames -> samples). :meth:`SplitVoice.stream` runs the encoder
once, then decodes the frames in chunks that grow (24 frames ~ 0.28 s first, then x3; a sentence
under 48 frames is one chunk), each with :data:`PAD` frames of context on both sides, which the
decoder's receptive field needs. Against the whole-sentence decode (measured on the default
voice): 12 frames give float precision (130 dB SNR), 8 frames 66 dB (a -62 dBFS worst-case error,
far below what a telephone or Opus path keeps), 4 frames 35 dB (audible), none ~19 dB. Eight it
is: the context costs ~10% more CPU per sentence (16 frames decoded twice per seam), and the first
audio of a 12-word sentence comes after ~117 ms instead of ~280 ms (a 2-word clause: ~57 ms
instead of ~77 ms; `harken bench speech --parts tts`, idle machine).

Models this cannot cut (no ``/dec/`` block with exactly one input from the rest of the graph,
e.g. multi-speaker voices, whose decoder also takes the speaker embedding) return None, and the
engine synthesises whole sentences as before; it does the same if cutting fails (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

__all__ = ["FIRST_FRAMES", "PAD", "SplitVoice", "decoder_edges", "split_voice"]

log = logging.getLogger("harken.speech.tts")

PAD: Final = 8
"""Latent frames of context decoded on each side of a chunk (and then dropped)."""
FIRST_FRAMES: Final = 24
"""Frames in a sentence's first chunk (24 x 256 samples ~ 0.28 s at 22,050 Hz)."""
GROWTH: Final = 3
"""Each later chunk is this many times the one before (fewer, cheaper chunks once playing)."""
_DECODER: Final = "/dec/"


def decoder_edges(graph: Any) -> tuple[str, str, int] | None:
    """(latent input, waveform output, samples per frame) of a VITS graph's decoder, or None.

    The decoder is the nodes named ``/dec/...`` (how Piper's training exports them); it must take
    exactly one tensor from the rest of the graph and hand exactly one back. Samples per frame is
    the product of its transposed convolutions' strides.
    """
    dec = [n for n in graph.node if n.name.startswith(_DECODER)]
    if not dec:
        return None
    made = {o for n in dec for o in n.output}
    weights = {i.name for i in graph.initializer}
    outside = {i for n in dec for i in n.input if i and i not in made and i not in weights}
    used_after = {i for n in graph.node if not n.name.startswith(_DECODER) for i in n.input}
    used_after |= {o.name for o in graph.output}
    handed = made & used_after
    if len(outside) != 1 or len(handed) != 1:
        return None
    hop = 1
    for node in dec:
        if node.op_type == "ConvTranspose":
            for attr in node.attribute:
                if attr.name == "strides":
                    hop *= int(np.prod(list(attr.ints)))
    return next(iter(outside)), next(iter(handed)), hop


@dataclass(frozen=True)
class SplitVoice:
    """A voice's encoder and decoder sessions (see the module docs)."""

    encoder: Any
    """onnxruntime session: the voice's inputs -> latent frames [1, channels, frames]."""
    decoder: Any
    """onnxruntime session: latent frames -> waveform [1, 1, frames x hop]."""
    latent: str
    waveform: str
    hop: int
    """Output samples per latent frame."""

    def frames(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The latent frames of one sentence (``feeds``: the voice's own inputs)."""
        z: np.ndarray = self.encoder.run([self.latent], dict(feeds))[0]
        return z

    def decode(self, z: np.ndarray, start: int, end: int) -> np.ndarray:
        """Float samples of frames ``[start, end)`` of ``z``, decoded with PAD frames of context."""
        total = z.shape[2]
        lo, hi = max(0, start - PAD), min(total, end + PAD)
        part = np.ascontiguousarray(z[:, :, lo:hi])
        wave = self.decoder.run([self.waveform], {self.latent: part})[0].reshape(-1)
        a = (start - lo) * self.hop
        out: np.ndarray = wave[a : a + (end - start) * self.hop]
        return out

    def stream(self, feeds: Mapping[str, np.ndarray]) -> Iterator[np.ndarray]:
        """A sentence's float samples, chunk by chunk (a sentence under two first chunks is one)."""
        z = self.frames(feeds)
        total = z.shape[2]
        start, size = 0, FIRST_FRAMES
        while start < total:
            end = min(total, start + size)
            if total - end < size:  # a remainder shorter than this chunk joins it
                end = total
            yield self.decode(z, start, end)
            start, size = end, size * GROWTH


def split_voice(model: Path, options: Any, providers: list[str]) -> SplitVoice | None:
    """Cut ``model`` into encoder and decoder sessions, or None when it cannot be cut here.

    Needs the ``onnx`` package (part of the ``piper`` extra); without it, or for a graph whose
    decoder is not one clean block, the caller falls back to whole-sentence synthesis.
    """
    try:
        import onnx
        from onnx import utils as onnx_utils
    except ImportError:
        log.info("the onnx package is missing: Piper synthesises whole sentences")
        return None
    import onnxruntime  # type: ignore[import-untyped]

    proto = onnx.load(str(model))
    edges = decoder_edges(proto.graph)
    if edges is None:
        log.info("Piper voice %s has no separable decoder: whole sentences", model.name)
        return None
    latent, waveform, hop = edges
    extractor = onnx_utils.Extractor(proto)
    inputs = [i.name for i in proto.graph.input]
    encoder = extractor.extract_model(inputs, [latent]).SerializeToString()
    decoder = extractor.extract_model([latent], [waveform]).SerializeToString()
    del proto, extractor
    return SplitVoice(
        encoder=onnxruntime.InferenceSession(encoder, options, providers=providers),
        decoder=onnxruntime.InferenceSession(decoder, options, providers=providers),
        latent=latent,
        waveform=waveform,
        hop=hop,
    )
