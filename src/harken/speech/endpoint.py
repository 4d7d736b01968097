"""When does a paused caller's turn end? The decision rules, free of I/O and timers.

:class:`~harken.speech.turn.TurnStage` gathers the evidence at each VAD stop (Smart Turn's
probability, the transcript of the turn up to the stop) and asks :func:`plan` how much silence
after the end of speech must pass before the turn ends; speech resuming earlier cancels it.

The rules, first match wins (``p`` is Smart Turn's probability, "text" the turn's transcript):

=================================================  ==========================  ===========
evidence                                           silence after the speech    reason
=================================================  ==========================  ===========
the text trails off (``text_complete`` is False:   ``silence_s`` (backstop)    ``silence``
"and", "um", "the", a comma, ...)
no model verdict (model off, failed, or skipped    ``fallback_s``, or 0 if     ``timer`` /
under load)                                        the text reads complete     ``text``
``p >= threshold``                                 0, or ``opener_s`` (below)  ``model``
text complete and ``p >= text_threshold``          0, or ``opener_s``          ``text``
(``text="vote"``)
a question or a farewell (``text_settled``),       0                           ``text``
whatever ``p`` (``text="vote"``)
words that do not trail off, the model unsure     ``unsure_s``                ``text``
nothing says complete                              ``silence_s``               ``silence``
=================================================  ==========================  ===========

**The dialogue's word** (``entry``, from the brain's ``text_entry`` hook, when
``TurnParams.entry`` is on) comes before the table: ``True`` (the words are a whole answer to
what the agent asked: "For three." to "how many?", ten digits when a phone number was asked
for) ends the turn at once, reason ``entry`` (an opener still waits ``opener_s``: "Okay," is a
yes to "anything else?" and goes on "goodbye"), unless the words trail off ("Tuesday and"; a
trailing comma alone does not count); ``False`` (nothing the agent can act on yet, "Hi.", or
a value that breaks the slot's rules, "Sure, it's five five five.") makes the table's wait at
least ``partial_s``, as do words that end on a wish whose object is still to come ("I'd like
to book.", :func:`text_partial`; with or without a dialogue). Fragments like these read
complete in both the audio and the words; only the conversation says the caller is not done.

**The caller's pace.** Some callers pause mid-sentence after words that are whole in both
sound and sense: "Tuesday ... at six pm", "At seven thirty ... in the evening", "I was
wondering if I could book a table ... for three people". Nothing in the fragment says more is
coming; the caller's own habit does. :class:`~harken.speech.turn.TurnStage` keeps the longest
pause after which this caller went on speaking in the same turn (this turn and the one
before; a pause the turn ended in counts too when the caller went on before anyone could
answer the reply), and ``pace_s`` (that pause times ``pace_ratio``, 1.05, plus
``pace_margin_s``, 40 ms, at most ``pace_max_s``) is the least wait of every end but a
question or a farewell, reason ``pace``. A caller who never pauses mid-turn never waits it; a
hesitant caller's answer comes that much later, as a person's would.

**Openers.** A turn whose whole text is one or two words that people very often say *before*
the rest of a sentence ("okay", "yes", "no", "sorry", "oh", "actually", "wait", "hi", "no
wait", ...) ends only after ``opener_s`` of silence, whatever the model says: "Okay, | thanks,
goodbye" and "Sorry, | what time do you close?" pause 200-400 ms at the comma, long enough for
the VAD's 200 ms stop, and Smart Turn calls a lone "Okay." complete. The price is that a bare
"Yes." as a whole answer waits ``opener_s`` (0.6 s) instead of ~0.2 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from harken.speech.turn import TurnParams

__all__ = [
    "INCOMPLETE_WORDS",
    "OPENERS",
    "Plan",
    "decide",
    "is_opener",
    "plan",
    "text_complete",
    "text_partial",
    "text_settled",
]

_INCOMPLETE = """
and but or nor because cause cuz although though unless whereas whether if than
um umm uh uhh er erm hmm
the a an my your our their every each
to of for with at from into onto towards toward via per between during against
i'm i'd i'll i've we're you're they're it's that's there's
"""
#: words after which an English sentence is not over (when the transcript does not end in "?")
INCOMPLETE_WORDS: Final = frozenset(_INCOMPLETE.split())
#: "<thing> is" at the end: a value is coming ("My name is." is a pause, "Yes, it is." is not)
_COPULAS: Final = frozenset(("is", "are", "was", "will", "would"))
_VALUE_NOUNS: Final = frozenset(
    [
        "name",
        "names",
        "number",
        "phone",
        "email",
        "address",
        "date",
        "day",
        "time",
        "party",
        "size",
        "booking",
        "reservation",
    ]
)

_OPENERS = """
okay ok yes yeah yep yup no nope sure sorry oh ah hi hello hey actually well so wait
alright right um uh hmm and but also now then look listen
"""
#: words a caller often says first and then goes on after a short pause ("Okay, | ...")
OPENERS: Final = frozenset(_OPENERS.split())
_TRAILING_OPEN: Final = (",", ";", ":", "-", "\u2013", "\u2014", "...", "\u2026")
_OPEN: Final = "".join(dict.fromkeys("".join(_TRAILING_OPEN)))  # the same, to strip
_WORD = re.compile(r"[a-z0-9']+")  # digits count: "It's 555-8675." ends in a number


def _bare(text: str) -> str:
    """``text`` without surrounding whitespace, quotes and a closing bracket."""
    return text.strip().strip("\"'\u201d\u2019)").rstrip()


def text_complete(text: str) -> bool | None:
    """Does this transcript read like a finished turn? True, False, or None (can't tell)."""
    t = _bare(text)
    if not t:
        return None
    if t.endswith(_TRAILING_OPEN):
        return False
    if t.endswith("?"):
        return True
    words = _WORD.findall(t.lower())
    if words and words[-1] in INCOMPLETE_WORDS:
        return False
    if len(words) >= 2 and words[-1] in _COPULAS and words[-2] in _VALUE_NOUNS:
        return False
    if t.endswith((".", "!")):
        return True
    return None


_FAREWELLS: Final = frozenset(("bye", "goodbye", "byebye"))  # "bye-bye" ends in "bye"


def text_settled(text: str) -> bool:
    """The words end a turn whatever the model says: a question ("When are you open?") or a
    farewell ("Actually, goodbye."). Smart Turn gives such lines 0.03-0.3 on 8 kHz speech, which
    cost them the ``unsure_s`` wait; the transcriber writes the "?" only once the question is
    whole."""
    # "Goodbye and": more is coming (an unpunctuated "... wrong number bye" is not)
    if text_complete(text) is False:
        return False
    t = _bare(text)
    words = _WORD.findall(t.lower())
    return t.endswith("?") or (bool(words) and words[-1] in _FAREWELLS)


# verbs a caller names first and then says what: "I'd like to book | a table for four"
_WANTS: Final = frozenset(
    {"book", "reserve", "make", "order", "get", "change", "cancel", "move", "add", "schedule"}
    | {"arrange", "ask", "know"}
)


def text_partial(text: str) -> bool:
    """The words end on a wish whose object has not been said: "I'd like to book.", "I want
    to make." (Whisper writes the full stop anyway). Such a turn waits ``partial_s``."""
    words = _WORD.findall(_bare(text).lower())
    return len(words) >= 2 and words[-2] == "to" and words[-1] in _WANTS


def is_opener(text: str, max_words: int = 2) -> bool:
    """True when the whole of ``text`` is one or two opener words ("Okay.", "No, wait.")."""
    words = _WORD.findall(text.lower())
    return 0 < len(words) <= max_words and all(w in OPENERS for w in words)


def decide(
    prob: float | None, text: bool | None, params: TurnParams
) -> tuple[bool, str, float | None]:
    """(complete now, reason, confidence) from the model's probability and the transcript's
    verdict alone: the immediate part of :func:`plan`, without its waits.

    ``prob`` is None when the model is off or its answer has not come back.
    """
    if params.text == "off":
        text = None
    if not params.model:
        return (True, "text", None) if text is True else (False, "", None)
    if prob is None:
        return False, "", None
    if text is False:
        return False, "", prob  # veto
    if prob >= params.threshold:
        return True, "model", prob
    if text is True and params.text == "vote" and prob >= params.text_threshold:
        return True, "text", prob
    return False, "", prob


@dataclass(frozen=True, slots=True)
class Plan:
    """End the turn once ``wait_s`` of silence has followed the end of speech."""

    wait_s: float
    reason: str
    confidence: float | None


def plan(
    prob: float | None,
    text: str | None,
    params: TurnParams,
    entry: bool | None = None,
    pace_s: float = 0.0,
) -> Plan:
    """The silence after which a paused turn ends (see the module docstring for the table).

    ``prob`` is None when the model is off, failed or was skipped; ``text`` is None when no
    transcript of the turn is known; ``entry`` is the dialogue's word on ``text`` (None: none);
    ``pace_s`` is the least wait this caller's own pauses ask for (see the module docstring;
    a question or a farewell does not wait it). No wait is longer than the backstop,
    ``silence_s``.
    """
    chosen = _plan_entry(prob, text, params, entry)
    if pace_s > chosen.wait_s and not (
        text is not None and params.text != "off" and text_settled(text)
    ):
        chosen = Plan(pace_s, "pace", chosen.confidence)
    if chosen.wait_s > params.silence_s:
        return Plan(params.silence_s, chosen.reason, chosen.confidence)
    return chosen


def _plan_entry(
    prob: float | None, text: str | None, params: TurnParams, entry: bool | None
) -> Plan:
    if not params.entry or text is None or params.text == "off":
        entry = None
    if entry is True and text is not None and text_complete(_bare(text).rstrip(_OPEN) + "."):
        # an opener still waits: "Okay," is a yes to "anything else?" and goes on "goodbye"
        return Plan(params.opener_s if is_opener(text) else 0.0, "entry", prob)
    chosen = _plan(prob, text, params)
    if text is not None and params.text != "off" and text_partial(text):
        entry = False
    if entry is False and chosen.wait_s < params.partial_s:
        chosen = Plan(params.partial_s, "entry", chosen.confidence)
    return chosen


def _plan(prob: float | None, text: str | None, params: TurnParams) -> Plan:
    if params.text == "off":
        text = None
    verdict = None if text is None else text_complete(text)
    if verdict is False:
        return Plan(params.silence_s, "silence", prob)
    guard = params.opener_s if text is not None and is_opener(text) else 0.0
    if not params.model or prob is None:
        if verdict is True:
            return Plan(guard, "text", prob)
        if not params.model:
            return Plan(params.silence_s, "silence", prob)
        return Plan(params.fallback_s, "timer", prob)
    done, reason, conf = decide(prob, verdict, params)
    if done:
        return Plan(guard, reason, conf)
    if params.text == "vote" and text is not None and text_settled(text):
        return Plan(guard, "text", prob)
    if text is not None and text.strip():
        # the words read complete, or unpunctuated ("It's 555-867-5309"): the model is unsure
        return Plan(max(guard, params.unsure_s), "text", prob)
    return Plan(params.silence_s, "silence", prob)
