"""Typed slot parsers: caller text to slot values, robust to speech-to-text output.

Every parser takes a :class:`~harken.agent.flow.text.ParseInput` and a
:class:`~harken.agent.flow.text.SlotSpec` and answers the first value it finds with the token span
it used, or None. With ``lenient`` (the slot was just asked for) a bare value counts; otherwise a
parser wants a cue, so that "a table for 4 tomorrow at 7" fills three slots and nothing is
grabbed by mistake.

========== ================================ =========================================== ==========
type       value                            understood                                  cued by
========== ================================ =========================================== ==========
number     int                              ``6``, ``six``, ``twenty one``              (asked
                                                                                        only)
party_size int                              ``6 people``, ``a party of four``, ``for    the forms
                                            4``, ``two of us``, ``just me``, ``me and   shown
                                            my wife``, ``a dozen``; asked: ``six``, and
                                            ``for``/``to`` misheard for four/two
date       ``"YYYY-MM-DD"``                 see :mod:`~harken.agent.flow.slots_time`    date words
time       ``"HH:MM"``                      see :mod:`~harken.agent.flow.slots_time`    at, am/pm
name       ``"Ana Smith"`` (title case)     ``my name is ana smith``, ``it's under      ``my name
                                            bob``; asked: ``bob``, ``it's bob please``  is`` etc.
phone      digit string (``+`` kept)        ``five five five one two three four``,      7+ digits
                                            ``555 1234``, ``double five``, ``oh``=0
yes_no     bool                             yes/yeah/sure/correct/that's right vs       (asked
                                            no/nope/wrong/that's not right              only)
choice     the option's name                the option or a synonym as words; asked:    a synonym
                                            fuzzy (token-set ratio >= threshold)
text       the transcript as said           anything                                    (asked
                                                                                        only)
========== ================================ =========================================== ==========
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from harken.agent.flow.slots_time import WEEKDAYS, find_date, find_time, spoken_date, spoken_time
from harken.agent.flow.text import (
    TEENS,
    TENS,
    UNITS,
    ParseInput,
    SlotMatch,
    SlotSpec,
    content_tokens,
    number_at,
    phrase_at,
    token_set_ratio,
    words,
)

__all__ = ["PARSERS", "PRIORITY", "SLOT_TYPES", "SlotParser", "spoken", "yes_no_of"]

SlotParser = Callable[[ParseInput, SlotSpec], SlotMatch | None]


def _first(toks: Sequence[str], test: Callable[[int], SlotMatch | None]) -> SlotMatch | None:
    for i, t in enumerate(toks):
        if t:
            found = test(i)
            if found is not None:
                return found
    return None


# -- numbers and party sizes ---------------------------------------------------------------------

_HOMOPHONES = {"for": 4, "fore": 4, "to": 2, "too": 2, "won": 1, "ate": 8}
_PEOPLE = words("people persons person guests guest adults diners pax ppl peoples covers seats")
_PARTY_CUES = (
    ("party", "of"),
    ("group", "of"),
    ("table", "for"),
    ("table", "of"),
    ("booking", "for"),
    ("reservation", "for"),
    ("for",),
)
_PARTNERS = words(
    "wife husband partner friend girlfriend boyfriend date mom mum dad mother father son "
    "daughter brother sister colleague fiance fiancee"
)
_SOLO = (("just", "me"), ("only", "me"), ("just", "myself"), ("me", "alone"), ("just", "one"))


def _count_at(toks: Sequence[str], i: int) -> tuple[int, int] | None:
    if phrase_at(toks, i, ("a", "dozen")) or phrase_at(toks, i, ("one", "dozen")):
        return 12, i + 2
    if toks[i] == "dozen":
        return 12, i + 1
    if phrase_at(toks, i, ("a", "couple")):
        return 2, i + 2
    return number_at(toks, i, max_digits=3)


def _party_at(toks: Sequence[str], i: int) -> SlotMatch | None:
    n = len(toks)
    for phrase in _SOLO:
        if phrase_at(toks, i, phrase):
            return SlotMatch(1, i, i + len(phrase))
    if phrase_at(toks, i, ("me", "and", "my")) and i + 3 < n:
        if toks[i + 3] in _PARTNERS:
            return SlotMatch(2, i, i + 4)
        more = number_at(toks, i + 3, max_digits=2)
        if more is not None:
            return SlotMatch(more[0] + 1, i, more[1])
    count = _count_at(toks, i)
    if count is not None:
        value, j = count
        if j < n and toks[j] in _PEOPLE:
            return SlotMatch(value, i, j + 1)
        if phrase_at(toks, j, ("of", "us")):
            return SlotMatch(value, i, j + 2)
        if j + 2 < n and toks[j] == "in" and toks[j + 2] in ("party", "group"):
            return SlotMatch(value, i, j + 3)
    if toks[i] in _HOMOPHONES and i + 1 < n and toks[i + 1] in _PEOPLE:
        return SlotMatch(_HOMOPHONES[toks[i]], i, i + 2)  # "for people" is "four people"
    for cue in _PARTY_CUES:
        if phrase_at(toks, i, cue):
            k = i + len(cue)
            if k < n and toks[k]:
                count = _count_at(toks, k)
                if count is not None:
                    return SlotMatch(count[0], i, count[1])
                if cue[-1] == "for" and toks[k] in ("to", "too", "for", "fore"):
                    after = toks[k + 1] if k + 1 < n else ""
                    if after in ("", "please", "tonight", "tomorrow", "today", "at", "on"):
                        return SlotMatch(_HOMOPHONES[toks[k]], i, k + 1)
    return None


def _short_homophone(toks: Sequence[str]) -> SlotMatch | None:
    words = [(i, t) for i, t in enumerate(toks) if t and t not in ("please", "um", "uh", "just")]
    if 1 <= len(words) <= 2 and words[0][1] in _HOMOPHONES:
        i = words[0][0]
        return SlotMatch(_HOMOPHONES[toks[i]], i, i + 1)
    return None


def find_party_size(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """A party size: cued forms anywhere; when asked, also the first bare number."""
    found = _first(inp.toks, lambda i: _party_at(inp.toks, i))
    if found is not None or not inp.lenient:
        return found
    found = _first(inp.toks, lambda i: _number_match(inp.toks, i, 3))
    return found if found is not None else _short_homophone(inp.toks)


def _number_match(toks: Sequence[str], i: int, digits: int) -> SlotMatch | None:
    found = _count_at(toks, i) if digits <= 3 else number_at(toks, i, max_digits=digits)
    return SlotMatch(found[0], i, found[1]) if found is not None else None


def find_number(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """A plain number; only when asked for (a bare number is too ambiguous otherwise)."""
    if not inp.lenient:
        return None
    found = _first(inp.toks, lambda i: _number_match(inp.toks, i, 6))
    return found if found is not None else _short_homophone(inp.toks)


# -- yes / no ------------------------------------------------------------------------------------

_UNDECIDED = (("dont", "know"), ("not", "sure"), ("no", "idea"), ("i", "dunno"), ("dunno",))
_NO = tuple(
    tuple(p.split())
    for p in (
        "no",
        "nope",
        "nah",
        "naw",
        "negative",
        "wrong",
        "incorrect",
        "not right",
        "not correct",
        "not quite",
        "dont",
        "do not",
        "not really",
        "skip",
        "rather not",
        "cancel",
    )
)
_YES = tuple(
    tuple(p.split())
    for p in (
        "yes",
        "yeah",
        "yea",
        "yep",
        "yup",
        "ya",
        "yah",
        "yas",
        "sure",
        "correct",
        "right",
        "ok",
        "okay",
        "sounds good",
        "perfect",
        "great",
        "absolutely",
        "definitely",
        "certainly",
        "of course",
        "go ahead",
        "affirmative",
        "uh huh",
        "mhm",
        "mm hmm",
        "exactly",
        "thats it",
        "alright",
        "all right",
        "fine",
        "good",
        "please do",
        "you bet",
        "indeed",
        "yes please",
    )
)


# Words that agree with a statement ("that's right", "perfect") rather than say yes to an offer
# ("anything else?"): with ``strict`` they are not an answer.
_AGREEING = frozenset(
    tuple(p.split())
    for p in (
        "correct",
        "right",
        "ok",
        "okay",
        "sounds good",
        "perfect",
        "great",
        "exactly",
        "thats it",
        "alright",
        "all right",
        "fine",
        "good",
        "indeed",
        "wrong",
        "incorrect",
        "not right",
        "not correct",
        "not quite",
        "skip",
        "cancel",
    )
)


def yes_no_of(toks: Sequence[str], *, strict: bool = False) -> SlotMatch | None:
    """The first yes or no said, as a bool; "I don't know"/"not sure" said first answer None.

    ``strict`` (the built-in ``yes``/``no`` intents) ignores words that agree or disagree with a
    statement ("that's right", "perfect", "wrong"): they answer "is that right?", not "anything
    else?", where "perfect, thanks" is not a yes.
    """
    for i, t in enumerate(toks):
        if not t:
            continue
        if any(phrase_at(toks, i, p) for p in _UNDECIDED):
            return None
        for value, phrases in ((False, _NO), (True, _YES)):
            for phrase in phrases:
                if phrase_at(toks, i, phrase) and not (strict and phrase in _AGREEING):
                    return SlotMatch(value, i, i + len(phrase))
    return None


def find_yes_no(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """Yes or no; only when asked (out of context a "yes" answers nothing)."""
    return yes_no_of(inp.toks) if inp.lenient else None


# -- names ---------------------------------------------------------------------------------------

_NAME_STOP = words(
    "a an the and or but for to at on in of with from by is are was be it its this that "
    "these those i me my mine we us our you your he she they them his her their what why how "
    "when where who which yes yeah yep no nope not sure ok okay please thanks thank hello hi "
    "hey um uh er ah oh well so just like want wanted would could can need booking book "
    "reservation reserve table tonight today tomorrow people person party phone number name "
    "time date day am pm oclock sorry again repeat help operator human goodbye bye nothing "
    "something anything here there looking calling wondering trying going gonna wanna do "
    "does did dont know think got get have has had make made put under called call speak "
    "talk someone somebody agent im id ill ive its thats whats hours open address parking "
    "correct right wrong fine good great perfect cancel change actually one two three four "
    "five six seven eight nine ten eleven twelve zero next last week weekend tonight evening "
    "morning afternoon night lunch dinner brunch breakfast"
) | frozenset(WEEKDAYS)
_STRONG_NAME_CUES = tuple(
    tuple(p.split())
    for p in (
        "my name is",
        "my names",
        "the name is",
        "the names",
        "name is",
        "names",
        "under the name of",
        "under the name",
        "its under",
        "booking under",
        "reservation under",
        "put it under",
        "put it down under",
        "call me",
    )
)
_WEAK_NAME_CUES = tuple(
    tuple(p.split()) for p in ("this is", "its for", "i am", "im", "its", "under", "for")
)
_FILLERS = words(
    "um uh er ah oh well so yeah yes yep sure ok okay right it its is thats that just the name my"
)
_TRAILERS = words("please thanks thank you thats it")


def _name_like(tok: str) -> bool:
    return bool(tok) and tok.isalpha() and tok not in _NAME_STOP and len(tok) > 1


def _name_run(inp: ParseInput, i: int) -> SlotMatch | None:
    words: list[str] = []
    j = i
    while j < len(inp.toks) and len(words) < 3 and _name_like(inp.toks[j]):
        words.append(inp.raw[j].title())
        j += 1
    return SlotMatch(" ".join(words), i, j) if words else None


def find_name(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """A person's name, title-cased.

    Out of turn only after a strong cue ("my name is", "it's under", "under the name"); when
    asked, also after "this is"/"I'm"/"it's", or as a short answer of at most three name-like
    words after fillers ("yeah it's ana smith please" -> "Ana Smith").
    """
    toks = inp.toks
    cues = _STRONG_NAME_CUES + (_WEAK_NAME_CUES if inp.lenient else ())
    for i, t in enumerate(toks):
        if not t:
            continue
        for cue in cues:
            if phrase_at(toks, i, cue):
                found = _name_run(inp, i + len(cue))
                if found is not None:
                    return SlotMatch(found.value, i, found.end)
    if not inp.lenient:
        return None
    words = [i for i, t in enumerate(toks) if t]
    while words and toks[words[0]] in _FILLERS:
        words.pop(0)
    while words and toks[words[-1]] in _TRAILERS:
        words.pop()
    if not words or len(words) > 3 or words != list(range(words[0], words[-1] + 1)):
        return None
    found = _name_run(inp, words[0])
    return found if found is not None and found.end == words[-1] + 1 else None


# -- phone numbers -------------------------------------------------------------------------------

_DIGIT_WORDS = {**{w: str(v) for w, v in UNITS.items()}, "oh": "0", "o": "0", "nought": "0"}


def _digits_at(toks: Sequence[str], i: int) -> tuple[str, int] | None:
    t = toks[i]
    if t.isdigit():
        return t, i + 1
    if t in ("double", "triple") and i + 1 < len(toks):
        single = _digits_at(toks, i + 1)
        if single is not None and len(single[0]) == 1:
            return single[0] * (2 if t == "double" else 3), single[1]
        return None
    if t in _DIGIT_WORDS:
        return _DIGIT_WORDS[t], i + 1
    if t in TEENS:
        return str(TEENS[t]), i + 1
    if t in TENS:
        found = number_at(toks, i)
        return (str(found[0]), found[1]) if found else None
    if t == "hundred":
        return "00", i + 1
    if t == "thousand":
        return "000", i + 1
    return None


def find_phone(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """A phone number: the first run of spoken or written digits.

    Out of turn a run needs 7 digits; when asked, ``spec.min_digits`` (so a short attempt can be
    answered by the slot's digit-count check instead of being ignored). "plus" keeps a ``+``.
    """
    toks = inp.toks
    need = spec.min_digits if inp.lenient else 7
    i = 0
    while i < len(toks):
        start, plus = i, False
        if toks[i] == "plus":
            plus, i = True, i + 1
        digits = ""
        while i < len(toks) and toks[i]:
            chunk = _digits_at(toks, i)
            if chunk is None:
                break
            digits += chunk[0]
            i = chunk[1]
        if len(digits) >= need:
            return SlotMatch(("+" if plus else "") + digits, start, i)
        i = max(i, start + 1)
    return None


# -- choices and free text -----------------------------------------------------------------------


def find_choice(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """One of the slot's options: an option or synonym said as words (the earliest wins); when
    asked, otherwise the best fuzzy match at or above the slot's threshold."""
    best: SlotMatch | None = None
    for value, phrases in spec.options:
        for phrase in phrases:
            for i in range(len(inp.toks)):
                if phrase_at(inp.toks, i, phrase) and (best is None or i < best.start):
                    best = SlotMatch(value, i, i + len(phrase))
    if best is not None or not inp.lenient:
        return best
    said = content_tokens(inp.toks)
    scored = [
        (token_set_ratio(said, content_tokens(p) or list(p)), value)
        for value, phrases in spec.options
        for p in phrases
    ]
    if scored:
        score, value = max(scored, key=lambda s: s[0])
        if score >= spec.threshold:
            return SlotMatch(value, 0, len(inp.toks))
    return None


def find_text(inp: ParseInput, spec: SlotSpec) -> SlotMatch | None:
    """The whole transcript, as said; only when asked."""
    text = inp.text.strip()
    return SlotMatch(text, 0, len(inp.toks)) if inp.lenient and text else None


PARSERS: dict[str, SlotParser] = {
    "number": find_number,
    "party_size": find_party_size,
    "date": find_date,
    "time": find_time,
    "name": find_name,
    "phone": find_phone,
    "yes_no": find_yes_no,
    "choice": find_choice,
    "text": find_text,
}
SLOT_TYPES = tuple(PARSERS)
# The order slots are looked for in one utterance: the most self-evident forms claim their words
# first (a phone number's digits before a party size, "at 7 pm" before "for 4").
PRIORITY = {
    t: i
    for i, t in enumerate(
        ("phone", "date", "time", "party_size", "number", "choice", "name", "yes_no", "text")
    )
}


def _spoken_phone(digits: str) -> str:
    plus, body = ("plus ", digits[1:]) if digits.startswith("+") else ("", digits)
    if len(body) == 10:
        groups = [body[:3], body[3:6], body[6:]]
    else:
        groups = [body[i : i + 3] for i in range(0, len(body), 3)]
    return plus + ", ".join(" ".join(g) for g in groups)


def spoken(slot_type: str, value: Any) -> str:
    """A slot value as it should be spoken: dates and times in words, phone digits grouped."""
    if value is None:
        return ""
    if slot_type == "date" and isinstance(value, str):
        return spoken_date(value)
    if slot_type == "time" and isinstance(value, str):
        return spoken_time(value)
    if slot_type == "phone" and isinstance(value, str):
        return _spoken_phone(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
