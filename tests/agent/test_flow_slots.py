"""Slot parsers: tables of ASR-ish caller text and the values they must (or must not) give."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from harken.agent.flow.match import parse_with
from harken.agent.flow.rules import Rules, check
from harken.agent.flow.slots import spoken
from harken.agent.flow.slots_time import minutes_of, spoken_date, spoken_time
from harken.agent.flow.text import SlotSpec, normalize, phrase_tokens, token_set_ratio

TODAY = date(2025, 3, 5)  # a Wednesday


def parse(slot_type: str, text: str, *, lenient: bool = True, **spec: Any) -> Any:
    m = parse_with(SlotSpec(type=slot_type, **spec), normalize(text), TODAY, lenient=lenient)
    return None if m is None else m.value


# -- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "toks"),
    [
        ("Seven P.M.", ("seven", "pm")),
        ("7pm", ("7", "pm")),
        ("7 p m", ("7", "pm")),
        ("7.30", ("7:30",)),
        ("twenty-one", ("twenty", "one")),
        ("That's right!", ("thats", "right")),
        ("O'Brien, please.", ("obrien", "please")),
        ("2025-03-14", ("2025/03/14",)),
        ("555-867-5309", ("555", "867", "5309")),
        ("“Quoted” words", ("quoted", "words")),
    ],
)
def test_normalize(text: str, toks: tuple[str, ...]) -> None:
    assert normalize(text).toks == toks


def test_raw_tokens_keep_apostrophes() -> None:
    assert normalize("it's O'Brien").raw == ("it's", "o'brien")


def test_token_set_ratio() -> None:
    assert token_set_ratio(["book", "table"], ["table", "book"]) == 1.0
    assert token_set_ratio(["reservaton"], ["reservation"]) > 0.9
    assert token_set_ratio(["parking"], ["hours"]) < 0.5
    assert token_set_ratio([], ["x"]) == 0.0
    assert phrase_tokens("What's the Address?") == ("whats", "the", "address")


# -- numbers and party sizes --------------------------------------------------------------------

PARTY = [
    ("six", 6),
    ("6", 6),
    ("a party of four", 4),
    ("for 4", 4),
    ("two people", 2),
    ("table for two", 2),
    ("the four of us", 4),
    ("there'll be five of us", 5),
    ("just me", 1),
    ("me and my wife", 2),
    ("me and my 3 kids", 4),
    ("a dozen people", 12),
    ("twenty one", 21),
    ("we are 5", 5),
    ("um for", 4),  # ASR: "four" heard as "for"
    ("to", 2),  # ASR: "two" heard as "to"
    ("table for to", 2),
    ("for people", 4),
    ("eight guests", 8),
    ("ten in our party", 10),
]


@pytest.mark.parametrize(("text", "value"), PARTY)
def test_party_size_when_asked(text: str, value: int) -> None:
    assert parse("party_size", text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("a party of four", 4),
        ("a table for 4 tomorrow", 4),
        ("two people", 2),
        ("just me", 1),
        ("six", None),  # a bare number is not a party size out of turn
        ("i'd like to book", None),
        ("the 4th of july", None),
    ],
)
def test_party_size_out_of_turn_needs_a_cue(text: str, value: int | None) -> None:
    assert parse("party_size", text, lenient=False) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("seven", 7), ("it's 42", 42), ("one hundred", 1), ("nothing", None), ("for", 4)],
)
def test_number(text: str, value: int | None) -> None:
    assert parse("number", text) == value
    assert parse("number", text, lenient=False) is None


# -- dates --------------------------------------------------------------------------------------

DATES = [
    ("tonight", "2025-03-05"),
    ("today", "2025-03-05"),
    ("this evening", "2025-03-05"),
    ("tomorrow", "2025-03-06"),
    ("tomorrow night", "2025-03-06"),
    ("the day after tomorrow", "2025-03-07"),
    ("friday", "2025-03-07"),
    ("this friday", "2025-03-07"),
    ("on friday please", "2025-03-07"),
    ("wednesday", "2025-03-05"),  # today's weekday is today
    ("monday", "2025-03-10"),
    ("next friday", "2025-03-14"),  # the Friday of next week
    ("next monday", "2025-03-10"),
    ("march 3rd", "2026-03-03"),  # passed this year: next year
    ("march the 20th", "2025-03-20"),
    ("march 20", "2025-03-20"),
    ("the 3rd of april", "2025-04-03"),
    ("3rd april", "2025-04-03"),
    ("april third", "2025-04-03"),
    ("the twenty first", "2025-03-21"),
    ("on the 14th", "2025-03-14"),
    ("the 3rd", "2025-04-03"),  # this month's 3rd has passed
    ("in 3 days", "2025-03-08"),
    ("in a week", "2025-03-12"),
    ("2025-04-01", "2025-04-01"),
    ("4/1", "2025-04-01"),
    ("march 3rd 2027", "2027-03-03"),
    ("may 5th", "2025-05-05"),
    ("feb 30th", None),
    ("may i book a table", None),
    ("hold on a second", None),
    ("i'd like a table", None),
]


@pytest.mark.parametrize(("text", "value"), DATES)
def test_date(text: str, value: str | None) -> None:
    assert parse("date", text) == value


def test_bare_ordinal_is_a_date_only_when_asked() -> None:
    assert parse("date", "third") == "2025-04-03"
    assert parse("date", "third", lenient=False) is None
    assert parse("date", "the third", lenient=False) == "2025-04-03"


# -- times --------------------------------------------------------------------------------------

TIMES_PM = [
    ("7", "19:00"),
    ("seven", "19:00"),
    ("7 pm", "19:00"),
    ("7pm", "19:00"),
    ("seven p.m.", "19:00"),
    ("seven thirty", "19:30"),
    ("7 30", "19:30"),
    ("730", "19:30"),
    ("seven oh five", "19:05"),
    ("seven forty five", "19:45"),
    ("half past six", "18:30"),
    ("half six", "18:30"),
    ("quarter past seven", "19:15"),
    ("quarter to eight", "19:45"),
    ("ten past seven", "19:10"),
    ("19:30", "19:30"),
    ("7.30", "19:30"),
    ("8 o'clock", "20:00"),
    ("around 6ish", "18:00"),
    ("at 8 tonight", "20:00"),
    ("noon", "12:00"),
    ("12", "12:00"),
    ("midnight", "00:00"),
    ("9 am", "09:00"),
    ("12 am", "00:00"),
    ("twelve thirty pm", "12:30"),
    ("seven in the evening", "19:00"),
    ("nothing", None),
    ("13 pm", None),
]


@pytest.mark.parametrize(("text", "value"), TIMES_PM)
def test_time_assume_pm(text: str, value: str | None) -> None:
    assert parse("time", text, assume="pm") == value


@pytest.mark.parametrize(
    ("text", "value"),
    [("7", "07:00"), ("7 pm", "19:00"), ("seven in the evening", "19:00"), ("noon", "12:00")],
)
def test_time_without_assumption(text: str, value: str) -> None:
    assert parse("time", text) == value


def test_time_window_picks_the_reading_inside_it() -> None:
    window = (17 * 60, 22 * 60)
    assert parse("time", "7", window=window) == "19:00"
    assert parse("time", "11", window=(9 * 60, 14 * 60)) == "11:00"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("at 7", "19:00"),
        ("7 pm", "19:00"),
        ("seven thirty", "19:30"),
        ("around 8", "20:00"),
        ("for 7", None),  # a party of seven, not a time
        ("a table for 7 tonight", None),
        ("7", None),
    ],
)
def test_time_out_of_turn_needs_a_cue(text: str, value: str | None) -> None:
    assert parse("time", text, lenient=False, assume="pm") == value


# -- names --------------------------------------------------------------------------------------

NAMES = [
    ("my name is Ana Smith", "Ana Smith"),
    ("it's under Bob", "Bob"),
    ("under the name of garcia", "Garcia"),
    ("Bob", "Bob"),
    ("bob smith", "Bob Smith"),
    ("yeah it's ana smith please", "Ana Smith"),
    ("o'brien", "O'Brien"),
    ("this is mary", "Mary"),
    ("i'm jo", "Jo"),
    ("the name's lee thanks", "Lee"),
    ("i don't know", None),
    ("what", None),
    ("i would like to book a table please", None),
    ("for tomorrow", None),
]


@pytest.mark.parametrize(("text", "value"), NAMES)
def test_name_when_asked(text: str, value: str | None) -> None:
    assert parse("name", text) == value


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("my name is Ana Smith", "Ana Smith"),
        ("a table for four under the name of bob", "Bob"),
        ("bob", None),
        ("i'm looking for a table", None),
        ("this is for tomorrow", None),
    ],
)
def test_name_out_of_turn_needs_a_strong_cue(text: str, value: str | None) -> None:
    assert parse("name", text, lenient=False) == value


# -- phone numbers ------------------------------------------------------------------------------

PHONES = [
    ("five five five one two three four", "5551234"),
    ("555 123 4567", "5551234567"),
    ("555-867-5309", "5558675309"),
    ("my number is 555 867 5309", "5558675309"),
    ("double five five one two three four", "5551234"),
    ("triple seven one two three four", "7771234"),
    ("oh seven seven nine one two three four five six", "0779123456"),
    ("plus four four seven nine one one two three four five six", "+44791123456"),
    ("five five five twelve thirty four", "5551234"),
    ("eight hundred five five five one two one two", "8005551212"),
    ("five five five", "555"),  # asked: a short attempt (the digit-count rule answers it)
    ("no thanks", None),
]


@pytest.mark.parametrize(("text", "value"), PHONES)
def test_phone_when_asked(text: str, value: str | None) -> None:
    assert parse("phone", text) == value


def test_phone_out_of_turn_needs_seven_digits() -> None:
    assert parse("phone", "call me on 555 1234", lenient=False) == "5551234"
    assert parse("phone", "for 4 at 7", lenient=False) is None


# -- yes / no -----------------------------------------------------------------------------------

YES_NO = [
    ("yes", True),
    ("yeah", True),
    ("yep that's it", True),
    ("sure", True),
    ("correct", True),
    ("that's right", True),
    ("sounds good", True),
    ("uh huh", True),
    ("absolutely", True),
    ("no", False),
    ("nope", False),
    ("nah", False),
    ("wrong", False),
    ("that's not right", False),
    ("that's wrong", False),
    ("no that's right", False),  # the first answer said wins
    ("not quite", False),
    ("i don't know", None),
    ("not sure", None),
    ("table", None),
]


@pytest.mark.parametrize(("text", "value"), YES_NO)
def test_yes_no(text: str, value: bool | None) -> None:
    assert parse("yes_no", text) is value
    assert parse("yes_no", text, lenient=False) is None


# -- choices and text ---------------------------------------------------------------------------

SEATING = SlotSpec(
    type="choice",
    options=(
        ("indoor", (("indoor",), ("inside",), ("indoors",))),
        ("outdoor", (("outdoor",), ("outside",), ("patio",), ("terrace",))),
        ("bar", (("bar",), ("at", "the", "bar"))),
    ),
    threshold=0.8,
)


@pytest.mark.parametrize(
    ("text", "lenient", "value"),
    [
        ("outside please", True, "outdoor"),
        ("on the patio", False, "outdoor"),
        ("inside", False, "indoor"),
        ("at the bar", True, "bar"),
        ("outdors", True, "outdoor"),  # fuzzy, asked only
        ("outdors", False, None),
        ("somewhere quiet", True, None),
    ],
)
def test_choice(text: str, lenient: bool, value: str | None) -> None:
    m = parse_with(SEATING, normalize(text), TODAY, lenient=lenient)
    assert (None if m is None else m.value) == value


def test_text_takes_the_transcript_only_when_asked() -> None:
    assert parse("text", "  A window seat, please ") == "A window seat, please"
    assert parse("text", "anything", lenient=False) is None


# -- speech and validation ----------------------------------------------------------------------


def test_spoken_forms() -> None:
    assert spoken_date("2025-03-07") == "Friday, March 7th"
    assert spoken_date("2025-03-22") == "Saturday, March 22nd"
    assert spoken_date("2025-03-11") == "Tuesday, March 11th"
    assert spoken_time("19:00") == "7 pm"
    assert spoken_time("19:30") == "7:30 pm"
    assert spoken_time("09:05") == "9:05 am"
    assert spoken_time("12:00") == "noon"
    assert spoken_time("00:00") == "midnight"
    assert spoken("phone", "5558675309") == "5 5 5, 8 6 7, 5 3 0 9"
    assert spoken("phone", "+4479") == "plus 4 4 7, 9"
    assert spoken("yes_no", True) == "yes"
    assert spoken("party_size", 4) == "4"
    assert spoken("name", None) == ""
    assert minutes_of("21:30") == 1290
    with pytest.raises(ValueError):
        minutes_of("25:00")


def test_validation_rules() -> None:
    party = Rules(min=1, max=12)
    assert check("party_size", 4, party, TODAY) is None
    assert check("party_size", 13, party, TODAY) == "Sorry, that has to be between 1 and 12."
    assert check("number", 0, Rules(min=1), TODAY) == "Sorry, that has to be at least 1."
    hours = Rules(window=(17 * 60, 22 * 60))
    assert check("time", "19:00", hours, TODAY) is None
    assert check("time", "23:00", hours, TODAY) == ("Sorry, that has to be between 5 pm and 10 pm.")
    late = Rules(window=(22 * 60, 2 * 60))  # wraps past midnight
    assert check("time", "01:00", late, TODAY) is None
    assert check("time", "03:00", late, TODAY) is not None
    dates = Rules(max_days_ahead=30, closed_on=frozenset({0}))
    assert check("date", "2025-03-04", dates, TODAY) == "Sorry, that date has already passed."
    assert check("date", "2025-03-10", dates, TODAY) == "Sorry, we're closed on Mondays."
    assert check("date", "2025-06-01", dates, TODAY) is not None
    assert check("date", "2025-03-07", dates, TODAY) is None
    assert check("phone", "555", Rules(), TODAY) == "Sorry, that number sounds too short."
    assert check("phone", "5551234", Rules(), TODAY) is None
