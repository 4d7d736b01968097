"""Streaming resampler: continuity across 20 ms frames, response, lengths, rechunking."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.audio import g711
from harken.audio.resample import Rechunker, Resampler, frame_samples, resample
from harken.audio.transcode import G711Decoder, G711Encoder
from harken.errors import AudioError

RATES = (8000, 16000, 22050, 24000, 48000)
PAIRS = [(a, b) for a, b in itertools.permutations(RATES, 2)]


def sine(rate: int, freq: float, seconds: float, amp: float = 12000.0) -> npt.NDArray[np.int16]:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def stream(r: Resampler, x: npt.NDArray[np.int16], chunk: int) -> npt.NDArray[np.int16]:
    out = [
        np.frombuffer(r.process(x[i : i + chunk].tobytes()), np.int16)
        for i in range(0, len(x), chunk)
    ]
    return np.concatenate(out)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_every_20ms_frame_gives_exactly_20ms(src: int, dst: int) -> None:
    r = Resampler(src, dst)
    assert r.engine == "fir"
    frame = np.zeros(frame_samples(src), np.int16).tobytes()
    for _ in range(5):
        assert len(r.process(frame)) == 2 * frame_samples(dst)


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_no_discontinuity_at_frame_seams(src: int, dst: int) -> None:
    """A 440 Hz sine streamed in 20 ms frames matches the ideal delayed sine everywhere, and the
    error next to the frame boundaries is no larger than elsewhere."""
    x = sine(src, 440.0, 0.5)
    r = Resampler(src, dst)
    y = stream(r, x, frame_samples(src)).astype(np.float64)
    n = np.arange(len(y))
    ideal = 12000.0 * np.sin(2 * np.pi * 440.0 * (n / dst - r.delay_s))
    err = np.abs(y - ideal)[dst // 50 :]  # skip the filter's start-up
    seams = np.zeros(len(y), bool)
    fo = frame_samples(dst)
    for b in range(fo, len(y), fo):
        seams[b - 3 : b + 3] = True
    seam_err = np.abs(y - ideal)[seams[: len(y)] & (n >= dst // 50)]
    assert err.max() < 12.0  # -60 dB of the signal: passband ripple plus rounding
    assert seam_err.max() <= err.max()
    # second difference: a click shows up as a spike; a sine's is smooth
    d2 = np.abs(np.diff(y, 2))[dst // 50 :]
    assert d2.max() < 1.2 * (2 * np.pi * 440 / dst) ** 2 * 12000 + 4


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (48000, 16000)])
def test_streaming_equals_one_shot_for_any_chunking(src: int, dst: int) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(src) * 4000).astype(np.int16)
    whole = np.frombuffer(Resampler(src, dst).process(x.tobytes()), np.int16)
    r = Resampler(src, dst)
    parts, pos = [], 0
    while pos < len(x):
        n = int(rng.integers(1, 700))
        parts.append(np.frombuffer(r.process(x[pos : pos + n].tobytes()), np.int16))
        pos += n
    ragged = np.concatenate(parts)
    assert len(ragged) == len(whole)
    # BLAS may sum in another order for other block counts: at most 1 LSB of rounding
    assert np.abs(ragged.astype(int) - whole.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("src", "dst", "tone", "max_db"),
    [
        (16000, 8000, 5000.0, -65.0),  # would alias to 3 kHz
        (16000, 8000, 7000.0, -65.0),
        (48000, 16000, 10000.0, -65.0),
        (8000, 16000, 3000.0, None),  # passband: image at 5 kHz must be gone
    ],
)
def test_alias_and_image_rejection(src: int, dst: int, tone: float, max_db: float | None) -> None:
    x = sine(src, tone, 1.0)
    y = np.frombuffer(resample(x.tobytes(), src, dst), np.int16).astype(np.float64)[dst // 10 :]
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    freqs = np.fft.rfftfreq(len(y), 1 / dst)
    ref = 12000 * len(y) / 4  # a 12000-amplitude sine's peak with a Hann window
    if max_db is not None:
        assert 20 * np.log10(spec.max() / ref) < max_db
    else:
        peak = spec[np.abs(freqs - tone) < 20].max()
        assert abs(20 * np.log10(peak / ref)) < 0.1  # passband gain within 0.1 dB
        image = spec[np.abs(freqs - (src - tone)) < 50].max()
        assert 20 * np.log10(image / ref) < -60


def test_full_scale_square_wave_clips_instead_of_wrapping() -> None:
    x = np.where(np.arange(8000) % 80 < 40, 32767, -32768).astype(np.int16)
    for src, dst in ((8000, 16000), (8000, 48000)):
        y = np.frombuffer(Resampler(src, dst).process(x.tobytes()), np.int16).astype(int)
        # a wrapped overshoot would jump by ~65536 between neighbours
        assert np.abs(np.diff(y)).max() < 40000
        assert y.max() == 32767 and y.min() == -32768


def test_one_shot_resample_preserves_length_and_timing() -> None:
    x = sine(8000, 300.0, 0.25)
    y = np.frombuffer(resample(x.tobytes(), 8000, 16000), np.int16)
    assert len(y) == 2 * len(x)
    ideal = 12000.0 * np.sin(2 * np.pi * 300.0 * np.arange(len(y)) / 16000)
    assert np.abs(y[200:-200] - ideal[200:-200]).max() < 12


def test_soxr_engine_streams_without_seams() -> None:
    x = sine(22050, 440.0, 1.0)
    r = Resampler(22050, 16000, engine="soxr", quality="HQ")
    assert r.engine == "soxr"
    y = stream(r, x, 441).astype(np.float64)
    y = np.concatenate([y, np.frombuffer(r.flush(), np.int16)])
    assert abs(len(y) - 16000) <= 1
    core = y[2000:-2000]
    d2 = np.abs(np.diff(core, 2))
    assert d2.max() < 1.2 * (2 * np.pi * 440 / 16000) ** 2 * 12000 + 4


def test_fused_g711_transcoders_equal_separate_steps() -> None:
    x = sine(8000, 350.0, 1.0, amp=30000)
    codes = g711.ulaw_encode(x.tobytes())
    for law, rate in (("ulaw", 16000), ("alaw", 16000), ("ulaw", 48000), ("ulaw", 8000)):
        codes = g711.encode_array(law, x).tobytes()
        dec, up = G711Decoder(law, rate), Resampler(8000, rate)
        enc, down = G711Encoder(law, rate), Resampler(rate, 8000)
        for i in range(0, len(codes), 160):
            c = codes[i : i + 160]
            pcm = g711.decode_array(law, c).tobytes()
            a = dec.decode(c)
            b = up.process(pcm) if rate != 8000 else pcm
            assert a == b
            e1 = enc.encode(a)
            e2 = g711.encode_array(
                law, np.frombuffer(down.process(a) if rate != 8000 else a, np.int16)
            )
            assert e1 == e2.tobytes()


def _chunks(rng: np.random.Generator, total: int, frame: int) -> list[int]:
    """Chunk sizes mixing whole frames (aligned and not) with ragged pieces."""
    sizes: list[int] = []
    while sum(sizes) < total:
        kind = rng.integers(0, 4)
        if kind == 0:
            sizes.append(int(rng.integers(1, 2 * frame)))
        else:
            sizes += [frame] * int(rng.integers(1, 20))
    return sizes


def _adjacent_codes(a: bytes, b: bytes, law: str) -> bool:
    """Equal, or differing only by one quantisation step (a 1-LSB difference before encoding)."""
    da = np.frombuffer(g711.decode_array(law, a), np.int16).astype(int)
    db = np.frombuffer(g711.decode_array(law, b), np.int16).astype(int)
    levels = np.unique(g711.decode_table(law).astype(int))
    ia, ib = np.searchsorted(levels, da), np.searchsorted(levels, db)
    return len(a) == len(b) and int(np.abs(ia - ib).max(initial=0)) <= 1


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (48000, 16000)])
def test_frame_fast_path_and_ragged_chunks_mix(src: int, dst: int) -> None:
    """20 ms frames (the preallocated fast path), ragged chunks and frames that arrive with a
    partial block pending all share one delay line: the stream equals one-shot conversion, over
    many trips round the delay line, and ``process_array`` agrees with ``process``."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(3 * src) * 6000).astype(np.int16)
    whole = np.frombuffer(Resampler(src, dst).process(x.tobytes()), np.int16).astype(int)
    r, ra = Resampler(src, dst), Resampler(src, dst)
    got, got_a, pos = [], [], 0
    for n in _chunks(rng, len(x), frame_samples(src)):
        piece = x[pos : pos + n]
        got.append(np.frombuffer(r.process(piece.tobytes()), np.int16))
        got_a.append(ra.process_array(piece))
        pos += n
    stream_out = np.concatenate(got).astype(int)
    assert np.array_equal(stream_out, np.concatenate(got_a))
    assert len(stream_out) == len(whole)
    assert np.abs(stream_out - whole).max() <= 1


