"""The wire-encoding converters the carrier path uses for every frame."""

from __future__ import annotations

import numpy as np
import pytest

from harken.audio import g711
from harken.errors import AudioError
from harken.transports import wire_audio
from harken.transports.wire_audio import decoder, encoder

ALL_PCM = np.arange(65536, dtype=np.uint16).tobytes()  # every 16-bit sample value
ALL_CODES = bytes(range(256))


@pytest.mark.parametrize("encoding", ["mulaw", "alaw"])
def test_g711_converters_are_bit_exact_with_the_reference_tables(encoding: str) -> None:
    ref_enc = g711.ulaw_encode if encoding == "mulaw" else g711.alaw_encode
    ref_dec = g711.ulaw_decode if encoding == "mulaw" else g711.alaw_decode
    assert encoder(encoding)(ALL_PCM) == ref_enc(ALL_PCM)
    assert decoder(encoding)(ALL_CODES) == ref_dec(ALL_CODES)
    assert encoder(encoding)(b"") == b"" and decoder(encoding)(b"") == b""


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "l16", "l16be"])
def test_odd_length_pcm_is_refused_with_an_audio_error(encoding: str) -> None:
    with pytest.raises(AudioError):
        encoder(encoding)(b"\x01\x02\x03")


def test_16_bit_encodings_round_trip() -> None:
    pcm = np.array([0, 1, -1, 32767, -32768], dtype="<i2").tobytes()
    assert decoder("l16")(encoder("l16")(pcm)) == pcm
    assert encoder("l16be")(pcm) == np.frombuffer(pcm, "<i2").astype(">i2").tobytes()
    assert decoder("l16be")(encoder("l16be")(pcm)) == pcm


def test_the_c_converters_are_used_where_audioop_exists() -> None:
    if wire_audio._AUDIOOP is None:
        pytest.skip("no audioop on this interpreter: the numpy tables are used")
    assert encoder("mulaw") is not g711.ulaw_encode
