"""G.711: bit-exact with the Sun/CCITT reference (CPython's audioop is the oracle)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harken.audio import g711
from harken.errors import AudioError

ALL_PCM = np.arange(-32768, 32768, dtype=np.int16).tobytes()
ALL_CODES = bytes(range(256))

# sha256 of the reference outputs (computed with audioop on Python 3.11); these pin the tables
# even where audioop no longer exists.
GOLDEN_SHA256 = {
    "ulaw_encode_all": "81d633c9e6972a18c74a58720b96cb8ca0bdd096d4060b646dd708c3b846019a",
    "alaw_encode_all": "38488f6fd710f4686360edc4d38639f96c491595ef93f8eb8d62d5e07ca6ce7b",
    "ulaw_decode_all": "3dab54339e520bb2c924826e3b72a917a2b612e9fd12fc867500f1d983a75827",
    "alaw_decode_all": "e04788d110e58ff8c70c93b8480190d973e3b67876b6119abbaec766cc75c174",
}
SAMPLES = np.array([0, 1, -1, 100, -100, 1000, -1000, 32636, 32767, -32768], np.int16).tobytes()


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_golden_tables() -> None:
    assert _sha(g711.ulaw_encode(ALL_PCM)) == GOLDEN_SHA256["ulaw_encode_all"]
    assert _sha(g711.alaw_encode(ALL_PCM)) == GOLDEN_SHA256["alaw_encode_all"]
    assert _sha(g711.ulaw_decode(ALL_CODES)) == GOLDEN_SHA256["ulaw_decode_all"]
    assert _sha(g711.alaw_decode(ALL_CODES)) == GOLDEN_SHA256["alaw_decode_all"]


def test_golden_vectors() -> None:
    assert g711.ulaw_encode(SAMPLES).hex() == "ffff7ef272ce4e808000"
    assert g711.alaw_encode(SAMPLES).hex() == "d5d555d353fa7aaaaa2a"
    # segment ends and signs of the decoders
    assert np.frombuffer(g711.ulaw_decode(b"\x00\x7f\x80\xff"), np.int16).tolist() == [
        -32124,
        0,
        32124,
        0,
    ]
    assert np.frombuffer(g711.alaw_decode(b"\x55\xd5\x2a\xaa"), np.int16).tolist() == [
        -8,
        8,
        -32256,
        32256,
    ]


def test_encode_all_65536_inputs_match_reference(audioop: Any) -> None:
    assert g711.ulaw_encode(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)
    assert g711.alaw_encode(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


def test_decode_all_256_codes_match_reference(audioop: Any) -> None:
    assert g711.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_array_api_matches_bytes_api() -> None:
    x = np.frombuffer(ALL_PCM, np.int16)
    for law in ("ulaw", "alaw"):
        codes = g711.encode_array(law, x)
        assert codes.dtype == np.uint8
        assert codes.tobytes() == getattr(g711, f"{law}_encode")(ALL_PCM)
        back = g711.decode_array(law, codes)
        assert back.dtype == np.int16
        assert back.tobytes() == getattr(g711, f"{law}_decode")(codes.tobytes())


@given(st.binary(max_size=2000))
def test_decode_encode_is_identity_on_codes(data: bytes) -> None:
    # every code decodes to a value that encodes back to the same code, except the two codes
    # for zero in µ-law (0x7f and 0xff both decode to 0)
    u = g711.ulaw_encode(g711.ulaw_decode(data))
    assert u == data.replace(b"\x7f", b"\xff")
    assert g711.alaw_encode(g711.alaw_decode(data)) == data


@given(st.lists(st.integers(-32768, 32767), max_size=500))
def test_encode_is_monotonic_and_error_bounded(values: list[int]) -> None:
    x = np.array(sorted(values), np.int16)
    for law in ("ulaw", "alaw"):
        y = g711.decode_array(law, g711.encode_array(law, x)).astype(np.int64)
        assert np.all(np.diff(y) >= 0)  # quantisation preserves order
        err = np.abs(y - x.astype(np.int64))
        # error never exceeds half the largest step (1024 for µ-law, 512 for A-law at the top)
        # plus the clipping of the largest magnitudes
        assert np.all(err <= np.maximum(np.abs(x.astype(np.int64)) // 16, 16) + 650)


def test_bad_input() -> None:
    with pytest.raises(AudioError):
        g711.ulaw_encode(b"\x00")
    with pytest.raises(AudioError):
        g711.encode_table("mulaw")  # type: ignore[arg-type]
    with pytest.raises(AudioError):
        g711.encode_array("ulaw", np.zeros(4, np.int32))  # type: ignore[arg-type]
