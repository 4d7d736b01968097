"""The echo bench's pure models: byte-count RTT matching, the playback clock, percentiles."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from harken.bench._measure import FrameMatcher, PlayClock, match_rtts, summarize

FRAME = 160


def _sent(n: int, period: float = 0.020) -> list[tuple[int, float]]:
    return [(FRAME, 1.0 + k * period) for k in range(n)]


def _rechunk(
    sent: list[tuple[int, float]], sizes: list[int], delay: float, ratio: float = 1.0
) -> list[tuple[int, float]]:
    """A server that echoes in chunks of ``sizes`` (cycled) of ``ratio`` bytes per sent byte;
    a chunk leaves ``delay`` after the frame carrying its last byte arrived (the earliest it
    can)."""
    total_out = int(sum(n for n, _ in sent) * ratio)
    out: list[tuple[int, float]] = []
    cum = 0
    for size in itertools.cycle(sizes):
        if cum >= total_out:
            break
        size = min(size, total_out - cum)
        cum += size
        last_in = -(-cum // int(ratio)) - 1 if ratio >= 1 else cum - 1  # last sent byte needed
        out.append((size, sent[last_in // FRAME][1] + delay))
    return out


@pytest.mark.parametrize("sizes", [[160], [320], [80, 240, 100, 60], [1000, 7, 153]])
def test_rechunked_echo_gives_the_true_delay(sizes: list[int]) -> None:
    sent = _sent(200)
    rtts = match_rtts(sent, _rechunk(sent, sizes, 0.0042))
    assert rtts and all(r == pytest.approx(0.0042) for r in rtts)


def test_reencoded_echo_twice_the_bytes() -> None:
    """µ-law in, 16-bit PCM out: every received byte counts as half a sent byte."""
    sent = _sent(100)
    received = _rechunk(sent, [640, 320, 100], 0.011, ratio=2.0)
    rtts = match_rtts(sent, received, ratio=2.0)
    assert all(r == pytest.approx(0.011) for r in rtts)


def test_growing_delay_is_seen_per_chunk() -> None:
    sent = _sent(50)
    received = [(FRAME, t + 0.001 * k) for k, (_, t) in enumerate(sent)]
    rtts = match_rtts(sent, received)
    assert rtts == pytest.approx([0.001 * k for k in range(50)])


def test_more_bytes_than_sent_are_unmatched() -> None:
    sent = _sent(2)
    rtts = match_rtts(sent, [(FRAME, 2.0), (FRAME, 2.1), (10, 2.2)])
    assert rtts[:2] == pytest.approx([2.0 - 1.0, 2.1 - 1.02])
    assert rtts[2] is None


@pytest.mark.parametrize("sizes", [[160], [80, 240, 100, 60], [1000, 7, 153]])
def test_frame_matcher_agrees_with_the_reference(sizes: list[int]) -> None:
    sent = _sent(120)
    received = _rechunk(sent, sizes, 0.003)
    m = FrameMatcher(FRAME)
    for _, t in sent:
        m.sent(t)
    got = []
    for n, t in received:
        frame = m.received(n)
        got.append(t - m.times[frame] if frame >= 0 else None)
    assert got == pytest.approx(match_rtts(sent, received))
    assert m.received(1) == -1  # past everything sent


def test_frame_matcher_ratio() -> None:
    m = FrameMatcher(FRAME, ratio=2.0)
    for k in range(4):
        m.sent(float(k))
    assert m.received(320) == 0
    assert m.received(1) == 1
    assert m.received(639) == 2


# --- playback clock ------------------------------------------------------------------------


def test_mark_with_nothing_queued_is_echoed_at_once() -> None:
    c = PlayClock()
    assert c.mark("a", 5.0) == ["a"]


def test_mark_waits_for_the_audio_before_it() -> None:
    c = PlayClock()
    c.media(160, 1.0)  # plays 1.000-1.020
    c.media(160, 1.005)  # queued: 1.020-1.040
    assert c.mark("m1", 1.006) == []
    assert c.due(1.030) == []
    assert c.due(1.0395) == ["m1"]  # 1 ms tolerance
    assert c.due(2.0) == []


def test_audio_after_an_idle_gap_plays_from_its_arrival() -> None:
    c = PlayClock()
    c.media(160, 1.0)
    c.media(160, 3.0)
    assert c.play_end == pytest.approx(3.02)


def test_marks_come_back_in_order_and_clear_flushes_them() -> None:
    c = PlayClock()
    c.media(800, 0.0)  # 100 ms
    assert c.mark("a", 0.0) == []
    c.media(800, 0.0)
    assert c.mark("b", 0.0) == []
    assert c.due(0.1) == ["a"]
    c.media(800, 0.1)
    assert c.mark("c", 0.1) == []
    assert c.clear(0.15) == ["b", "c"]
    assert c.play_end == pytest.approx(0.15)
    assert c.mark("d", 0.16) == ["d"]  # nothing queued any more


def test_a_later_mark_releases_due_ones_first() -> None:
    c = PlayClock()
    c.media(160, 0.0)
    c.mark("a", 0.0)
    assert c.mark("b", 0.5) == ["a", "b"]


# --- percentiles ---------------------------------------------------------------------------


def test_summarize() -> None:
    samples = np.arange(1, 1001) / 1000.0  # 1..1000 ms
    s = summarize(samples, "rtt")
    assert s["rtt_p50_ms"] == pytest.approx(500.5)
    assert s["rtt_p99_ms"] == pytest.approx(990.01)
    assert s["rtt_p999_ms"] == pytest.approx(999.001)
    assert s["rtt_max_ms"] == 1000.0
    assert s["rtt_mean_ms"] == pytest.approx(500.5)
    empty = summarize([], "reply")
    assert set(empty) == {
        "reply_p50_ms",
        "reply_p90_ms",
        "reply_p99_ms",
        "reply_p999_ms",
        "reply_max_ms",
        "reply_mean_ms",
    }
    assert all(v is None for v in empty.values())
