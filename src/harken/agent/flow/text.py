"""Transcript text for matching: normalised tokens, number words, phrases and a fuzzy ratio.

Speech-to-text output is lowercase-ish, unpunctuated and sometimes wrong, so everything that
matches caller text works on :class:`Utterance` tokens:

* lowercased; ``p.m.``/``p m`` become ``pm``; ``7pm`` is split into ``7 pm``; ``7.30`` becomes
  ``7:30``; an ISO date ``2024-03-14`` becomes ``2024/03/14``; hyphens and other punctuation
  become spaces (``twenty-one`` -> ``twenty one``); a colon survives only between digits and a
  slash only between digits;
* ``raw`` tokens keep apostrophes (for names like O'Brien); ``toks`` drop them, so ``that's`` and
  ``thats``, ``o'clock`` and ``oclock`` match alike. Keyword phrases from YAML are normalised the
  same way.

Parsers see a :class:`ParseInput`, where tokens already claimed by another slot are blanked to
``""`` (a blank matches no word, so a phrase never spans a claimed token).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

__all__ = [
    "ParseInput",
    "SlotMatch",
    "SlotSpec",
    "Utterance",
    "content_tokens",
    "find_phrase",
    "normalize",
    "number_at",
    "ordinal_at",
    "phrase_at",
    "phrase_tokens",
    "token_set_ratio",
    "words",
]

UNITS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
}
TEENS = {
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fourty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
ORDINAL_UNITS = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
}
ORDINAL_WORDS = {
    **ORDINAL_UNITS,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "thirteenth": 13,
    "fourteenth": 14,
    "fifteenth": 15,
    "sixteenth": 16,
    "seventeenth": 17,
    "eighteenth": 18,
    "nineteenth": 19,
    "twentieth": 20,
    "thirtieth": 30,
}
_ORDINAL_SUFFIX = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)$")


def words(text: str) -> frozenset[str]:
    """The whitespace-separated words of ``text`` as a set (for word lists in source)."""
    return frozenset(text.split())


# Words that carry no meaning for fuzzy intent matching.
FUZZY_STOPWORDS = words(
    "a an the i im id ive me my we were our us you your to of for and or is it its be "
    "please um uh er like just so well yeah hi hello hey can could would will do does "
    "want wanna need some this that there here at on in"
)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One caller transcript: the original text and its normalised tokens."""

    text: str
    raw: tuple[str, ...]  # lowercase tokens, apostrophes kept
    toks: tuple[str, ...]  # the same tokens without apostrophes

    @property
    def norm(self) -> str:
        """The normalised text: ``toks`` joined by single spaces."""
        return " ".join(self.toks)


_SUBS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"[\u2018\u2019\u02bc`]", "'"),
        (r"\b([ap])\s*\.\s*m\b\.?", r"\1m"),  # p.m. / p. m.
        (r"\b([ap]) m\b", r"\1m"),  # "p m" from ASR
        (r"(\d)\s*([ap])m\b", r"\1 \2m"),  # 7pm -> 7 pm
        (r"(\d)ish\b", r"\1"),  # 7ish -> 7
        (r"\b(\d{1,2})\.(\d{2})\b", r"\1:\2"),  # 7.30 -> 7:30
        (r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b", r"\1/\2/\3"),  # ISO dates survive hyphen removal
        (r"(?<!\d):|:(?!\d)", " "),
        (r"(?<!\d)/|/(?!\d)", " "),
        (r"(?<![a-z])'|'(?![a-z])", " "),  # quotes, not apostrophes
        (r"[^a-z0-9:/'#*+\s]", " "),
    )
)


def normalize(text: str) -> Utterance:
    """Normalise a transcript into tokens (see the module docstring)."""
    s = text.lower()
    for pattern, repl in _SUBS:
        s = pattern.sub(repl, s)
    raw = tuple(s.split())
    return Utterance(text=text, raw=raw, toks=tuple(t.replace("'", "") for t in raw))


def phrase_tokens(phrase: str) -> tuple[str, ...]:
    """A keyword phrase as normalised tokens (the same normalisation as transcripts)."""
    return normalize(phrase).toks


def phrase_at(toks: Sequence[str], i: int, phrase: Sequence[str]) -> bool:
    """Whether ``phrase`` occurs in ``toks`` starting at index ``i``."""
    n = len(phrase)
    return n > 0 and i + n <= len(toks) and all(toks[i + k] == phrase[k] for k in range(n))


