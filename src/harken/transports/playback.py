"""Playback truth: when did the caller actually hear the end of an utterance, and how much of it?

One interface, three completion strategies, one fallback:

``mark``
    The far end acknowledges a marker placed after the utterance's last audio (Twilio/Telnyx
    ``mark`` echo, Plivo ``checkpoint``/``playedStream``, Vonage ``notify``). Intermediate marks
    every ``mark_interval_s`` tell how far playback got: after a barge-in the caller is known to
    have heard up to the *last played mark*. A mark echoed because of a ``clear`` means flushed,
    not played, and never counts as played.
``drained``
    Local transports (WebRTC, files): the utterance is complete when the pacer has released its
    last chunk and, by the clock, the sink has played it.
``silence``
    Far ends with no acknowledgement: a silence tail is sent after the utterance (to push the
    audio out of the far end's jitter buffer) and completion is resolved by the clock once the
    tail has played.
``deadman``
    Always armed when an utterance's last audio is queued: remaining audio + ``margin_s``. If the
    expected signal never comes, the deadman resolves the utterance and is counted.

The tracker is pure: the transport passes the time in and acts on the returned
:class:`Completion`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harken.errors import ConfigError

STRATEGIES = ("mark", "drained", "silence")


@dataclass(slots=True, frozen=True)
class Completion:
    """How an utterance ended: ``played_s`` heard, resolved by ``strategy``."""

    utterance_id: int
    played_s: float
    duration_s: float
    interrupted: bool
    strategy: str  # "mark" | "drained" | "silence" | "deadman" | "interrupted"


@dataclass(slots=True)
class _Utterance:
    uid: int
    start: float  # stream offset (s) of its first audio
    end: float | None = None  # stream offset of its end, once finished
    final_mark: str | None = None
    deadline: float | None = None  # deadman, wall clock
    marks: dict[str, float] = field(default_factory=dict)
    played: float = 0.0  # stream offset confirmed played (mark strategy)


class PlaybackTracker:
    """Tracks the utterances of one call's outbound audio (see the module docstring)."""

    __slots__ = ("_open", "completions", "deadman_fires", "finished", "margin_s", "strategy")

    def __init__(self, strategy: str, margin_s: float = 1.0) -> None:
        if strategy not in STRATEGIES:
            raise ConfigError(f"unknown playback strategy {strategy!r}; choose from {STRATEGIES}")
        self.strategy = strategy
        self.margin_s = margin_s
        self._open: dict[int, _Utterance] = {}
        #: open utterances with all their audio queued, waiting for their completion signal
        self.finished = 0
        self.deadman_fires = 0
        self.completions: dict[str, int] = {}

    @property
    def active(self) -> bool:
        return bool(self._open)

    @property
    def awaiting_end(self) -> bool:
        """Some utterance has all its audio queued and waits for its completion signal."""
        return self.finished > 0

    def current(self) -> int | None:
        """The id of the newest utterance not yet resolved."""
        return next(reversed(self._open), None) if self._open else None

    def begin(self, uid: int, offset_s: float) -> None:
        """The first audio of utterance ``uid`` sits at stream offset ``offset_s``."""
        old = self._open.get(uid)
        if old is not None and old.end is not None:  # a reused id replaces a finished one
            self.finished -= 1
        self._open[uid] = _Utterance(uid, offset_s, played=offset_s)

    def note_mark(self, uid: int, name: str, offset_s: float) -> None:
        """An intermediate mark placed at ``offset_s`` inside utterance ``uid``."""
        utt = self._open.get(uid)
        if utt is not None:
            utt.marks[name] = offset_s

    def finish(
        self, uid: int, end_s: float, remaining_s: float, now: float, final_mark: str | None = None
    ) -> float | None:
        """All of ``uid``'s audio is queued; returns the deadman deadline (wall clock)."""
        utt = self._open.get(uid)
        if utt is None:
            return None
        if utt.end is None:
            self.finished += 1
        utt.end = end_s
        utt.final_mark = final_mark
        if final_mark is not None:
            utt.marks[final_mark] = end_s
        utt.deadline = now + remaining_s + self.margin_s
        return utt.deadline

    # --- signals -----------------------------------------------------------------------------

    def on_mark(self, name: str, cleared: bool) -> Completion | None:
        """A mark came back. Only a played (not cleared) final mark completes its utterance."""
        if cleared:
            return None
        for utt in self._open.values():
            offset = utt.marks.pop(name, None)
            if offset is None:
                continue
            utt.played = max(utt.played, offset)
            if name == utt.final_mark and self.strategy == "mark":
                return self._resolve(utt, "mark", interrupted=False)
            return None
        return None

    def on_clock(self, played_offset_s: float, now: float) -> list[Completion]:
        """Pacer tick: resolve by the clock (drained / silence) and fire due deadmen."""
        done: list[Completion] = []
        for utt in list(self._open.values()):
            if utt.end is None:
                continue
            if self.strategy != "mark" and played_offset_s >= utt.end - 1e-9:
                done.append(self._resolve(utt, self.strategy, interrupted=False))
            elif utt.deadline is not None and now >= utt.deadline:
                self.deadman_fires += 1
                done.append(self._resolve(utt, "deadman", interrupted=False))
        return done

    def postpone(self, seconds: float) -> None:
        """Move every armed deadman later (playback was paused this long)."""
        for utt in self._open.values():
            if utt.deadline is not None:
                utt.deadline += seconds

    def next_deadline(self) -> float | None:
        deadlines = [u.deadline for u in self._open.values() if u.deadline is not None]
        return min(deadlines) if deadlines else None

    def interrupt(self, played_offset_s: float, reason: str = "interrupted") -> list[Completion]:
        """Barge-in (or the far end went away, ``reason="remote_closed"``): every open
        utterance ends now; report how much of each was heard.

        ``played_offset_s`` is the pacer's clock estimate; the mark strategy trusts only the
        last played mark.
        """
        done = []
        for utt in list(self._open.values()):
            heard = utt.played if self.strategy == "mark" else played_offset_s
            done.append(self._resolve(utt, reason, interrupted=True, heard_to=heard))
        return done

    # --- internals ---------------------------------------------------------------------------

    def _resolve(
        self, utt: _Utterance, strategy: str, interrupted: bool, heard_to: float | None = None
    ) -> Completion:
        del self._open[utt.uid]
        end = utt.end
        if end is not None:
            self.finished -= 1
        if heard_to is None:
            heard_to = end if end is not None else utt.played
        duration = (end if end is not None else heard_to) - utt.start
        played = min(max(0.0, heard_to - utt.start), max(duration, 0.0))
        self.completions[strategy] = self.completions.get(strategy, 0) + 1
        return Completion(utt.uid, played, max(duration, 0.0), interrupted, strategy)