def test_process_array_returns_fresh_arrays() -> None:
    r = Resampler(8000, 16000)
    frame = sine(8000, 440.0, 0.02)
    first = r.process_array(frame)
    keep = first.copy()
    r.process_array(-frame)
    assert np.array_equal(first, keep)


def test_memoryviews_of_other_formats_are_taken_as_raw_bytes() -> None:
    x = sine(16000, 440.0, 0.04)
    a, b = Resampler(16000, 8000), Resampler(16000, 8000)
    for i in range(0, len(x), 320):
        piece = x[i : i + 320]
        assert a.process(memoryview(piece)) == b.process(piece.tobytes())  # format "h"
    frame = x[:640]  # 640 int16 items: len() of the view equals a 20 ms frame's byte count
    assert a.process(memoryview(frame)) == b.process(frame.tobytes())


@pytest.mark.parametrize(("law", "rate"), [("ulaw", 16000), ("alaw", 16000), ("alaw", 48000)])
def test_g711_transcoders_any_chunking_and_reset(law: str, rate: int) -> None:
    """The decoder's delay line holds codes (A-law has no code for silence, so the stream's
    start is zeroed separately): any chunking matches 20 ms frames, and after ``reset`` the
    output equals a fresh transcoder's."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(8000 * 2) * 5000).astype(np.int16)
    codes = g711.encode_array(law, x).tobytes()
    framed = G711Decoder(law, rate)
    ref = b"".join(framed.decode(codes[i : i + 160]) for i in range(0, len(codes), 160))
    dec = G711Decoder(law, rate)
    out, pos = [], 0
    for n in _chunks(rng, len(codes), 160):
        out.append(dec.decode(codes[pos : pos + n]))
        pos += n
    got = np.frombuffer(b"".join(out), np.int16).astype(int)
    want = np.frombuffer(ref, np.int16).astype(int)
    assert len(got) == len(want) and np.abs(got - want).max() <= 1
    pcm = b"".join(out)
    step = 2 * frame_samples(rate)
    framed_enc = G711Encoder(law, rate)
    ref_codes = b"".join(framed_enc.encode(pcm[i : i + step]) for i in range(0, len(pcm), step))
    enc = G711Encoder(law, rate)
    parts, pos = [], 0
    for n in _chunks(rng, len(pcm) // 2, step // 2):
        parts.append(enc.encode(pcm[pos : pos + 2 * n]))
        pos += 2 * n
    assert _adjacent_codes(b"".join(parts), ref_codes, law)
    for t in (dec, enc):
        t.reset()
    fresh_dec, fresh_enc = G711Decoder(law, rate), G711Encoder(law, rate)
    for i in range(0, 1600, 160):
        assert dec.decode(codes[i : i + 160]) == fresh_dec.decode(codes[i : i + 160])
        p = pcm[i * rate // 4000 : (i + 160) * rate // 4000]
        assert enc.encode(p) == fresh_enc.encode(p)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 1500), min_size=1, max_size=40), st.sampled_from([8000, 16000, 22050])
)
def test_rechunker_emits_exact_frames(sizes: list[int], rate: int) -> None:
    rc = Rechunker(rate, 20)
    data = bytes(i % 251 for i in range(sum(sizes) * 2))
    frames, pos = [], 0
    for n in sizes:
        frames += rc.push(data[pos : pos + 2 * n])
        pos += 2 * n
    fb = frame_samples(rate) * 2
    assert all(len(f) == fb for f in frames)
    assert b"".join(frames) == data[: len(frames) * fb]
    assert rc.pending_bytes == len(data) - len(frames) * fb
    tail = rc.flush()
    assert len(tail) in (0, fb)
    assert tail[: len(data) - len(frames) * fb] == data[len(frames) * fb :]


def test_bad_parameters() -> None:
    with pytest.raises(AudioError):
        Resampler(8000, 100)
    with pytest.raises(AudioError):
        Resampler(8000, 16000, quality="ultra")
    with pytest.raises(AudioError):
        Resampler(8000, 16000).process(b"\x00")
    with pytest.raises(AudioError):
        frame_samples(11025, 20)
    assert Resampler(16000, 16000).process(b"\x01\x02") == b"\x01\x02"
