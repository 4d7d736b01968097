"""The seam measurements on synthetic timelines (no audio, no server)."""

from __future__ import annotations

from harken.sim.listen import AgentAudio, Span
from harken.sim.measure import CallerAct, analyse, bursts


def audio(
    voiced: list[tuple[float, float]],
    playing: list[tuple[float, float]] | None = None,
    clears: list[float] | None = None,
    arrivals: list[float] | None = None,
) -> AgentAudio:
    spans = [Span(a, b) for a, b in voiced]
    return AgentAudio(
        voiced=spans,
        playing=[Span(a, b) for a, b in (playing if playing is not None else voiced)],
        arrivals=arrivals or [],
        clears=clears or [],
    )


def say(onset: float, end: float, pauses: tuple[Span, ...] = (), step: int = 1) -> CallerAct:
    return CallerAct("say", step, "hello", onset, end, pauses)


def test_v2v_is_caller_end_to_first_agent_speech_played() -> None:
    m = analyse([say(1.0, 2.0)], audio([(2.6, 4.0)]), call_end=10.0)
    (t,) = m.turns
    assert t.latency_ms == 600.0
    assert not (t.dead_air or t.no_reply or t.talked_over or t.false_cutoff)


def test_words_of_one_reply_are_one_burst() -> None:
    voiced = [Span(2.6, 3.0), Span(3.1, 3.5), Span(4.0, 5.0)]
    assert bursts(voiced) == [Span(2.6, 3.5), Span(4.0, 5.0)]
    m = analyse([say(1.0, 2.0)], audio([(2.6, 3.0), (3.1, 3.5)]), call_end=10.0)
    assert m.turns[0].latency_ms == 600.0


def test_a_reply_later_than_one_and_a_half_seconds_is_dead_air() -> None:
    (t,) = analyse([say(1.0, 2.0)], audio([(3.8, 5.0)]), call_end=10.0).turns
    assert t.latency_ms == 1800.0 and t.dead_air


def test_no_reply_is_dead_air_only_if_the_call_stayed_open_long_enough() -> None:
    (t,) = analyse([say(1.0, 2.0)], audio([(0.2, 0.8)]), call_end=10.0).turns
    assert t.no_reply and t.dead_air and t.latency_ms is None
    (t,) = analyse([say(1.0, 2.0)], audio([]), call_end=3.0).turns
    assert t.no_reply and not t.dead_air
    # the caller's next act starts 1 s later: the window is too short to call it dead air
    acts = [say(1.0, 2.0, step=1), CallerAct("dtmf", 2, "1", 3.0, 3.0)]
    turns = analyse(acts, audio([(3.5, 4.0)]), call_end=10.0).turns
    assert turns[0].no_reply and not turns[0].dead_air
    assert turns[1].latency_ms == 500.0


def test_agent_still_talking_when_the_caller_ends_is_talked_over() -> None:
    (t,) = analyse([say(1.0, 2.0)], audio([(1.5, 2.5)]), call_end=10.0).turns
    assert t.talked_over and t.latency_ms is None and not t.dead_air
    assert t.false_cutoff  # it started while the caller was mid-utterance


def test_agent_onset_inside_a_scripted_pause_is_a_false_cutoff() -> None:
    pause = (Span(1.5, 2.3),)
    (t,) = analyse([say(1.0, 3.0, pause)], audio([(2.0, 2.8), (3.4, 4.0)]), 10.0).turns
    assert t.false_cutoff and t.cutoff_in_pause
    # endpoint fired in the pause but the audio came out after the caller resumed
    (t,) = analyse([say(1.0, 3.0, pause)], audio([(2.6, 2.9), (3.6, 4.0)]), 10.0).turns
    assert t.false_cutoff and not t.cutoff_in_pause
    # the agent waited for the whole utterance
    (t,) = analyse([say(1.0, 3.0, pause)], audio([(3.4, 4.0)]), 10.0).turns
    assert not t.false_cutoff and t.latency_ms == 400.0


def test_barge_in_stop_latencies() -> None:
    arrivals = [round(0.02 * k, 2) for k in range(0, 161)]  # every 20 ms until 3.2 s
    a = audio([(0.0, 1.0), (1.1, 3.27), (4.5, 5.0)], [(0.0, 3.3), (4.5, 5.0)], [3.5], arrivals)
    act = CallerAct("barge_in", 2, "wait, stop", 3.0, 3.8)
    m = analyse([say(-2.0, -1.0, step=1), act], a, call_end=10.0)
    (b,) = m.barge_ins
    assert b.applicable and b.interrupted
    assert b.stop_played_ms == 270.0
    assert b.stop_arrival_ms == 200.0
    assert b.clear_ms == 500.0
    reply = [t for t in m.turns if t.kind == "barge_in"]
    assert reply[0].latency_ms == 700.0  # 3.8 -> 4.5


