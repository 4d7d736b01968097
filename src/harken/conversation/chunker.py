"""LLM tokens to speakable clauses, the first one short (pure, sans-I/O).

:class:`ClauseChunker` takes a response's tokens as they stream (``push``) and hands back clauses
ready for TTS; ``flush`` ends the response and returns what is left; ``reset`` drops it all
(barge-in). Breaks are only ever made at the end of a whitespace-delimited token, so a word is
never cut, and a decision is only made once the text it depends on has arrived: the clauses are
the same however the text was split into tokens (property-tested).

The rules, in the order they apply to each token end:

1. **Length cap.** A clause never runs past ``max_chars``: when the next token would cross it,
   the clause ends at the latest earlier token that does not end in a weak word (below), no
   earlier than ``max_chars / 2``; a single token longer than the cap is a clause of its own.
2. **Punctuation**, when followed by whitespace (closing quotes, brackets and markdown emphasis
   after the mark count with it, so ``He said "hi." Then`` breaks after the quote):

   * ``?`` ``!`` and ``.`` end a sentence: always a break, even in the first clause (a complete
     sentence, like "Sure.", is never too short to say);
   * ``,`` ``;`` ``:``, dashes and ellipses (``...`` ``…``) are clause marks: a break in the
     first clause once it has ``first_min_words`` words, later once the clause has
     ``max_chars / 2`` characters.

   A ``.`` is not a sentence end after: a title or Latin abbreviation that never ends a
   sentence (``Dr.`` ``Mr.`` ``e.g.`` ``i.e.`` ``vs.`` ...); a single-letter initial (``J. R.``);
   a list marker (``1.`` or ``2)`` at the start of a line or after a sentence or colon). After
   abbreviations that may end one (``etc.`` ``a.m.`` ``p.m.`` ``U.S.`` ``Inc.`` ``Jr.`` and
   dotted acronyms) it breaks only if the next word starts with a capital letter; after ``No.``
   ``Vol.`` ``Fig.`` ... only if the next word does not start with a digit. So the decision
   waits for the next word's first character (or the end of the response).
3. **Newlines** end a clause: paragraphs, headings and list items ("1. foo\\n2. bar" is two
   clauses, each with its number).
4. **First clause word cap.** The response's first clause ends after ``first_max_words`` words
   (list markers and pure punctuation do not count), backing off to an earlier word, down to
   ``first_min_words``, if the break would fall right after a weak word: an article,
   preposition, conjunction, possessive or auxiliary ("the", "to", "of", "and", "my", "is"...).

Numbers (``3.14`` ``1,000`` ``$4.50`` ``10:30``), URLs and e-mail addresses
(``example.com/path?x=1``) and code (``foo.bar()``) never break inside because their marks are
not followed by whitespace; a mark at the very end of the text so far waits for the next token
(``3.`` may become ``3.5``).

Each clause is made speakable (:func:`speakable`): markdown emphasis (``**`` ``*`` ``__``),
backticks and code fences, heading hashes, bullets and quote marks at the start of a line and
horizontal rules are removed, ``[text](url)`` links become their text, whitespace collapses to
single spaces. A clause with no letter or digit left is not emitted (never an empty one).
"""

from __future__ import annotations

import re
from typing import Final

from harken.errors import ConfigError

__all__ = ["ClauseChunker", "speakable"]


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


_TOKEN: Final = re.compile(r"\S+")
_OPENERS: Final = "\"'([{\u201c\u2018\u00ab*_`"
_CLOSERS: Final = "\"')]}\u201d\u2019\u00bb*_`"
_DASHES: Final = ("-", "--", "\u2014", "\u2013")
_LIST_MARKER: Final = re.compile(r"\d{1,2}[.)]")
_DOTTED: Final = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")

