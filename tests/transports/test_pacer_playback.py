"""The pacer's bounded lead and the playback tracker's strategies, with a simulated clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.errors import AudioError, ConfigError
from harken.transports.pacer import AUDIO, MARK, Pacer
from harken.transports.playback import PlaybackTracker

CHUNK = 160  # 20 ms of 8 kHz mu-law
BPS = 8000
SILENCE = b"\xff" * CHUNK


def pacer(lead: float = 0.08) -> Pacer:
    return Pacer(CHUNK, BPS, SILENCE, lead)


def test_release_never_queues_more_than_the_lead_at_the_far_end() -> None:
    p = pacer(0.08)
    p.push(bytes(CHUNK * 50))  # one second at once (a TTS burst)
    sent = p.release(0.0)
    assert len(sent) == 4  # 80 ms
    assert p.far_queue_s(0.0) == pytest.approx(0.08)
    assert p.release(0.0) == []
    # 30 ms later, one chunk has room again
    assert len(p.release(0.03)) == 1
    assert p.far_queue_s(0.03) <= 0.08 + 1e-9
    # across the whole utterance, the far-end queue stays bounded and audio leaves in real time
    t = 0.03
    total = 5
    while not p.idle:
        t += 0.01
        total += len(p.release(t))
        assert p.far_queue_s(t) <= 0.08 + 1e-9
    assert total == 50
    assert t == pytest.approx(1.0 - 0.08 + 0.01, abs=0.011)


def test_a_stall_is_absorbed_not_carried() -> None:
    p = pacer(0.06)
    p.push(bytes(CHUNK * 100))
    p.release(0.0)
    # the loop stalls for 300 ms: the far end ran dry; the pacer refills up to the lead at once
    out = p.release(0.3)
    assert len(out) == 3
    assert p.far_queue_s(0.3) == pytest.approx(0.06)
    # and from then on it is again real time, with no extra latency accumulated
    assert p.next_due(0.3) == pytest.approx(0.32)


def test_marks_come_out_after_the_audio_before_them() -> None:
    p = pacer(0.04)
    p.push(bytes(CHUNK * 3))
    offset = p.mark("m1")
    assert offset == pytest.approx(0.06)
    p.push(bytes(CHUNK))
    first = p.release(0.0)
    assert [r.kind for r in first] == [AUDIO, AUDIO]
    rest = p.release(0.02)
    assert [r.kind for r in rest] == [AUDIO, MARK]
    assert rest[1].name == "m1" and rest[1].offset_s == pytest.approx(0.06)


def test_flush_pads_a_partial_chunk_with_silence() -> None:
    p = pacer()
    p.push(b"\x01" * 100)
    assert p.release(0.0) == []  # a partial chunk waits for more audio
    p.flush()
    (r,) = p.release(0.0)
    assert r.data == b"\x01" * 100 + b"\xff" * 60


def test_clear_drops_everything_unsent_and_resets_the_far_end() -> None:
    p = pacer(0.08)
    p.push(bytes(CHUNK * 20))
    p.mark("end")
    p.release(0.0)
    assert p.clear(0.01) == pytest.approx(16 * 0.02)
    assert p.idle and p.queued_s == 0
    assert p.far_queue_s(0.01) == 0
    assert p.release(0.02) == []


def test_pacer_rejects_bad_parameters() -> None:
    with pytest.raises(AudioError):
        Pacer(0, BPS, b"")
    with pytest.raises(AudioError):
        Pacer(CHUNK, BPS, b"\xff")


# --- playback tracker --------------------------------------------------------------------------


def test_mark_strategy_completes_on_the_final_mark_only() -> None:
    t = PlaybackTracker("mark", margin_s=1.0)
    t.begin(1, 0.0)
    t.note_mark(1, "h1.1", 0.1)
    deadline = t.finish(1, 0.5, remaining_s=0.5, now=10.0, final_mark="h1.end")
    assert deadline == pytest.approx(11.5)
    assert t.on_mark("h1.1", cleared=False) is None
    done = t.on_mark("h1.end", cleared=False)
    assert done is not None and done.strategy == "mark" and not done.interrupted
    assert done.played_s == pytest.approx(0.5) and done.duration_s == pytest.approx(0.5)
    assert not t.active


def test_a_mark_echoed_because_of_clear_is_flushed_not_played() -> None:
    t = PlaybackTracker("mark")
    t.begin(1, 1.0)
    t.note_mark(1, "h1.1", 1.1)
    t.note_mark(1, "h1.2", 1.2)
    t.finish(1, 1.5, 0.5, 0.0, "h1.end")
    t.on_mark("h1.1", cleared=False)  # 100 ms heard
    assert t.on_mark("h1.end", cleared=True) is None  # flushed: does not complete
    (c,) = t.interrupt(played_offset_s=1.4)  # the clock would say 400 ms; marks say 100 ms
    assert c.interrupted and c.strategy == "interrupted"
    assert c.played_s == pytest.approx(0.1)


def test_deadman_resolves_when_the_signal_never_comes() -> None:
    t = PlaybackTracker("mark", margin_s=0.5)
    t.begin(7, 0.0)
    t.finish(7, 1.0, remaining_s=1.0, now=0.0, final_mark="h7.end")
    assert t.on_clock(1.0, now=1.4) == []
    (c,) = t.on_clock(1.0, now=1.5)
    assert c.strategy == "deadman" and c.utterance_id == 7
    assert t.deadman_fires == 1 and t.completions == {"deadman": 1}


@pytest.mark.parametrize("strategy", ["drained", "silence"])
def test_clock_strategies_complete_when_the_end_has_played(strategy: str) -> None:
    t = PlaybackTracker(strategy)
    t.begin(1, 0.0)
    t.finish(1, 0.4, remaining_s=0.4, now=0.0)
    assert t.on_clock(0.39, now=0.39) == []
    (c,) = t.on_clock(0.4, now=0.4)
    assert c.strategy == strategy and c.played_s == pytest.approx(0.4)


def test_clock_strategy_barge_in_uses_the_clock_estimate() -> None:
    t = PlaybackTracker("drained")
    t.begin(3, 2.0)
    (c,) = t.interrupt(played_offset_s=2.25)
    assert c.played_s == pytest.approx(0.25) and c.interrupted


def test_unknown_strategy_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        PlaybackTracker("telepathy")


async def test_pacer_clock_keeps_one_timer_however_often_clients_re_register() -> None:
    import asyncio

    from harken.transports.output import PacerClock

    clock = PacerClock(interval=0.01)

    class Client:
        def __init__(self) -> None:
            self.calls = 0

        def service(self, now: float) -> bool:
            self.calls += 1
            clock.want(self)  # as a pacer does when it sends from inside a tick
            return self.calls < 10

    clients = [Client() for _ in range(3)]
    for c in clients:
        clock.want(c)
    await asyncio.sleep(0.3)
    assert 10 <= clock.ticks <= 12  # one tick per interval while busy, then it stops
    assert all(c.calls == 10 for c in clients)


def test_trim_drops_the_oldest_live_audio_and_keeps_offsets_consistent() -> None:
    p = pacer(0.08)
    p.push(bytes(range(160)) * 3)  # three distinct chunks are stale...
    p.push(b"\x01" * CHUNK * 2)  # ...two are the newest
    p.mark("after")
    assert p.trim(0.04) == pytest.approx(0.06)
    assert p.dropped_bytes == 3 * CHUNK
    out = p.release(0.0)
    audio = [r.data for r in out if r.kind == AUDIO]
    assert audio == [b"\x01" * CHUNK] * 2  # only the newest are played
    assert out[-1].kind == MARK and out[-1].offset_s == pytest.approx(0.1)
    assert p.sent_bytes == 5 * CHUNK


def test_awaiting_end_counts_finished_utterances_until_they_resolve() -> None:
    t = PlaybackTracker("mark", margin_s=1.0)
    t.begin(1, 0.0)
    assert not t.awaiting_end  # open, still receiving audio
    t.finish(1, 1.0, 1.0, 0.0, "h1.end")
    t.finish(1, 1.0, 1.0, 0.0, "h1.end")  # finishing twice counts once
    t.begin(2, 1.0)
    t.finish(2, 2.0, 2.0, 0.0, "h2.end")
    assert t.finished == 2 and t.awaiting_end
    assert t.on_mark("h1.end", cleared=False) is not None
    assert t.finished == 1
    t.begin(2, 1.0)  # an id reused before it resolved replaces the finished one
    assert t.finished == 0 and not t.awaiting_end
    t.finish(2, 2.0, 0.0, 0.0, "h2.end")
    assert [c.strategy for c in t.on_clock(0.0, 5.0)] == ["deadman"]
    assert t.finished == 0
    t.begin(3, 2.0)
    t.finish(3, 3.0, 0.0, 0.0, "h3.end")
    t.interrupt(2.5)
    assert t.finished == 0 and not t.active


def _state(p: Pacer) -> tuple[object, ...]:
    return (p.pushed_bytes, p.sent_bytes, p.dropped_bytes, round(p.far_end, 9), p.queued_s)


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["chunk", "half", "mark", "pause", "resume", "idle"]),
            st.floats(0.0, 0.09),  # time since the previous step
            st.booleans(),  # live audio (trimmed)
        ),
        max_size=60,
    )
)
def test_pass_through_is_push_trim_release_when_it_accepts(
    steps: list[tuple[str, float, bool]],
) -> None:
    """The in-step fast path changes nothing when it declines, and when it accepts leaves the
    pacer exactly as push + trim_live + release would, having released exactly that chunk."""
    fast, ref = (Pacer(160, 8000, b"\xff" * 160), Pacer(160, 8000, b"\xff" * 160))
    now = 100.0
    for i, (op, dt, live) in enumerate(steps):
        now += dt
        max_s = 0.06 if live else None
        if op in ("chunk", "half"):
            data = bytes([i % 256]) * (160 if op == "chunk" else 80)
            before = _state(fast)
            if fast.pass_through(data, now, max_s):
                sent_fast: list[tuple[int, bytes | str]] = [(AUDIO, data)]
            else:
                assert _state(fast) == before
                fast.push(data)
                if max_s is not None:
                    fast.trim_live(now, max_s)
                sent_fast = [(r.kind, r.data or r.name) for r in fast.release(now)]
            ref.push(data)
            if max_s is not None:
                ref.trim_live(now, max_s)
            assert sent_fast == [(r.kind, r.data or r.name) for r in ref.release(now)]
        elif op == "mark":
            fast.mark(f"m{i}")
            ref.mark(f"m{i}")
        elif op in ("pause", "resume"):
            fast.paused = ref.paused = op == "pause"
        else:
            assert [tuple(r) for r in fast.release(now)] == [tuple(r) for r in ref.release(now)]
        assert _state(fast) == _state(ref)