def test_agent_between_words_at_the_onset_stops_at_zero() -> None:
    a = audio([(0.0, 2.9)], [(0.0, 3.2)], [3.4], [3.0])
    (b,) = analyse([CallerAct("barge_in", 1, "stop", 3.0, 3.5)], a, 9.0).barge_ins
    assert b.stop_played_ms == 0.0 and b.stop_arrival_ms == 0.0


def test_the_cut_off_reply_going_on_before_it_stops_is_no_cut_in() -> None:
    """The caller barges in 30 ms before the agent's next word (after a 340 ms pause of the
    reply's own): that word is the reply being cut off, heard until the hold (110 ms), not the
    agent cutting in (the suite's `bargein-address` "cut-offs" of 2026-11-22)."""
    a = audio([(0.0, 2.7), (3.03, 3.11), (5.0, 6.0)], [(0.0, 3.11), (5.0, 6.0)], [3.5])
    m = analyse([CallerAct("barge_in", 1, "actually, is there parking?", 3.0, 4.6)], a, 9.0)
    (b,) = m.barge_ins
    assert b.held_ms == 110.0
    (t,) = m.turns
    assert not t.false_cutoff and t.latency_ms == 400.0


def test_barge_in_without_clear_is_missed_and_over_silence_not_applicable() -> None:
    (b,) = analyse([CallerAct("barge_in", 1, "stop", 3.0, 3.5)], audio([(0, 8)]), 9).barge_ins
    assert b.applicable and not b.interrupted and b.stop_played_ms is None
    (b,) = analyse([CallerAct("barge_in", 1, "stop", 3.0, 3.5)], audio([(0, 2)]), 9).barge_ins
    assert not b.applicable


def test_backchannel_that_did_not_interrupt() -> None:
    a = audio([(0.0, 3.2), (3.6, 8.0)], [(0.0, 8.0)])
    m = analyse([CallerAct("backchannel", 2, "uh-huh", 3.0, 3.3, reply=False)], a, 9.0)
    (c,) = m.backchannels
    assert c.applicable and not c.wrong and c.resumed
    assert c.gap_ms == 400.0
    assert m.turns == []  # a backchannel is not a turn


def test_backchannel_answered_with_a_clear_is_wrong() -> None:
    a = audio([(0.0, 3.2), (4.5, 6.0)], [(0.0, 3.5), (4.5, 6.0)], clears=[3.5])
    (c,) = analyse([CallerAct("backchannel", 2, "yeah", 3.0, 3.3, reply=False)], a, 9).backchannels
    assert c.wrong and not c.resumed
    # a clear long after the backchannel belongs to something else
    a = audio([(0.0, 8.0)], clears=[7.0])
    (c,) = analyse([CallerAct("backchannel", 2, "yeah", 3.0, 3.3, reply=False)], a, 9).backchannels
    assert not c.wrong


def test_say_without_reply_is_checked_for_cutoffs_only() -> None:
    act = CallerAct("say", 1, "hmm", 1.0, 2.0, reply=False)
    (t,) = analyse([act], audio([(5.0, 6.0)]), 10.0).turns
    assert t.latency_ms is None and not t.dead_air and not t.no_reply


def test_held_playback_that_resumes_before_the_clear() -> None:
    # the agent goes quiet 250 ms after the onset (held), resumes (the candidate looked like a
    # backchannel), and stops for good at the clear
    a = audio([(0.0, 3.25), (3.7, 4.1), (5.5, 6.0)], [(0.0, 4.2), (5.5, 6.0)], [4.2], [5.45])
    m = analyse([CallerAct("barge_in", 1, "wait, stop", 3.0, 4.5)], a, 9.0)
    (b,) = m.barge_ins
    assert b.held_ms == 250.0 and b.stop_played_ms == 1100.0 and b.clear_ms == 1200.0
    (t,) = m.turns
    assert t.false_cutoff and not t.cutoff_in_pause  # the agent spoke again over the caller
    assert t.latency_ms == 1000.0 and t.first_audio_ms == 950.0  # 50 ms of leading silence