# a "." after these never ends a sentence (they precede what they qualify)
_NEVER: Final = _set(
    "mr mrs ms mx dr prof rev hon gen sen rep gov lt col capt sgt cmdr adm messrs mme mlle "
    "e.g i.e cf viz vs approx ca esp incl dept est"
)
# these may end a sentence: a break only if the next word starts with a capital letter
_MAYBE: Final = _set(
    "etc jr sr st ave blvd rd inc ltd co corp bros llc plc ph.d m.d b.a m.a al "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri sat sun "
    "min max"
)
# these precede a number: a break unless the next word starts with a digit
_NUMBERED: Final = _set("no nos vol vols fig figs ch sec pp art ex")
# after a dotted acronym (U.S., a.m.) only one of these starts a new sentence: "the U.S. Army"
_OPENING: Final = _set(
    "i we you he she it they the this that these those there then but and so now my our your "
    "his her its their a an if when what how why who where yes no okay ok also however here "
    "please thanks thank let next first finally after before today tomorrow in on at for"
)
_WEAK: Final = _set(
    "a an the to of in on at by for from with into onto upon about as than via per "
    "and or but nor so if that because while whereas "
    "my your his her its our their this these those which whose "
    "is are was were be been being am will would can could should shall may might must "
    "do does did has have had not no very"
)


