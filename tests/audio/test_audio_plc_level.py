"""Loss concealment, time stretching, levels."""

from __future__ import annotations

import numpy as np
import pytest

from harken.audio.level import (
    SILENCE_DBFS,
    LevelMeter,
    dbfs_to_amplitude,
    is_silent,
    peak_dbfs,
    rms_dbfs,
    silence,
)
from harken.audio.plc import Concealer, compress, expand, find_pitch
from harken.bench.audio import tone_source
from harken.errors import AudioError

SR = 8000


def voiced(seconds: float) -> np.ndarray:
    return tone_source(seconds, SR)  # 140 Hz fundamental


def test_find_pitch() -> None:
    period, score = find_pitch(voiced(0.1).astype(float), SR)
    assert abs(period - SR / 140) <= 1
    assert score > 0.95
    noise = np.random.default_rng(1).standard_normal(800)
    assert find_pitch(noise, SR)[1] < 0.5


def test_concealment_continues_the_waveform_then_fades_to_comfort_noise() -> None:
    x = voiced(1.0)
    c = Concealer(SR)
    for i in range(0, 4000, 160):
        c.good(x[i : i + 160])
    gap = np.concatenate([c.conceal(160) for _ in range(10)]).astype(float)  # 200 ms
    truth = x[4000:4080].astype(float)
    # the first 10 ms repeat the pitch period: close to what was lost
    assert np.abs(gap[:80] - truth).max() < 0.2 * np.abs(truth).max()
    # no click at the start: the first synthetic sample continues the last real one
    assert abs(gap[0] - x[3999]) < 2 * np.abs(np.diff(x[3900:4000].astype(float))).max()
    levels = [rms_dbfs(gap[i : i + 80].astype(np.int16)) for i in range(0, 1600, 80)]
    assert levels[0] > -20
    assert -60 < levels[-1] < -45  # faded away into comfort noise (capped at -50 dBFS)
    assert c.concealed_samples == 1600 and c.events == 1


def test_comfort_noise_follows_the_background_level() -> None:
    rng = np.random.default_rng(3)
    bg = (rng.standard_normal(SR) * dbfs_to_amplitude(-55)).astype(np.int16)
    c = Concealer(SR)
    for i in range(0, SR, 160):
        c.good(bg[i : i + 160])
    c.conceal(800)  # let the fade run out
    tail = c.conceal(1600)
    assert abs(rms_dbfs(tail) - rms_dbfs(bg)) < 3.0


def test_merge_cross_fades_back_into_real_audio() -> None:
    x = voiced(1.0)
    c = Concealer(SR)
    for i in range(0, 1600, 160):
        c.good(x[i : i + 160])
    c.conceal(480)
    assert c.concealing
    back = c.good(x[2080:2240]).astype(float)
    assert not c.concealing
    assert np.array_equal(back[80:], x[2160:2240])  # after the 10 ms merge: verbatim
    assert not np.array_equal(back[:80], x[2080:2160])


def test_compress_and_expand_change_length_by_a_period_smoothly() -> None:
    x = voiced(0.04).astype(float)
    shorter, longer = compress(x, SR), expand(x, SR)
    p = round(SR / 140)
    assert abs((len(x) - len(shorter)) - p) <= 1
    assert abs((len(longer) - len(x)) - p) <= 1
    for y in (shorter, longer):
        assert np.abs(np.diff(y)).max() <= 1.3 * np.abs(np.diff(x)).max()
    noise = np.random.default_rng(0).standard_normal(320) * 1000
    assert len(compress(noise, SR)) == 320  # aperiodic: left alone
    assert len(compress(noise, SR, force=True)) == 240


def test_levels() -> None:
    assert rms_dbfs(b"") == SILENCE_DBFS
    assert rms_dbfs(bytes(320)) == SILENCE_DBFS
    full = np.full(160, -32768, np.int16)
    assert rms_dbfs(full) == pytest.approx(0.0)
    assert peak_dbfs(full) == pytest.approx(0.0)
    t = np.arange(8000) / 8000
    sine = np.round(32767 * np.sin(2 * np.pi * 1000 * t)).astype(np.int16)
    assert rms_dbfs(sine.tobytes()) == pytest.approx(-3.01, abs=0.01)
    assert is_silent(bytes(320)) and not is_silent(sine)
    assert silence(16000, 20) == bytes(640)
    assert silence(16000, 20) is silence(16000, 20)
    with pytest.raises(AudioError):
        rms_dbfs(b"\x00")


def test_level_meter_attack_release_and_floor() -> None:
    m = LevelMeter()
    quiet = (np.random.default_rng(0).standard_normal(160) * 30).astype(np.int16)
    loud = np.full(160, 10000, np.int16)
    for _ in range(20):
        m.update(quiet)
    floor = m.noise_floor_dbfs
    up = [m.update(loud) for _ in range(5)]
    assert up[-1] > -12  # fast attack
    down = [m.update(quiet) for _ in range(5)]
    assert down[-1] > -40  # slow release
    assert m.noise_floor_dbfs < floor + 1
