"""Piper cut at its vocoder: chunked decoding gives the whole-sentence audio, first chunk early."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from harken.speech.tts import piper_available
from harken.speech.tts.piper_split import FIRST_FRAMES, PAD, decoder_edges, split_voice

pytestmark = pytest.mark.skipif(not piper_available(), reason="the piper extra is not installed")


def _voice_inputs(text: str) -> tuple[dict[str, np.ndarray], object]:
    import piper

    from harken.speech.tts.piper import default_voice

    path = default_voice()
    cfg = piper.PiperConfig.from_dict(json.loads(path.with_name(path.name + ".json").read_text()))
    voice = piper.PiperVoice(session=None, config=cfg)
    ids = voice.phonemes_to_ids(voice.phonemize(text)[0])
    feeds = {
        "input": np.array([ids], dtype=np.int64),
        "input_lengths": np.array([len(ids)], dtype=np.int64),
        # no noise: the model is deterministic, so its own output is the reference
        "scales": np.array([0.0, cfg.length_scale, 0.0], dtype=np.float32),
    }
    return feeds, path


@pytest.fixture(scope="module")
def split_and_full() -> tuple[object, object]:
    import onnxruntime

    from harken.speech.tts.piper import default_voice

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    split = split_voice(default_voice(), options, ["CPUExecutionProvider"])
    full = onnxruntime.InferenceSession(
        str(default_voice()), options, providers=["CPUExecutionProvider"]
    )
    return split, full


def test_chunked_decoding_equals_the_whole_model(split_and_full: tuple[object, object]) -> None:
    split, full = split_and_full
    assert split is not None and split.hop == 256  # type: ignore[attr-defined]
    feeds, _ = _voice_inputs("Your table for four is booked for seven pm on Friday evening.")
    reference = full.run(None, feeds)[0].reshape(-1)  # type: ignore[attr-defined]
    pieces = list(split.stream(feeds))  # type: ignore[attr-defined]
    audio = np.concatenate(pieces)
    assert len(pieces) >= 3
    assert len(pieces[0]) == FIRST_FRAMES * 256
    assert audio.shape == reference.shape
    error = audio - reference
    snr = 10 * np.log10(np.sum(reference**2) / max(np.sum(error**2), 1e-30))
    assert snr > 60, f"chunked decoding differs from the model: {snr:.1f} dB"


def test_without_context_the_chunks_would_be_audible(split_and_full: tuple[object, object]) -> None:
    """The PAD frames matter: decoding chunks with no context breaks the waveform at the seams."""
    split, _ = split_and_full
    feeds, _ = _voice_inputs("Your table for four is booked for seven pm on Friday evening.")
    z = split.frames(feeds)  # type: ignore[attr-defined]
    whole = split.decode(z, 0, z.shape[2])  # type: ignore[attr-defined]
    decoder, latent = split.decoder, split.latent  # type: ignore[attr-defined]
    pieces = [
        decoder.run(None, {latent: np.ascontiguousarray(z[:, :, s : s + 24])})[0].reshape(-1)
        for s in range(0, z.shape[2], 24)
    ]
    bare = np.concatenate(pieces)
    error = bare - whole
    snr = 10 * np.log10(np.sum(whole**2) / np.sum(error**2))
    assert snr < 40 and PAD >= 8


def _graph(with_dec: bool, outside_inputs: int) -> onnx.GraphProto:
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="/enc/Relu")]
    dec_inputs = ["h"] + (["g"] if outside_inputs == 2 else [])
    prefix = "/dec/" if with_dec else "/other/"
    nodes.append(helper.make_node("Sum", dec_inputs, ["d"], name=prefix + "Sum"))
    nodes.append(
        helper.make_node("ConvTranspose", ["d", "w"], ["u"], name=prefix + "up", strides=[8])
    )
    nodes.append(helper.make_node("Tanh", ["u"], ["y"], name=prefix + "Tanh"))
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 16], [0.0] * 16)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None])]
    if outside_inputs == 2:
        inputs.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, [1, 1, 1]))
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    return helper.make_graph(nodes, "g", inputs, out, initializer=[w])


def test_decoder_edges_need_one_clean_block() -> None:
    assert decoder_edges(_graph(True, 1)) == ("h", "y", 8)
    assert decoder_edges(_graph(True, 2)) is None  # a speaker embedding also enters the decoder
    assert decoder_edges(_graph(False, 1)) is None  # no vocoder block named /dec/
