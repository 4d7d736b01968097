"""The seams of a conversation, measured on one call's timeline (pure functions, no I/O).

Inputs are what the simulated caller knows: its own acts (:class:`CallerAct`, with the send
times of the first and last voiced 20 ms frame and of the scripted pauses in between) and the
agent's audio as the caller got it (:class:`~harken.sim.listen.AgentAudio`: voiced spans on the
played timeline, playing spans, media arrivals, ``clear`` arrivals). All times are seconds on
one clock.

Agent speech is grouped into **bursts**: voiced spans less than :data:`BURST_GAP_S` apart are one
burst (words and the short pauses inside a sentence). A burst's start is an agent **onset**.

Per caller turn (``say``, ``barge_in`` and ``dtmf`` acts the agent should answer):

* **voice-to-voice latency**: the end of the caller's act (last voiced frame sent, last key sent)
  to the first agent onset after it, played. If the agent is still audible when the caller
  finishes, the turn was talked over and has no latency. No onset before the caller's next act
  (or the end of the call) means no reply.
* **dead air**: a reply later than :data:`DEAD_AIR_S` (1.5 s), or no reply while the call stayed
  open at least that long after the act.
* **first audio**: the end of the caller's act to the first agent media *arriving* after it;
  the rest of the latency is the silence the TTS audio starts with.
* **false cut-off** (``say`` and ``barge_in`` acts): an agent onset after the caller began and
  before the caller finished, i.e. the agent took the turn inside a mid-utterance pause
  (``in_pause``: a scripted one) or spoke over the resumed speech (the end of turn fired in a
  pause, the reply came out after it); for a barge-in, also held playback resuming over the
  caller.

Per ``barge_in`` (applicable when the agent's audio was playing at the caller's onset):

* **stop (played)**: caller onset to the end of the last agent speech played before the
  ``clear`` (0 when the agent was between words and never resumed): when the agent fell silent
  for good. **held**: caller onset to the end of the agent's speech burst running at the onset
  (the first time it went quiet; held playback may resume it for a while before the ``clear``).
* **stop (arrival)**: caller onset to the last media message that arrived before the ``clear``
  (the server holds playback at the caller's onset, so audio stops arriving first).
* **clear**: caller onset to the ``clear``. No ``clear`` within :data:`CLEAR_WINDOW_S` is a
  missed barge-in.

Per ``backchannel`` (applicable when the agent was playing at its onset): **wrong** when a
``clear`` came between its onset and :data:`BACKCHANNEL_WINDOW_S` after its end (the agent
treated it as an interruption). ``resumed``: agent speech played again after the backchannel;
``gap_ms``: the longest silence in the agent's speech around it (held playback is audible).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from harken.sim.listen import AgentAudio, Span, merge

__all__ = [
    "BACKCHANNEL_WINDOW_S",
    "BURST_GAP_S",
    "CLEAR_WINDOW_S",
    "DEAD_AIR_S",
    "ActKind",
    "BackchannelResult",
    "BargeInResult",
    "CallMetrics",
    "CallerAct",
    "TurnResult",
    "analyse",
    "bursts",
]

BURST_GAP_S: Final = 0.3
DEAD_AIR_S: Final = 1.5
CLEAR_WINDOW_S: Final = 4.0
BACKCHANNEL_WINDOW_S: Final = 2.0
RESUME_WINDOW_S: Final = 3.0
_EDGE_S: Final = 0.02  # a frame's worth of tolerance at the caller's own edges

ActKind = Literal["say", "backchannel", "barge_in", "dtmf"]


@dataclass(frozen=True, slots=True)
class CallerAct:
    """Something the caller did: ``onset``/``end`` are send times of the first and last voiced
    frame (keys: first and last key); ``pauses`` the scripted silences in between."""

    kind: ActKind
    step: int
    text: str
    onset: float
    end: float
    pauses: tuple[Span, ...] = ()
    reply: bool = True


@dataclass(slots=True)
class TurnResult:
    step: int
    kind: ActKind
    text: str
    latency_ms: float | None
    first_audio_ms: float | None = None
    dead_air: bool = False
    no_reply: bool = False
    talked_over: bool = False
    false_cutoff: bool = False
    cutoff_in_pause: bool = False
    endpoint_rule: str | None = None  # from the server's records, when readable
    server_v2v_ms: float | None = None
    vad_lag_ms: float | None = None  # caller's end -> the server's VAD decided it stopped


@dataclass(slots=True)
class BargeInResult:
    step: int
    text: str
    applicable: bool
    interrupted: bool = False
    held_ms: float | None = None
    stop_played_ms: float | None = None
    stop_arrival_ms: float | None = None
    clear_ms: float | None = None


@dataclass(slots=True)
class BackchannelResult:
    step: int
    text: str
    applicable: bool
    wrong: bool = False
    resumed: bool = False
    gap_ms: float | None = None


@dataclass(slots=True)
class CallMetrics:
    turns: list[TurnResult] = field(default_factory=list)
    barge_ins: list[BargeInResult] = field(default_factory=list)
    backchannels: list[BackchannelResult] = field(default_factory=list)


def bursts(voiced: Sequence[Span], gap: float = BURST_GAP_S) -> list[Span]:
    """Voiced spans joined across gaps shorter than ``gap``."""
    return merge(voiced, gap)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _covering(spans: Sequence[Span], t: float) -> Span | None:
    """The span with ``start <= t < end`` (spans sorted and disjoint)."""
    i = bisect.bisect_right([s.start for s in spans], t) - 1
    if i >= 0 and spans[i].start <= t < spans[i].end:
        return spans[i]
    return None


def _first_at_or_after(values: Sequence[float], t: float) -> float | None:
    i = bisect.bisect_left(values, t)
    return values[i] if i < len(values) else None


def _turn(
    act: CallerAct,
    onsets: list[float],
    blist: list[Span],
    arrivals: list[float],
    until: float,
    quiet: float | None = None,
) -> TurnResult:
    """``quiet``: for a barge-in, when the agent first went quiet after the caller's onset.
    Until then the agent is still saying the reply it was cut off in (a word after a pause of
    its own is not a new onset: that is the barge-in's stop latency, measured apart)."""
    res = TurnResult(act.step, act.kind, act.text, None)
    if act.kind in ("say", "barge_in"):
        since = (act.onset if quiet is None else quiet) + _EDGE_S  # quiet >= onset
        inside = [t for t in onsets if since < t < act.end - _EDGE_S]
        if inside:
            res.false_cutoff = True
            res.cutoff_in_pause = any(p.start <= t <= p.end for t in inside for p in act.pauses)
    if not act.reply:
        return res
    over = _covering(blist, act.end)
    if over is not None and over.start < act.end:
        res.talked_over = True
        return res
    first = _first_at_or_after(onsets, act.end)
    if first is not None and first < until:
        res.latency_ms = _ms(first - act.end)
        audio = _first_at_or_after(arrivals, act.end)
        if audio is not None and audio <= first:
            res.first_audio_ms = _ms(audio - act.end)
        res.dead_air = first - act.end > DEAD_AIR_S
    else:
        res.no_reply = True
        res.dead_air = until - act.end > DEAD_AIR_S
    return res


def _barge_in(act: CallerAct, audio: AgentAudio) -> BargeInResult:
    res = BargeInResult(act.step, act.text, _covering(audio.playing, act.onset) is not None)
    if not res.applicable:
        return res
    clear = next((c for c in audio.clears if act.onset <= c <= act.onset + CLEAR_WINDOW_S), None)
    if clear is None:
        return res
    res.interrupted = True
    res.clear_ms = _ms(clear - act.onset)
    before = bursts([v for v in audio.voiced if v.start < clear])
    held = next((b.end for b in before if b.end > act.onset), act.onset)
    res.held_ms = _ms(max(0.0, min(held, clear) - act.onset))
    heard = [v.end for v in audio.voiced if v.start < clear and v.end > act.onset]
    res.stop_played_ms = _ms(max(0.0, min(max(heard, default=act.onset), clear) - act.onset))
    arrived = [t for t in audio.arrivals if act.onset <= t < clear]
    res.stop_arrival_ms = _ms(max(arrived, default=act.onset) - act.onset)
    return res


def _backchannel(act: CallerAct, audio: AgentAudio, until: float) -> BackchannelResult:
    res = BackchannelResult(act.step, act.text, _covering(audio.playing, act.onset) is not None)
    if not res.applicable:
        return res
    horizon = min(until, act.end + BACKCHANNEL_WINDOW_S)
    res.wrong = any(act.onset <= c <= horizon for c in audio.clears)
    after = [v for v in audio.voiced if act.end < v.end and v.start <= act.end + RESUME_WINDOW_S]
    res.resumed = bool(after) and not res.wrong
    if res.resumed:
        resume = after[0].start
        around = [v for v in audio.voiced if v.end > act.onset - BURST_GAP_S and v.start <= resume]
        gaps = [b.start - a.end for a, b in itertools.pairwise(around)]
        res.gap_ms = _ms(max([0.0, *gaps]))
    return res


def analyse(acts: Sequence[CallerAct], audio: AgentAudio, call_end: float) -> CallMetrics:
    """Every measurement of one call. ``call_end``: when the call ended (or the run stopped)."""
    ordered = sorted(acts, key=lambda a: a.onset)
    blist = bursts(audio.voiced)
    onsets = [b.start for b in blist]
    out = CallMetrics()
    for i, act in enumerate(ordered):
        until = ordered[i + 1].onset if i + 1 < len(ordered) else call_end
        quiet = None
        if act.kind == "barge_in":
            barge = _barge_in(act, audio)
            out.barge_ins.append(barge)
            if barge.held_ms is not None:
                quiet = act.onset + barge.held_ms / 1000.0
        if act.kind == "say" or (act.kind in ("dtmf", "barge_in") and act.reply):
            out.turns.append(_turn(act, onsets, blist, audio.arrivals, until, quiet))
        if act.kind == "backchannel":
            out.backchannels.append(_backchannel(act, audio, until))
    return out
