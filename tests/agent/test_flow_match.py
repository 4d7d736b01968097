"""Intent matching (keywords, patterns, fuzzy examples) and multi-slot extraction."""

from __future__ import annotations

import re
from datetime import date

import pytest

from harken.agent.flow.match import Matcher, best_intent, extract, fuzzy_score, match_intent
from harken.agent.flow.text import SlotSpec, content_tokens, normalize, phrase_tokens

TODAY = date(2025, 3, 5)


def matcher(
    name: str,
    *,
    keywords: tuple[str, ...] | list[str] = (),
    mode: str = "any",
    exclude: tuple[str, ...] | list[str] = (),
    patterns: tuple[str, ...] | list[str] = (),
    examples: tuple[str, ...] | list[str] = (),
) -> Matcher:
    return Matcher(
        name,
        keywords=tuple(phrase_tokens(k) for k in keywords),
        mode=mode,
        exclude=tuple(phrase_tokens(k) for k in exclude),
        patterns=tuple(re.compile(p, re.I) for p in patterns),
        examples=tuple(tuple(content_tokens(phrase_tokens(e))) for e in examples),
    )


BOOK = matcher(
    "book",
    keywords=["book", "reservation", "table"],
    exclude=["cancel"],
    examples=["i'd like to make a reservation", "do you have space for dinner"],
)
CANCEL = matcher("cancel", keywords=["cancel", "change my booking"])
HOURS = matcher("hours", keywords=["hours", "opening times", "when do you open"])
REPEAT = matcher("repeat", patterns=[r"^(?:sorry )?(?:what|pardon)$", r"\bsay that again\b"])


def hit_of(m: Matcher, text: str) -> tuple[str, float] | None:
    hit = match_intent(m, normalize(text), local=True)
    return None if hit is None else (hit.method, hit.score)


@pytest.mark.parametrize(
    ("text", "method"),
    [
        ("I'd like to book a table", "keywords"),
        ("a reservation for tonight please", "keywords"),
        ("do you have room for dinner", "fuzzy"),
        ("I wanna make a reservaton", "fuzzy"),  # ASR typo: no keyword, close to an example
        ("cancel my table", None),  # excluded
        ("what are your hours", None),
        ("tomorrow", None),  # one shared word with a long example is weak evidence
    ],
)
def test_book_intent(text: str, method: str | None) -> None:
    hit = hit_of(BOOK, text)
    assert (None if hit is None else hit[0]) == method


def test_keywords_match_whole_words_and_phrases() -> None:
    assert hit_of(HOURS, "what are your opening times") == ("keywords", 2.0)
    assert hit_of(HOURS, "when do you open tomorrow") == ("keywords", 4.0)
    assert hit_of(HOURS, "i'm opening a tab") is None  # "opening" alone is not the phrase
    assert hit_of(CANCEL, "cancellation") is None  # whole words only


def test_keywords_all_mode_needs_every_keyword() -> None:
    both = matcher("both", keywords=["window", "table"], mode="all")
    assert hit_of(both, "a table by the window") == ("keywords", 2.0)
    assert hit_of(both, "a table please") is None


def test_patterns_search_the_normalised_text() -> None:
    assert hit_of(REPEAT, "What?") is not None
    assert hit_of(REPEAT, "Sorry, pardon?") is not None  # punctuation is gone
    assert hit_of(REPEAT, "pardon me") is None
    assert hit_of(REPEAT, "could you say that again") is not None
    assert hit_of(REPEAT, "what are your hours") is None


def test_pattern_named_groups_are_reported() -> None:
    m = matcher("party", patterns=[r"party of (?P<party_size>\w+)"])
    hit = match_intent(m, normalize("A party of six, please"), local=True)
    assert hit is not None and hit.groups == (("party_size", "six"),)


def test_builtin_yes_no_intents() -> None:
    yes, no = Matcher("yes", yes_no=True), Matcher("no", yes_no=False)
    assert match_intent(yes, normalize("yeah sure"), local=True) is not None
    assert match_intent(yes, normalize("nope"), local=True) is None
    assert match_intent(no, normalize("no thanks"), local=True) is not None


def test_best_intent_ranks_pattern_keywords_fuzzy_then_score_then_node_first() -> None:
    utt = normalize("I want to cancel my booking")
    hit = best_intent([BOOK, CANCEL], [HOURS], utt)
    assert hit is not None and hit.name == "cancel"
    # more keyword words win across node and global intents
    hours = best_intent([BOOK], [HOURS], normalize("when do you open for a table"))
    assert hours is not None and hours.name == "hours" and not hours.local
    # a tie goes to the node's own intent
    tie = matcher("tie", keywords=["hours"])
    hit = best_intent([tie], [HOURS], normalize("hours"))
    assert hit is not None and hit.name == "tie" and hit.local
    # a pattern beats keywords
    table_what = matcher("what_table", patterns=[r"^what table$"])
    hit = best_intent([BOOK], [table_what], normalize("what table"))
    assert hit is not None and hit.method == "pattern"
    assert best_intent([BOOK], [HOURS], normalize("the weather is nice")) is None


def test_fuzzy_score_discounts_a_lone_shared_word() -> None:
    assert fuzzy_score(["opening"], ["opening", "hours"]) == 1.0  # half the example: strong
    assert fuzzy_score(["tomorrow"], ["get", "table", "tomorrow"]) < 0.8
    assert fuzzy_score([], ["x"]) == 0.0


# -- extraction ---------------------------------------------------------------------------------

PARTY = ("party_size", SlotSpec(type="party_size"))
DATE = ("date", SlotSpec(type="date"))
TIME = ("time", SlotSpec(type="time", assume="pm"))
NAME = ("name", SlotSpec(type="name"))
PHONE = ("phone", SlotSpec(type="phone"))
ALL = [PARTY, DATE, TIME, NAME, PHONE]


@pytest.mark.parametrize(
    ("text", "asked", "expected"),
    [
        (
            "a table for 4 tomorrow at 7",
            None,
            {"party_size": 4, "date": "2025-03-06", "time": "19:00"},
        ),
        (
            "for 7 at 8 on friday",
            None,
            {"party_size": 7, "date": "2025-03-07", "time": "20:00"},
        ),
        ("a table for 7 tonight", None, {"party_size": 7, "date": "2025-03-05"}),
        ("six", PARTY, {"party_size": 6}),
        ("six", TIME, {"time": "18:00"}),
        ("6 at 8", PARTY, {"party_size": 6, "time": "20:00"}),
        ("8 for 6 people", TIME, {"party_size": 6, "time": "20:00"}),
        (
            "four people at seven thirty under the name of smith",
            None,
            {"party_size": 4, "time": "19:30", "name": "Smith"},
        ),
        ("smith party of four", NAME, {"party_size": 4, "name": "Smith"}),
        ("it's 555 867 5309 and for 2", None, {"phone": "5558675309", "party_size": 2}),
        ("hello", None, {}),
    ],
)
def test_one_utterance_fills_several_slots(
    text: str, asked: tuple[str, SlotSpec] | None, expected: dict[str, object]
) -> None:
    assert extract(normalize(text), ALL, asked, TODAY) == expected


def test_extracted_words_are_not_read_twice() -> None:
    # "7 pm" is the time; the party parser must not also read the 7
    assert extract(normalize("for 7 pm"), [PARTY, TIME], None, TODAY) == {"time": "19:00"}
