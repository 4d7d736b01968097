"""Barge-in policy: when caller speech over the agent is an interruption, and when a backchannel.

While the agent is thinking or speaking, a VAD start of caller speech opens a *candidate*. It
becomes an interruption when either

* the speech has lasted ``interrupt_min_s`` of media time (counted from the VAD's start
  timestamp), the caller is *still* making sound then (a frame above ``min_dbfs``: a short
  "uh-huh" is over by then, and the VAD's stop only comes 200 ms later), and what has been
  transcribed of it so far is not only backchannel words, or
* an interim transcript holds ``interrupt_min_words`` words that are not backchannels
  ("wait, no" interrupts at once; "uh-huh" never does).

When the candidate's speech stops before either, the agent's audio resumes at once and its
words decide (:meth:`BargeIn.verdict`,
on the transcript of the whole candidate, which the STT sends as soon as the speech stops): any
word that is not a backchannel ("Stop.", "Thursday.") interrupts; backchannel words or nothing
(no transcript within ``barge_words_s``) leave the agent talking. Words are
compared lower-cased without punctuation; multi-word backchannels ("mm hmm", "i see") count as
one, and a hum counts however the STT spells it ("MMMM.", "M-H-M.", "Uhh.").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["BACKCHANNELS", "BargeIn", "BargeInParams"]

BACKCHANNELS: Final = (
    "uh-huh", "uh huh", "uhuh", "uh-hum", "mhm", "mhmm", "mm-hmm", "mm hmm", "mmhmm", "mm-hm",
    "hmm", "mmm", "mm", "hm",
    "yeah", "yep", "yes", "yup", "ok", "okay", "right", "sure", "i see", "got it", "alright",
    "all right", "cool", "uh", "um", "oh", "ah", "aha", "nice", "great", "true",
)  # fmt: skip

_WORD = re.compile(r"[a-z0-9']+(?:-[a-z0-9']+)*")
#: a hum however it is spelt: only m and h with an m ("mmmm", "m-h-m", "mmhmm", "hmmm"), or
#: u and h from a "u" ("uhh", "uh-huh", "uhuh"; not "huh", which asks "what?"). The STT writes
#: a synthetic "Mm-hmm." as "MMMM." and a "Mhm." as "M-H-M." (measured, tiny.en on 8 kHz).
_HUM = re.compile(r"[mh]*m[mh]*|u[uh]*h")


@dataclass(frozen=True, slots=True)
class BargeInParams:
    enabled: bool = True
    interrupt_min_s: float = 0.5
    interrupt_min_words: int = 2
    backchannels: tuple[str, ...] = BACKCHANNELS
    #: a frame above this level is the caller still making sound (the VAD's volume floor)
    min_dbfs: float = -45.0


class BargeIn:
    """The candidate interruption of one call (see the module docstring)."""

    __slots__ = ("_bc", "_only_bc", "_start", "_words", "active", "params")

    def __init__(self, params: BargeInParams) -> None:
        self.params = params
        self._bc = _phrases(params.backchannels)
        self.active = False
        self._start = 0.0
        self._words = 0
        self._only_bc = False

    def begin(self, media_ts: float) -> None:
        if not self.params.enabled:
            return
        self.active = True
        self._start = media_ts
        self._words = 0
        self._only_bc = False

    def reset(self) -> None:
        self.active = False

    def due(self, media_end: float) -> bool:
        """True when audio up to ``media_end`` reaches the time threshold (check the level)."""
        return (
            self.active
            and not self._only_bc
            and media_end - self._start >= self.params.interrupt_min_s
        )

    def verdict(self, text: str) -> bool:
        """The whole candidate's words, after its speech stopped: True to interrupt (any word
        that is not a backchannel: "Stop.", "Thursday.")."""
        return bool(_content_words(text, self._bc))

    def on_words(self, text: str) -> bool:
        """An interim transcript of the candidate; True when it is now an interruption."""
        if not self.active:
            return False
        rest = _content_words(text, self._bc)
        words = _WORD.findall(text.lower())
        self._only_bc = bool(words) and not rest
        self._words = len(rest)
        return self._words >= self.params.interrupt_min_words

    def on_stop(self) -> None:
        """The candidate's speech stopped before it interrupted: it was a backchannel."""
        self.active = False

    @staticmethod
    def only_backchannel(text: str, backchannels: tuple[str, ...] = BACKCHANNELS) -> bool:
        """True when ``text`` is nothing but backchannel words (or empty)."""
        return not _content_words(text, _phrases(backchannels))


def _phrases(backchannels: tuple[str, ...]) -> list[tuple[str, ...]]:
    out = {tuple(_WORD.findall(b.lower())) for b in backchannels}
    out.discard(())
    return sorted(out, key=len, reverse=True)


def _content_words(text: str, phrases: list[tuple[str, ...]]) -> list[str]:
    """The words of ``text`` that are not part of a backchannel phrase."""
    words = _WORD.findall(text.lower())
    out: list[str] = []
    i = 0
    while i < len(words):
        if _HUM.fullmatch(words[i].replace("-", "")):
            i += 1
            continue
        for phrase in phrases:
            n = len(phrase)
            if tuple(words[i : i + n]) == phrase:
                i += n
                break
        else:
            out.append(words[i])
            i += 1
    return out
