"""LocalAgreement-n: turn repeated transcriptions of a growing buffer into stable partial text.

The policy (Macháček, Dabre & Bojar, *Turning Whisper into Real-Time Transcription System*,
2023, "whisper_streaming"): transcribe the buffer again every time enough new audio has arrived;
a word is **committed** once ``n`` consecutive hypotheses agree on it, i.e. the longest common
prefix of the last ``n`` hypotheses (after what is already committed) is committed. Committed
words are never revised; the rest of the latest hypothesis is **tentative**. ``n = 2`` is the
usual choice and the default.

How the pieces fit (see :class:`~harken.speech.stt.service.SttService`):

* each pass decodes the whole buffer freely by default; :func:`continuation` takes the words
  after the committed ones (aligned by position). With ``force_prefix=True`` the committed words
  are forced as the decoder's prefix instead (slower and less accurate with CTranslate2's
  Whisper: see :mod:`~harken.speech.stt.transcriber`);
* when the buffer grows past a limit it is trimmed at the end of the last committed word
  (:func:`trim_plan`); the words before the cut move into the **context**, given to the engine
  as its prompt, and :func:`strip_overlap` drops a committed word the next hypothesis repeats
  because the cut was not exact.

Everything here is pure (no I/O, no clocks): words in, words out. Words are compared by
:func:`word_key` (case and punctuation folded), so ``"Evening"`` and ``"evening."`` agree; the
spelling of the newest hypothesis is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LocalAgreement",
    "TrimPlan",
    "common_prefix",
    "continuation",
    "final_words",
    "split_words",
    "strip_overlap",
    "trim_plan",
    "word_key",
]

_FOLD: Final = re.compile(r"[^\w']+")
_MAX_OVERLAP: Final = 5


def split_words(text: str) -> list[str]:
    """Whitespace-separated words, punctuation attached (as an engine wrote them)."""
    return text.split()


def word_key(word: str) -> str:
    """What two words are compared by: lower case, punctuation (but not ``'``) removed."""
    return _FOLD.sub("", word.lower()).strip("'")


def common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common prefix of two word sequences (compared by :func:`word_key`)."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if word_key(x) != word_key(y):
            break
        n += 1
    return n


def strip_overlap(
    committed: Sequence[str], words: Sequence[str], limit: int = _MAX_OVERLAP
) -> list[str]:
    """Drop a repeat of the last committed words from the start of ``words``.

    After a trim the next hypothesis may start with the word(s) just before the cut; the longest
    such n-gram (up to ``limit`` words) that ends ``committed`` and starts ``words`` is removed.
    """
    for n in range(min(limit, len(committed), len(words)), 0, -1):
        if common_prefix(committed[-n:], words[:n]) == n:
            return list(words[n:])
    return list(words)


def continuation(text: str, prefix: str) -> list[str]:
    """The words an engine produced after a forced ``prefix``.

    ``text`` is the engine's full output for the buffer (the prefix's words included, forced or
    decoded again). Words are aligned by position: if the engine glued its first token onto the
    prefix's last word (``"book"`` + ``"ing"``), that fragment is dropped, and a word it read
    differently stands for the committed one: committed words are not revised while the caller
    speaks (:func:`final_words` keeps a longer glued word at the end of the turn).
    """
    prefix_words = split_words(prefix)
    words = split_words(text)
    n = len(prefix_words)
    if n == 0:
        return words
    # the prefix's words came back different (a fragment glued to the last one, "book" + "ing",
    # or a free pass reading the committed audio differently): word for word, they stand for
    # the prefix, and what follows is new
    return words[n:]


def final_words(committed: Sequence[str], text: str) -> list[str]:
    """The final reading: ``committed`` words, then what the engine produced after them.

    Unlike :func:`continuation`, a fragment the engine glued onto the last committed word
    (``"week"`` + ``"end"``) *extends* that word: at the end of the turn the longer reading,
    made with all the audio, wins.
    """
    words = split_words(text)
    n = len(committed)
    if n and len(words) >= n and common_prefix(words, committed) == n - 1:
        glued, last = word_key(words[n - 1]), word_key(committed[-1])
        if last and glued.startswith(last) and glued != last:
            return [*committed[:-1], *words[n - 1 :]]
    return [*committed, *continuation(text, " ".join(committed))]


class LocalAgreement:
    """Commit the words that ``n`` consecutive hypotheses agree on.

    Feed :meth:`insert` the words of each new hypothesis that follow the committed ones; it
    returns the newly committed words. :attr:`tentative` is the rest of the latest hypothesis.
    :meth:`finish` commits a final hypothesis whole.

    ``holdback`` words at the end of the newest hypothesis are never committed, even when the
    hypotheses agree on them: a pass sees the audio cut at an arbitrary point, and two passes
    close together can agree on a word cut in the middle (``"week"`` of ``"weekend"``).
    """

    __slots__ = ("_history", "committed", "holdback", "n", "tentative")

    def __init__(self, n: int = 2, holdback: int = 1) -> None:
        if n < 1:
            raise ValueError("LocalAgreement needs n >= 1")
        self.n = n
        self.holdback = max(0, holdback)
        self.committed: list[str] = []
        self.tentative: list[str] = []
        self._history: list[list[str]] = []  # the last n-1 continuations, oldest first

    def insert(self, words: Sequence[str]) -> list[str]:
        """Add a hypothesis (its words after :attr:`committed`); returns newly committed words."""
        new = list(words)
        agreed = len(new)
        if len(self._history) < self.n - 1:
            agreed = 0
        for old in self._history:
            agreed = min(agreed, common_prefix(old, new))
        agreed = max(0, min(agreed, len(new) - self.holdback))
        fresh = new[:agreed]
        self.committed.extend(fresh)
        self.tentative = new[agreed:]
        history = [*self._history, new]
        keep = history[-(self.n - 1) :] if self.n > 1 else []
        self._history = [h[agreed:] for h in keep]
        return fresh

    def finish(self, words: Sequence[str]) -> list[str]:
        """Commit a final hypothesis whole (end of turn); returns the words it added."""
        fresh = list(words)
        self.committed.extend(fresh)
        self.tentative = []
        self._history = []
        return fresh

    def forget_history(self) -> None:
        """Hypotheses before a buffer trim are not comparable with later ones: start afresh."""
        self._history = []
        self.tentative = []

    @property
    def words(self) -> list[str]:
        """Committed then tentative words: the best current reading."""
        return [*self.committed, *self.tentative]

    @property
    def text(self) -> str:
        return " ".join(self.words)

    def reset(self) -> None:
        self.committed = []
        self.tentative = []
        self._history = []


@dataclass(frozen=True, slots=True)
class TrimPlan:
    """Cut the buffer at ``cut_s``; the first ``words`` committed words of the buffer move into
    the context."""

    cut_s: float
    words: int


def trim_plan(
    buffer_s: float, committed_in_buffer: int, committed_end_s: float | None, *, max_s: float
) -> TrimPlan | None:
    """Whether (and where) to trim a buffer of ``buffer_s`` seconds.

    Trim only once the buffer is longer than ``max_s``, only at the end of committed words
    (``committed_end_s``: where the last committed word of the buffer ends, from alignment), and
    only if that leaves audio behind and moves at least one word.
    """
    if buffer_s <= max_s or committed_in_buffer == 0 or committed_end_s is None:
        return None
    if not 0.0 < committed_end_s < buffer_s:
        return None
    return TrimPlan(committed_end_s, committed_in_buffer)
