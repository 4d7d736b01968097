"""Is what the caller has said (or typed) so far a whole answer to what the flow asked?

The turn detector and the keypad gather ask this while the caller pauses, before the session
acts on anything; nothing here changes the session. It is dialogue-aware endpointing: the audio
and the words of a fragment ("Sure, it's five five five.", "Hi.") often read finished, while the
conversation says they are not (a phone number was asked for, and three digits are not one).

:func:`text_entry` answers for a transcript so far:

``True``
    a whole answer to the question just asked: a yes to a read-back, or a valid value for the
    asked slot (a phone number only from 10 digits on: a shorter valid one may be a caller
    pausing between groups). The turn may end at once.
``False``
    nothing the flow could act on yet, in words people start with (it would answer "Sorry, I
    didn't catch that" to "Hi." or "Oh, sorry."; other misses are more often misheard words, "APM."
    for "Eight pm.", and get no opinion), or a value
    for the asked slot that breaks its rules ("that number sounds too short"): the caller is
    probably still talking; also a bare "no" to a read-back (the change mostly follows: "No
    wait, | make it five people", which Whisper may hear as "No way."). The turn waits longer.
``None``
    no opinion: an intent, values for other slots, free text, a yes or no outside a read-back,
    or a session that is not listening.

:func:`keys_complete` answers the same for keypad keys typed so far.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harken.agent.flow.compiled import all_slot_specs
from harken.agent.flow.match import extract
from harken.agent.flow.rules import check
from harken.agent.flow.slots import yes_no_of
from harken.agent.flow.text import normalize
from harken.speech.endpoint import is_opener

if TYPE_CHECKING:
    from harken.agent.flow.session import FlowSession

__all__ = ["MISS_WORDS", "SPOKEN_PHONE_DIGITS", "keys_complete", "text_entry"]

#: digits from which a spoken, valid phone number counts as whole (groups of 3-4 are paused over)
SPOKEN_PHONE_DIGITS = 10
#: a miss of at most this many opener words counts as a start ("Hi, um", "Oh, sorry")
MISS_WORDS = 3
# slot types whose valid value is a whole answer; free text ("Maria" ... "Garcia") is not
_WHOLE = frozenset(("phone", "date", "time", "party_size", "number", "choice", "yes_no"))


def text_entry(session: FlowSession, text: str) -> bool | None:
    """Is ``text`` a whole answer to what the flow asked? (see the module docstring)"""
    s = session
    if s._done or s._pending is not None:
        return None
    utt = normalize(text)
    if not utt.toks:
        return None
    hit = s._intent(utt)
    if s._mode in ("confirm", "correct"):
        said = extract(utt, all_slot_specs(s._flow), None, s._today)
        if said:
            return None
        answer = yes_no_of(utt.toks)
        if answer is not None and s._mode == "confirm":
            # a yes confirms; a bare no to a read-back is mostly followed by the change ("No
            # wait, | make it five people", which Whisper may even hear as "No way.")
            return True if answer.value is True else (None if len(utt.toks) > 2 else False)
        if answer is not None:
            return None
        return None if hit is not None else False
    asked = s._asked
    found = s._values(utt, hit)
    if asked is not None and asked.name in found and (hit is None or not hit.strong):
        value = found[asked.name]
        if check(asked.type, value, asked.rules, s._today) is not None:
            return False  # "that number sounds too short": more is coming, or a correction
        if asked.type == "phone":
            return sum(c.isdigit() for c in str(value)) >= SPOKEN_PHONE_DIGITS or None
        return True if asked.type in _WHOLE else None
    if hit is not None or found:
        return None
    if yes_no_of(utt.toks) is not None:
        return None  # "No thanks." skips an optional slot; a yes or no may lead into more
    # a miss: nothing the flow understands yet. Words people start with ("Hi.", "Oh, sorry.",
    # "Um.") are a start; other misses are more often misheard words ("APM." for "Eight pm.")
    # than a caller who is not done, and waiting on them only delays "Sorry, I didn't catch that"
    return False if is_opener(text, max_words=MISS_WORDS) else None


def keys_complete(session: FlowSession, keys: str) -> bool:
    """Are these keys (typed so far, no ``#`` yet) a whole entry now, so the caller need not
    wait for ``#`` or the gather timeout? A yes/no key, a choice's number, a key bound to a
    global intent that no longer binding extends, or a full-length phone number."""
    s = session
    if s._done or s._pending is not None or not keys:
        return False
    asked = s._asked if s._mode == "node" else None
    if asked is not None and asked.type == "phone":
        body = (s._dtmf + keys).rsplit("*", 1)[-1]
        return len(body) >= asked.rules.max_digits
    if asked is not None and asked.type in ("number", "party_size"):
        return False  # one key or two: only "#" or the timeout can tell
    if asked is not None and asked.type == "choice" and keys.isdigit():
        return len(asked.spec.options) < 10 and 1 <= int(keys) <= len(asked.spec.options)
    yes_no = s._mode == "confirm" or (asked is not None and asked.type == "yes_no")
    if yes_no and keys in ("1", "2"):
        return True
    bound = [g.dtmf for g in s._flow.globals if g.dtmf]
    return keys in bound and not any(b != keys and b.startswith(keys) for b in bound)
