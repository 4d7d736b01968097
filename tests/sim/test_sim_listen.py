"""Hearing the agent: the energy detector on received and played audio, live and afterwards."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np

from harken.sim.listen import VOICED_DBFS, AgentTrack, Span, agent_audio, frame_dbfs, merge
from harken.sim.script import Expect
from harken.sim.transcribe import check, normalise, played_between, replies
from harken.testing._playback import PlayedSpan, ReceivedMedia
from harken.testing.twilio import ulaw_encode


def tone(seconds: float, dbfs: float = -20.0) -> np.ndarray:
    n = round(seconds * 8000)
    amp = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return (amp * np.sin(2 * np.pi * 440 * np.arange(n) / 8000)).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * 8000), np.int16)


def test_frame_levels_and_threshold() -> None:
    levels = frame_dbfs(np.concatenate([tone(0.04, -20), tone(0.04, -50), silence(0.04)]))
    assert np.allclose(levels[:2], -20, atol=0.5)
    assert np.allclose(levels[2:4], -50, atol=0.5)
    assert levels[4] <= -119
    assert ((levels > VOICED_DBFS) == [True, True, False, False, False, False]).all()


def test_merge_joins_close_spans() -> None:
    spans = [Span(2.0, 3.0), Span(0.0, 1.0), Span(1.0005, 1.5)]
    assert merge(spans) == [Span(0.0, 1.5), Span(2.0, 3.0)]
    assert merge(spans, gap=0.6) == [Span(0.0, 3.0)]


def rounded(spans: list[Span]) -> list[tuple[float, float]]:
    return [(round(s.start, 6), round(s.end, 6)) for s in spans]


def frames_of(pcm: np.ndarray, t0: float) -> tuple[list[ReceivedMedia], list[PlayedSpan]]:
    """Messages of 160 samples arriving in real time from t0 (an idle buffer plays at once)."""
    received, played = [], []
    for k in range(len(pcm) // 160):
        t = t0 + 0.02 * k
        received.append(ReceivedMedia(t, 160, 160 * k))
        played.append(PlayedSpan(t, 160 * k, 160))
    return received, played


def test_agent_audio_finds_speech_on_the_played_timeline_and_honours_cuts() -> None:
    pcm = np.concatenate([tone(0.5), silence(0.3), tone(0.5)])
    received, played = frames_of(pcm, 10.0)
    a = agent_audio(received, played, pcm)
    assert rounded(a.voiced) == [(10.0, 10.5), (10.8, 11.3)]
    assert rounded(a.playing) == [(10.0, 11.3)]
    assert a.arrivals[0] == 10.0 and len(a.arrivals) == 65
    # a clear at 11.0 cut the rest: spans after it play nothing
    for s in played:
        if s.start >= 11.0:
            s.n_samples, s.cut = 0, True
    a = agent_audio(received, played, pcm, clears=[11.0])
    assert round(a.voiced[-1].end, 6) == 11.0 and a.clears == [11.0]


class FakeEmulator(SimpleNamespace):
    """The attributes of a TwilioEmulator that AgentTrack reads."""


def fake(pcm: np.ndarray, t0: float) -> Any:
    received, played = frames_of(pcm, t0)
    em = FakeEmulator(received=[], played=[], clears=[], playback_end=0.0)
    em._buffer = SimpleNamespace(audio=bytearray(ulaw_encode(pcm)))
    em.all = (received, played)
    return em


def test_live_track_follows_arrivals_and_clears() -> None:
    pcm = np.concatenate([silence(0.2), tone(0.6), silence(1.0)])
    em = fake(pcm, 5.0)
    received, played = em.all
    track = AgentTrack(em)
    em.received, em.played = received[:20], played[:20]  # up to 5.4
    track.update()
    assert track.onset_after(5.0, now=5.4) == 5.2
    assert track.onset_after(5.0, now=5.1) is None  # scheduled, not yet played
    assert track.spoke_since(5.0, now=5.4)
    assert not track.spoke_since(6.0, now=6.5)
    em.received, em.played = received, played
    em.playback_end = played[-1].end
    track.update()
    assert track.quiet_since(now=em.playback_end - 0.1) == 0.0  # still playing
    assert abs(track.quiet_since(now=7.5) - (7.5 - received[-1].time)) < 1e-9
    # audio queued 0.5 s behind earlier audio; a clear at 5.4 cuts all that had not played
    em2 = fake(pcm, 5.0)
    r2, p2 = em2.all
    for s in p2:
        s.start += 0.5
    em2.received, em2.played = r2[:21], p2[:21]  # arrived by 5.4
    em2.clears = [5.4]
    track2 = AgentTrack(em2)
    track2.update()
    assert track2.onset_after(5.0, now=9.0) is None


def test_transcript_windows_and_checks() -> None:
    pcm = np.concatenate([tone(0.5), silence(1.5), tone(0.5)])
    received, played = frames_of(pcm, 0.0)
    a = agent_audio(received, played, pcm)
    found = replies(a.voiced)
    assert [r.span for r in found] == [Span(0.0, 0.5), Span(2.0, 2.5)]
    assert len(played_between(pcm, played, Span(0.0, 0.5))) == 4000
    assert normalise("We're open, Tuesday-Sunday!") == "we re open tuesday sunday"
    e = Expect(said=("open tuesday",), said_any=("bye", "goodbye"), not_said=("closed",))
    assert check(e, "We're open on Tuesday. Goodbye!") == ["agent did not say 'open tuesday'"]
    assert check(e, "We're OPEN Tuesday to Sunday. Goodbye!") == []
    assert check(e, "open tuesday, bye") == []
    assert check(e, "open tuesday, closed, goodbyes") == [
        "agent said none of ['bye', 'goodbye']",
        "agent said 'closed'",
    ]