def _has_alnum(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _is_weak(token: str) -> bool:
    """A token a clause should not end on: a weak word, or one with no letter or digit."""
    core = token.rstrip(_CLOSERS)
    if core and core[-1] in ".?!…,;:":
        return False  # it carries its own pause
    return not _has_alnum(token) or token.strip(_OPENERS + _CLOSERS).lower() in _WEAK


_LINK: Final = re.compile(r"!?\[([^\]\n]*)\]\([^)\s]*\)")
_EMPHASIS: Final = re.compile(r"(?<!\w)[*_]+|[*_]+(?!\w)")
_RULE: Final = re.compile(r"[-*_=]{3,}")
_HEADING: Final = re.compile(r"#{1,6}")


def speakable(text: str, line_start: bool = True) -> str:
    """``text`` without its markdown (see the module docstring), whitespace collapsed.

    ``line_start`` says whether ``text`` begins a line (line-start markers are removed only
    there and after newlines). Only whole tokens and links are touched, so applying this to
    consecutive clauses gives the same words as applying it to their concatenation.
    """
    text = _LINK.sub(r"\1", text)
    words: list[str] = []
    for number, line in enumerate(text.split("\n")):
        tokens = line.split()
        for index, token in enumerate(tokens):
            at_start = index == 0 and (line_start or number > 0)
            if at_start and (_HEADING.fullmatch(token) or token in ("-", "*", "+", ">")):
                continue
            if token.startswith("```") or _RULE.fullmatch(token):
                continue
            token = _EMPHASIS.sub("", token.replace("`", ""))
            if token:
                words.append(token)
    return " ".join(words)


class ClauseChunker:
    """Streamed LLM text to clauses for TTS (see the module docstring for the rules).

    ``push(text)`` returns the clauses that ``text`` completed; ``flush()`` returns the rest at
    the end of the response and makes the chunker ready for the next one (whose first clause is
    short again); ``reset()`` drops everything (barge-in).
    """

    def __init__(
        self, first_min_words: int = 2, first_max_words: int = 6, max_chars: int = 220
    ) -> None:
        if not 1 <= first_min_words <= first_max_words:
            raise ConfigError(
                f"need 1 <= first_min_words <= first_max_words: {first_min_words}, "
                f"{first_max_words}"
            )
        if max_chars < 20:
            raise ConfigError(f"max_chars must be at least 20: {max_chars}")
        self.first_min_words = first_min_words
        self.first_max_words = first_max_words
        self.max_chars = max_chars
        self._buf = ""
        self._first = True  # the next clause emitted is the response's first
        self._fresh = True  # the buffer starts at the start of the response
        self._prev = ""  # the last non-space character before the buffer

    @property
    def pending(self) -> str:
        """Text received but not yet emitted."""
        return self._buf

    def reset(self) -> None:
        """Forget the current response (nothing is emitted)."""
        self._buf = ""
        self._first = True
        self._fresh = True
        self._prev = ""

    def push(self, text: str) -> list[str]:
        """Add streamed text; return the clauses it completed (possibly none)."""
        if not text:
            return []
        self._buf += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the response: return the remaining clauses, then reset."""
        out = self._drain(final=True)
        if self._buf.strip():
            self._emit(self._buf, out)
        self.reset()
        return out

    # ----------------------------------------------------------------------------------------

    def _drain(self, *, final: bool) -> list[str]:
        out: list[str] = []
        while (cut := self._find_break(final)) is not None:
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
        return out

    def _emit(self, raw: str, out: list[str]) -> None:
        body = raw.lstrip()
        line_start = self._fresh or "\n" in raw[: len(raw) - len(body)]
        clause = speakable(body, line_start)
        if _has_alnum(clause):
            out.append(clause)
            self._first = False
        self._fresh = False
        stripped = raw.rstrip()
        if stripped:
            self._prev = stripped[-1]

    def _find_break(self, final: bool) -> int | None:
        """Where the next clause ends in the buffer, or ``None`` until more text arrives."""
        s = self._buf
        n = len(s)
        tokens = [(m.start(), m.end()) for m in _TOKEN.finditer(s)]
        if not tokens:
            return None
        begin = tokens[0][0]
        words = 0
        ends: list[tuple[int, bool, int]] = []  # earlier token ends: (position, weak, words)
        for k, (a, e) in enumerate(tokens):
            if e - begin > self.max_chars and ends:
                return self._back_off(ends, begin)
            complete = e < n or final
            if not complete:
                return None
            token = s[a:e]
            marker = self._is_list_marker(s, a, token)
            if not marker and _has_alnum(token):
                words += 1
            following = tokens[k + 1] if k + 1 < len(tokens) else None
            space = s[e : following[0] if following else n]
            next_token = s[following[0] : following[1]] if following else None
            next_complete = following is not None and (following[1] < n or final)
            decision = self._punctuation(
                token, marker, words, e - begin, next_token, next_complete, final
            )
            if decision or "\n" in space:
                return e
            if decision is None or (following is None and not final):
                return None  # waiting for the next word, or for the rest of the whitespace
            if e - begin > self.max_chars:
                return e  # one token over the cap on its own
            weak = marker or _is_weak(token)
            if self._first and words >= self.first_max_words:
                return self._first_cut(ends, (e, weak, words))
            ends.append((e, weak, words))
        return None

    def _back_off(self, ends: list[tuple[int, bool, int]], begin: int) -> int:
        floor = begin + self.max_chars // 2
        for position, weak, _ in reversed(ends):
            if position < floor:
                break
            if not weak:
                return position
        return ends[-1][0]

    def _first_cut(self, ends: list[tuple[int, bool, int]], here: tuple[int, bool, int]) -> int:
        for position, weak, words in reversed([*ends, here]):
            if words < self.first_min_words:
                break
            if not weak:
                return position
        return here[0]

    def _is_list_marker(self, s: str, a: int, token: str) -> bool:
        if not _LIST_MARKER.fullmatch(token):
            return False
        before = s[:a]
        text = before.rstrip()
        if "\n" in before[len(text) :]:
            return True
        if text:
            return text[-1] in ".:;!?"
        return self._fresh or self._prev in ".:;!?"

    def _punctuation(
        self,
        token: str,
        marker: bool,
        words: int,
        length: int,
        next_token: str | None,
        next_complete: bool,
        final: bool,
    ) -> bool | None:
        """Whether the token's trailing punctuation ends the clause (``None``: can't tell yet)."""
        core = token.rstrip(_CLOSERS)
        if not core or marker:
            return False
        if core.endswith(("...", "..", "…")) or core in _DASHES or core.endswith(_DASHES[2:]):
            clause_mark = True
        elif core[-1] in "?!":
            return True
        elif core[-1] == ".":
            return self._period(core[:-1].lstrip(_OPENERS), next_token, next_complete, final)
        else:
            clause_mark = core[-1] in ",;:"
        if not clause_mark:
            return False
        if self._first:
            return words >= self.first_min_words
        return length >= self.max_chars // 2

    @staticmethod
    def _period(word: str, next_token: str | None, next_complete: bool, final: bool) -> bool | None:
        lower = word.lower()
        if not word:
            return True
        if lower in _NEVER:
            return False
        if len(word) == 1 and word.isalpha() and word != "I":
            return False  # an initial
        dotted = lower not in _MAYBE and _DOTTED.fullmatch(word) is not None
        numbered = lower in _NUMBERED
        if not (dotted or numbered or lower in _MAYBE):
            return True
        if next_token is None:
            return True if final else None
        initial = next_token.lstrip(_OPENERS)
        if not initial:
            return False if final else None
        if numbered:
            return not initial[0].isdigit()
        if not initial[0].isupper():
            return False
        if not dotted:
            return True
        letters = re.match(r"[A-Za-z]+", initial)
        if letters is None:
            return False
        if letters.end() == len(initial) and not next_complete:
            return None  # "U.S. Th" may become "The" or "Thomas"
        return letters.group().lower() in _OPENING
