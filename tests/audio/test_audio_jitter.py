"""Jitter buffer: wraparound arithmetic, reordering, duplicates, late packets, the issue's
scenario asserted on the statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harken.audio.jitter import JitterBuffer, Unwrapper, seq_diff, seq_newer, ts_diff
from harken.bench.audio import jitter_scenario, tone_source
from harken.errors import AudioError

FRAME = 160  # 20 ms at 8 kHz


# -- wraparound arithmetic ------------------------------------------------------------------


@given(st.integers(0, 0xFFFF), st.integers(-32768, 32767))
def test_seq_diff_inverts_addition(a: int, d: int) -> None:
    b = (a + d) & 0xFFFF
    assert seq_diff(b, a) == d
    assert seq_newer(b, a) == (d > 0)


@given(st.integers(0, 0xFFFFFFFF), st.integers(-(2**31), 2**31 - 1))
def test_ts_diff_inverts_addition(a: int, d: int) -> None:
    assert ts_diff((a + d) & 0xFFFFFFFF, a) == d


@given(
    st.integers(0, 0xFFFF),
    st.lists(st.integers(-300, 3000), min_size=1, max_size=200),
)
def test_unwrapper_follows_any_walk_with_small_steps(start: int, steps: list[int]) -> None:
    u = Unwrapper(16)
    true = start
    assert u.unwrap(start) == start
    for s in steps:
        true += s
        assert u.unwrap(true & 0xFFFF) == true


def test_unwrapper_32_bit_wrap() -> None:
    u = Unwrapper(32)
    assert u.unwrap(0xFFFFFF00) == 0xFFFFFF00
    assert u.unwrap(0x00000010) == 0x1_00000010
    assert u.unwrap(0xFFFFFFF0) == 0xFFFFFFF0  # a late packet from before the wrap
    with pytest.raises(AudioError):
        Unwrapper(1)


# -- mechanics on a simulated clock -----------------------------------------------------------


def _frames(n: int) -> list[bytes]:
    src = tone_source(n * 0.02 + 1)
    return [src[i * FRAME : (i + 1) * FRAME].tobytes() for i in range(n)]


def _buffer() -> JitterBuffer:
    # a fixed 60 ms delay: packets arrive on time, the clock ticks 60 ms behind them
    return JitterBuffer(8000, 20, initial_delay_ms=60, min_delay_ms=60, max_delay_ms=60)


def _put(jb: JitterBuffer, k: int, frames: list[bytes], seq0: int, ts0: int, at: float) -> None:
    jb.put((seq0 + k) & 0xFFFF, (ts0 + k * FRAME) & 0xFFFFFFFF, frames[k], at)


def test_reordered_and_duplicated_packets_play_in_order_across_wrap() -> None:
    frames = _frames(40)
    jb = _buffer()
    order = list(range(40))
    order[5], order[6] = order[6], order[5]
    order[20], order[23] = order[23], order[20]
    seq0, ts0 = 65530, 2**32 - 10 * FRAME  # both wrap inside the run
    for k in [*order, 7, 7, 30]:
        _put(jb, k, frames, seq0, ts0, 0.02 * k)
    out = [jb.get(0.06 + 0.02 * i) for i in range(40)]
    assert out == frames  # no loss: every frame comes out verbatim, in order
    st = jb.stats
    assert st.duplicates == 3
    assert st.reordered == 4  # 5 after 6; 21, 22 and 20 after 23
    assert st.packets_lost == 0 and st.packets_expected == 40
    assert st.concealed_ms == 0
    assert st.current_delay_ms == pytest.approx(60.0)


def test_missing_packet_is_concealed_and_late_arrival_dropped() -> None:
    frames = _frames(30)
    jb = _buffer()
    for k in range(30):
        if k != 10:
            _put(jb, k, frames, 100, 5000, 0.02 * k)
    out = [jb.get(0.06 + 0.02 * i) for i in range(12)]
    assert out[:10] == frames[:10]
    concealed = np.frombuffer(out[10], np.int16).astype(float)
    assert np.sqrt(np.mean(concealed**2)) > 1000  # pitch repetition, not silence
    _put(jb, 10, frames, 100, 5000, 0.3)  # arrives after its turn
    out += [jb.get(0.06 + 0.02 * i) for i in range(12, 30)]
    assert all(len(f) == 2 * FRAME for f in out)
    st = jb.stats
    assert st.late_drops == 1
    assert st.packets_lost == 0  # it did arrive; it was late
    assert st.concealed_ms == pytest.approx(20.0)
    # the frame after the gap is cross-faded in, then audio is verbatim again
    assert out[11] != frames[11]
    assert out[12:] == frames[12:]


def test_get_never_stalls_without_packets() -> None:
    jb = JitterBuffer(16000, 20)
    assert all(len(jb.get(t * 0.02)) == 640 for t in range(50))
    jb.put(1, 0, bytes(640), 1.0)
    outs = [jb.get(1.0 + 0.02 * t) for t in range(200)]  # one packet, then nothing: conceal
    assert all(len(o) == 640 for o in outs)


def test_timestamp_jump_resyncs() -> None:
    frames = _frames(60)
    jb = JitterBuffer(8000, 20, initial_delay_ms=20)
    t = 0.0
    for k in range(60):
        ts = k * FRAME if k < 30 else 9_000_000 + k * FRAME  # the sender restarted its clock
        jb.put(k, ts, frames[k], t)
        jb.get(t)
        t += 0.02
    assert jb.stats.resyncs == 1


def test_bad_parameters() -> None:
    with pytest.raises(AudioError):
        JitterBuffer(8000, 20, min_delay_ms=100, max_delay_ms=50)
    with pytest.raises(AudioError):
        JitterBuffer(11025, 20)
    with pytest.raises(AudioError):
        JitterBuffer(8000, 20).put(1, 0, b"\x00", 0.0)


# -- the scenario from the issue ----------------------------------------------------------------


@pytest.mark.parametrize("correlated", [True, False], ids=["correlated-jitter", "iid-jitter"])
def test_scenario_5pct_loss_40ms_jitter_2pct_reorder(correlated: bool) -> None:
    r = jitter_scenario(
        90.0, loss=0.05, jitter_ms=40.0, reorder=0.02, correlated=correlated, seed=3
    )
    st = r["stats"]
    # never stalls: one full frame per tick, audio from the first packets on
    assert st.frames_out == r["frames_out"] >= 90 * 50
    assert 0 <= r["first_audible_frame"] <= 10
    # the statistics see the network as it was
    assert abs(st.loss_percent - 100 * r["packets_lost_in_network"] / r["packets_sent"]) < 0.2
    assert 3.5 < st.loss_percent < 6.5
    assert st.reordered > 0.01 * r["packets_sent"]
    assert st.duplicates == 0
    # the added delay settles within 20 ms of the jitter's 95th percentile
    assert abs(r["current_delay_ms_median"] - r["jitter_p95_ms"]) <= 20.0
    assert abs(r["target_delay_ms_median"] - r["jitter_p95_ms"]) <= 5.0
    # most packets make it: late ones are those beyond the 95th percentile (and some tail)
    assert st.late_percent < 13.0
    # concealment covers every gap: every lost or late packet's 20 ms was synthesised
    assert st.concealed_ms >= 20.0 * (st.packets_lost + st.late_drops) - 1e-6
    # ... and nothing else was, bar the tail: the simulation runs 0.5 s past the last packet
    assert st.concealed_ms <= 20.0 * (st.packets_lost + st.late_drops + st.expands) + 500.0


def test_rtp_clock_rate_differs_from_pcm_rate() -> None:
    # Opus-style: 48 kHz RTP clock, decoded to 16 kHz PCM
    src = tone_source(2.0, 16000)
    frames = [src[i * 320 : (i + 1) * 320].tobytes() for i in range(60)]
    jb = JitterBuffer(16000, 20, clock_rate=48000, min_delay_ms=40, max_delay_ms=40)
    for k in range(60):
        jb.put(k, 1000 + k * 960, frames[k], 0.02 * k)
    out = [jb.get(0.04 + 0.02 * i) for i in range(60)]
    assert out == frames


def test_sender_clock_drift_is_followed() -> None:
    """The sender's clock runs 0.5% fast (more packets than ticks): the delay stays bounded."""
    src = tone_source(62.0)
    jb = JitterBuffer(8000, 20)
    delays, k = [], 0
    for j in range(2900):
        now = 0.01 + 0.02 * j
        while k * 0.02 / 1.005 <= now:
            jb.put(k, k * FRAME, src[k * FRAME : (k + 1) * FRAME].tobytes(), k * 0.02 / 1.005)
            k += 1
        assert len(jb.get(now)) == 2 * FRAME
        delays.append(jb.stats.current_delay_ms)
    # the buffer delay stays within 10 ms above target; what is heard adds 0-1 frame of FIFO
    assert max(delays[-1000:]) < jb.stats.target_delay_ms + 10 + 20 + 1
    assert jb.stats.accelerates > 0
    assert jb.stats.late_drops == 0
