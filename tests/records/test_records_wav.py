"""StereoWavWriter: caller left, agent right, on one timeline, valid at every sync."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from harken.errors import AudioError
from harken.records.wav import StereoWavWriter

SR = 8000
CHUNK = 160  # 20 ms


def _chunk(value: int, n: int = CHUNK) -> bytes:
    return np.full(n, value, dtype="<i2").tobytes()


def _read(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as w:
        params = w.getparams()
        data = np.frombuffer(w.readframes(params.nframes), dtype="<i2").reshape(-1, 2)
    return params, data


def test_channels_are_aligned_on_media_time(tmp_path: Path) -> None:
    path = tmp_path / "call.wav"
    with StereoWavWriter(path, SR) as w:
        agent_pending: list[tuple[bytes, float]] = []
        for i in range(50):  # caller: 1 s of 20 ms chunks, values 1..50
            w.write_caller(_chunk(i + 1), i * 0.02)
            if 15 <= i < 25:  # agent audio for 0.30-0.50 s ...
                agent_pending.append((_chunk(-(i + 1)), i * 0.02))
            if i == 30:  # ... arrives 0.2 s late, all at once
                for pcm, t in agent_pending:
                    w.write_agent(pcm, t)
    params, data = _read(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, SR)
    assert params.nframes == SR
    expected_left = np.repeat(np.arange(1, 51, dtype=np.int16), CHUNK)
    assert np.array_equal(data[:, 0], expected_left)
    expected_right = np.zeros(SR, dtype=np.int16)
    expected_right[2400:4000] = -expected_left[2400:4000]
    assert np.array_equal(data[:, 1], expected_right)
    assert w.dropped_samples == 0


def test_header_sizes_after_close(tmp_path: Path) -> None:
    path = tmp_path / "h.wav"
    w = StereoWavWriter(path, 16000)
    w.write_agent(_chunk(7, 320), 0.0)
    w.close()
    w.close()  # idempotent
    raw = path.read_bytes()
    riff, data_size = struct.unpack_from("<I", raw, 4)[0], struct.unpack_from("<I", raw, 40)[0]
    assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE" and raw[36:40] == b"data"
    assert riff == len(raw) - 8 and data_size == len(raw) - 44 == 320 * 4
    params, data = _read(path)
    assert params.framerate == 16000 and np.all(data[:, 0] == 0) and np.all(data[:, 1] == 7)


def test_gaps_are_silence_and_jitter_snaps(tmp_path: Path) -> None:
    path = tmp_path / "g.wav"
    with StereoWavWriter(path, SR) as w:
        w.write_caller(_chunk(5), 0.0)
        w.write_caller(_chunk(6), 0.0201)  # 0.8 samples late: contiguous
        w.write_caller(_chunk(7), 0.0399)  # early by less than snap: contiguous
        w.write_caller(_chunk(8), 1.0)  # a real gap
    _, data = _read(path)
    left = data[:, 0]
    assert len(left) == SR + CHUNK
    assert np.array_equal(left[: 3 * CHUNK], np.repeat(np.int16([5, 6, 7]), CHUNK))
    assert np.all(left[3 * CHUNK : SR] == 0)
    assert np.all(left[SR:] == 8)
    assert np.all(data[:, 1] == 0)


def test_memory_is_bounded_by_the_skew(tmp_path: Path) -> None:
    path = tmp_path / "s.wav"
    w = StereoWavWriter(path, SR, max_skew_s=0.5)
    for i in range(150):  # 3 s of caller audio, no agent at all
        w.write_caller(_chunk(1), i * 0.02)
        assert len(w._left.buf) <= 2 * (SR // 2 + CHUNK)
        assert len(w._right.buf) <= 2 * (SR // 2 + CHUNK)
    assert w.duration_s >= 2.5  # written while the call runs, not at close
    w.write_agent(_chunk(9), 0.1)  # far too late: dropped, counted
    assert w.dropped_samples == CHUNK
    w.write_agent(_chunk(9), 2.9)  # within the skew: kept
    w.write_caller(_chunk(1), 600.0)  # a 10-minute gap is filled a second at a time
    assert len(w._left.buf) <= 2 * (SR // 2 + 2 * SR)
    w.close()
    params, data = _read(path)
    assert params.nframes == 600 * SR + CHUNK
    assert np.all(data[: 3 * SR, 0] == 1)
    assert np.all(data[int(2.9 * SR) : int(2.9 * SR) + CHUNK, 1] == 9)
    assert np.count_nonzero(data[:, 1]) == CHUNK


def test_file_is_readable_while_being_written(tmp_path: Path) -> None:
    path = tmp_path / "live.wav"
    w = StereoWavWriter(path, SR, sync_every_s=1e-9)  # sync at every write
    for i in range(10):
        w.write_caller(_chunk(3), i * 0.02)
        w.write_agent(_chunk(4), i * 0.02)
    params, data = _read(path)
    assert params.nframes == 10 * CHUNK
    assert np.all(data == [3, 4])
    w.close()


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AudioError):
        StereoWavWriter(tmp_path / "x.wav", 0)
    w = StereoWavWriter(tmp_path / "y.wav", SR)
    with pytest.raises(AudioError, match="even"):
        w.write_caller(b"\x00\x01\x02", 0.0)
    with pytest.raises(AudioError, match="media time"):
        w.write_agent(_chunk(1), -1.0)
    with pytest.raises(AudioError, match="media time"):
        w.write_agent(_chunk(1), float("nan"))
    w.close()
    with pytest.raises(AudioError, match="closed"):
        w.write_caller(_chunk(1), 0.0)