def find_phrase(toks: Sequence[str], phrase: Sequence[str], start: int = 0) -> int | None:
    """The first index at or after ``start`` where ``phrase`` occurs, or None."""
    for i in range(start, len(toks) - len(phrase) + 1):
        if phrase_at(toks, i, phrase):
            return i
    return None


def number_at(toks: Sequence[str], i: int, *, max_digits: int = 4) -> tuple[int, int] | None:
    """A cardinal number starting at ``toks[i]``: ``(value, end index)`` or None.

    Digits (``"12"``, up to ``max_digits`` of them), unit and teen words, and tens words with an
    optional unit (``"twenty one"`` -> 21). A unit is never glued to a following tens word, so
    ``"seven thirty"`` reads as 7 (then 30), which is what times need.
    """
    if i >= len(toks):
        return None
    t = toks[i]
    if t.isdigit() and 0 < len(t) <= max_digits:
        return int(t), i + 1
    if t in UNITS:
        return UNITS[t], i + 1
    if t in TEENS:
        return TEENS[t], i + 1
    if t in TENS:
        value = TENS[t]
        if i + 1 < len(toks) and toks[i + 1] in UNITS and UNITS[toks[i + 1]] > 0:
            return value + UNITS[toks[i + 1]], i + 2
        return value, i + 1
    return None


def ordinal_at(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    """An ordinal day number at ``toks[i]``: ``"3rd"``, ``"third"``, ``"twenty first"``."""
    if i >= len(toks):
        return None
    t = toks[i]
    m = _ORDINAL_SUFFIX.match(t)
    if m:
        return int(m.group(1)), i + 1
    if t in ORDINAL_WORDS:
        return ORDINAL_WORDS[t], i + 1
    if t in TENS and i + 1 < len(toks) and toks[i + 1] in ORDINAL_UNITS:
        return TENS[t] + ORDINAL_UNITS[toks[i + 1]], i + 2
    return None


def content_tokens(toks: Sequence[str]) -> list[str]:
    """The tokens that carry meaning for fuzzy matching (stopwords and blanks removed)."""
    return [t for t in toks if t and t not in FUZZY_STOPWORDS]


def token_set_ratio(a: Sequence[str], b: Sequence[str]) -> float:
    """Token-set similarity of two token lists in [0, 1] (the fuzzywuzzy idea, on difflib).

    The shared tokens are compared with each side's shared-plus-own tokens (sorted), and the best
    of the three ratios wins, so word order and extra words on one side matter little. When one
    side's tokens are a subset of the other's the score is 1.0; with nothing shared it falls back
    to the character similarity of the sorted token strings (which tolerates ASR misspellings).
    """
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    common = " ".join(sorted(sa & sb))
    left = " ".join(x for x in (common, " ".join(sorted(sa - sb))) if x)
    right = " ".join(x for x in (common, " ".join(sorted(sb - sa))) if x)
    best = difflib.SequenceMatcher(None, left, right).ratio()
    if common:
        best = max(
            best,
            difflib.SequenceMatcher(None, common, left).ratio(),
            difflib.SequenceMatcher(None, common, right).ratio(),
        )
    return best


# -- what slot parsers see -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotSpec:
    """What a slot parser needs to know about its slot, beyond the text."""

    type: str
    assume: str = "none"  # time: "am" | "pm" | "none" for hours 1-11 said without am/pm
    window: tuple[int, int] | None = None  # time: the allowed window in minutes after midnight
    options: tuple[tuple[str, tuple[tuple[str, ...], ...]], ...] = ()  # choice: value, phrases
    threshold: float = 0.8  # choice: fuzzy threshold
    min_digits: int = 3  # phone: the shortest digit run taken as an attempt at a number


@dataclass(frozen=True, slots=True)
class SlotMatch:
    """A value found in the tokens ``[start, end)``."""

    value: Any
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ParseInput:
    """The text a slot parser looks at.

    ``toks``/``raw`` have tokens claimed by other slots blanked; ``full`` is unblanked (for
    context such as "in the evening"). ``lenient`` is True when the slot is the one the caller
    was just asked for: a bare value ("six", "Bob") is then accepted. Otherwise a parser needs a
    cue ("for 6", "6 people", "my name is Bob") so unrelated numbers and words are not grabbed.
    """

    text: str
    toks: tuple[str, ...]
    raw: tuple[str, ...]
    full: tuple[str, ...]
    today: date
    lenient: bool
