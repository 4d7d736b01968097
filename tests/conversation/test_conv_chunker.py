"""ClauseChunker: short first clause, sentence breaks, the traps, and split-independence."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.conversation.chunker import ClauseChunker, speakable
from harken.errors import ConfigError


def chunk(text: str, chunker: ClauseChunker | None = None) -> list[str]:
    c = chunker or ClauseChunker()
    return c.push(text) + c.flush()


def chunk_split(text: str, cuts: list[int], chunker: ClauseChunker | None = None) -> list[str]:
    c = chunker or ClauseChunker()
    out: list[str] = []
    start = 0
    for cut in sorted({min(max(0, x), len(text)) for x in cuts}):
        out += c.push(text[start:cut])
        start = cut
    out += c.push(text[start:])
    return out + c.flush()


def later(text: str) -> list[str]:
    """Clauses after a first one (so the first-clause rules are out of the way)."""
    return chunk("Okay. " + text)[1:]


def test_the_first_clause_is_short_and_later_ones_are_sentences() -> None:
    text = (
        "I looked into your order and it shipped on Monday, so it should arrive by Friday, "
        "weather permitting. Is there anything else? Great!"
    )
    assert chunk(text) == [
        "I looked into your order",  # six words would end on "and"; backed off to "order"
        "and it shipped on Monday, so it should arrive by Friday, weather permitting.",
        "Is there anything else?",
        "Great!",
    ]


def test_first_clause_breaks_at_a_clause_mark_after_min_words() -> None:
    assert chunk("Well, I think so, yes.")[0] == "Well, I think so,"  # "Well," is one word
    assert chunk("Sure thing, let me look.")[0] == "Sure thing,"
    assert chunk("Sure. Let me check that for you.") == ["Sure.", "Let me check that for you."]


def test_first_clause_does_not_end_on_a_weak_word() -> None:
    assert chunk("I want to go to the store today")[0] == "I want to go"
    c = ClauseChunker(first_min_words=1, first_max_words=3)
    assert chunk("Book it for the morning please", c)[0] == "Book it"


def test_no_break_inside_numbers() -> None:
    text = "It costs $4.50, or 3.14 units, about 1,000 in all, at 10:30 sharp. Then more."
    assert later(text) == [
        "It costs $4.50, or 3.14 units, about 1,000 in all, at 10:30 sharp.",
        "Then more.",
    ]


def test_a_period_at_the_end_waits_for_the_next_token() -> None:
    c = ClauseChunker()
    assert c.push("Okay. The value is 3.") == ["Okay."]  # "3." may become "3.5"
    assert c.push("5 exactly. And") == ["The value is 3.5 exactly."]
    assert c.flush() == ["And"]


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("Dr. Smith and Mr. Jones met. Then left.", ["Dr. Smith and Mr. Jones met.", "Then left."]),
        (
            "Bring fruit, e.g. apples, i.e. red ones. Done.",
            ["Bring fruit, e.g. apples, i.e. red ones.", "Done."],
        ),
        ("Apples, pears, etc. and more. Yes.", ["Apples, pears, etc. and more.", "Yes."]),
        ("Apples, pears, etc. Then more.", ["Apples, pears, etc.", "Then more."]),
        ("It opens at 9 a.m. on Monday. Good.", ["It opens at 9 a.m. on Monday.", "Good."]),
        ("It closes at 5 p.m. Then we rest.", ["It closes at 5 p.m.", "Then we rest."]),
        (
            "He works for the U.S. Postal Service. Yes.",
            ["He works for the U.S. Postal Service.", "Yes."],
        ),
        ("J. R. R. Tolkien wrote it. Yes.", ["J. R. R. Tolkien wrote it.", "Yes."]),
        ("See No. 5 on the list. Fine.", ["See No. 5 on the list.", "Fine."]),
        ("Is it free? No. It costs money.", ["Is it free?", "No.", "It costs money."]),
    ],
)
def test_abbreviations_and_initials(text: str, clauses: list[str]) -> None:
    assert later(text) == clauses


def test_urls_emails_and_code_do_not_break() -> None:
    text = (
        "Go to example.com/path?x=1&y=2 or write to help@example.co.uk now. "
        "Then call `client.stream()` again. Done!"
    )
    assert later(text) == [
        "Go to example.com/path?x=1&y=2 or write to help@example.co.uk now.",
        "Then call client.stream() again.",
        "Done!",
    ]


def test_ellipses_and_quotes_and_brackets() -> None:
    assert later('He said "hi." Then he left (quietly.) And so on...') == [
        'He said "hi."',
        "Then he left (quietly.)",
        "And so on...",
    ]
    assert later("Wait... what? Really?!") == ["Wait... what?", "Really?!"]


def test_markdown_lists_one_clause_per_item() -> None:
    text = "Here are the steps:\n1. Preheat the oven.\n2. Mix the flour\n3. Bake it\n\n- one\n- two"
    assert chunk(text) == [
        "Here are the steps:",
        "1. Preheat the oven.",
        "2. Mix the flour",
        "3. Bake it",
        "one",
        "two",
    ]
    # inline, a later clause's colon is too early to break at, but "2." stays with its item
    assert later("Steps: 1. Open it. 2. Close it.") == ["Steps: 1. Open it.", "2. Close it."]


def test_markdown_is_stripped_and_empty_clauses_dropped() -> None:
    text = (
        "## The **plan**\n\n---\n\n> Call _me_ `now`, see [the docs](https://x.io/a).\n"
        "```python\nsnake_case = 2*3\n```\n**"
    )
    assert chunk(text) == ["The plan", "Call me now, see the docs.", "snake_case = 2*3"]
    assert chunk("  \n\n ** \n") == []
    assert speakable("# not a heading", line_start=False) == "# not a heading"


def test_long_clauses_are_capped_at_a_word_boundary() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    clauses = later(words + ".")
    assert all(110 <= len(c) <= 220 for c in clauses[:-1]) and len(clauses) >= 4
    assert " ".join(clauses).split() == (words + ".").split()
    c = ClauseChunker(max_chars=40)
    text = "Okay. alpha beta gamma delta epsilon zeta eta theta, iota kappa lambda mu nu xi"
    out = chunk(text, c)
    assert out[1] == "alpha beta gamma delta epsilon zeta eta"  # 39 characters
    assert out[2] == "theta, iota kappa lambda mu nu xi"
    assert chunk("Okay. " + "x" * 100 + " tail", c)[1:] == ["x" * 100, "tail"]


def test_later_clause_marks_break_once_past_half_the_cap() -> None:
    c = ClauseChunker(max_chars=60)
    text = "Okay. Short, not yet, but this clause has run long enough, so it breaks here"
    assert chunk(text, c)[1:] == [
        "Short, not yet, but this clause has run long enough,",
        "so it breaks here",
    ]


def test_flush_and_reset_start_a_new_response() -> None:
    c = ClauseChunker()
    assert c.push("First answer here and") == []
    assert c.flush() == ["First answer here and"]
    assert c.push("Second one, with a short start. ") == ["Second one,", "with a short start."]
    c.push("Interrupted mid")
    c.reset()
    assert c.pending == "" and c.flush() == []
    assert c.push("Fresh, again. ") == ["Fresh, again."]


def test_bad_settings() -> None:
    with pytest.raises(ConfigError):
        ClauseChunker(first_min_words=4, first_max_words=3)
    with pytest.raises(ConfigError):
        ClauseChunker(max_chars=5)


# --------------------------------------------------------------------------------------------
# Properties: the clauses do not depend on how the text was split into tokens; no word is lost

SAMPLES = [
    "Sure! I can help with that. Your order #1234 shipped on Jan. 5 and costs $4.50, i.e. "
    'less than expected. Dr. Smith said "it\'s fine." Then he left at 5 p.m. Visit '
    "example.com/help?x=1 for more... or email help@example.com. Thanks!",
    "Here's what to do:\n\n1. Open the **Settings** app.\n2. Tap `Network`.\n3. Choose "
    "Wi-Fi, then enter the password.\n\n- Note: it takes 2.5 minutes.\n- Call 555-1234 if "
    "not.\n\n## Summary\nThat's it, e.g. three steps, etc. Good luck.",
    "Well... let me think. The U.S. Army and the U.K. Navy met in 1944. J. K. Rowling "
    "wrote seven books; the first came out in 1997, I think. No. 7 was the last one? Yes!",
    "I want to go to the store and buy some milk because we have run out of it and the kids "
    "want cereal for breakfast tomorrow morning before school starts at 8:15 a.m. sharp",
    "Okay, so: one, two, three. (And four.) \"Five,\" she said. 'Six.' "
    "Seven \u2014 eight \u2013 nine - ten. Call foo.bar() and x.y(1, 2). "
    "Pi is 3.14159. v2.0.1 is out. Done.",
]


def alnum_words(text: str) -> list[str]:
    return [w for w in text.split() if any(ch.isalnum() for ch in w)]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.integers(0, 400), max_size=60),
    st.sampled_from([(2, 6, 220), (1, 3, 60), (3, 8, 40)]),
)
def test_clauses_do_not_depend_on_token_splits(
    text: str, cuts: list[int], params: tuple[int, int, int]
) -> None:
    whole = chunk(text, ClauseChunker(*params))
    split = chunk_split(text, cuts, ClauseChunker(*params))
    assert split == whole
    assert all(c.strip() and c == c.strip() for c in whole)
    assert alnum_words(" ".join(whole)) == alnum_words(speakable(text))


_PIECES = [
    "word",
    "the",
    "to",
    "Dr.",
    "e.g.",
    "etc.",
    "U.S.",
    "p.m.",
    "3.14",
    "$4.50",
    "1,000",
    "10:30",
    "3.",
    "5",
    "example.com/x?y=1",
    "foo.bar()",
    "`code`",
    "**bold**",
    "_em_",
    '"quoted."',
    "(aside.)",
    "...",
    "…",
    "—",
    "-",
    "#",
    "##",
    "1.",
    "2)",
    "J.",
    "I",
    "No.",
    ".",
    ",",
    ";",
    ":",
    "?",
    "!",
    "?!",
    "A",
    "Then",
    "And",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_PIECES), st.sampled_from([" ", " ", " ", "", "\n", "\n\n"])),
        max_size=40,
    ),
    st.lists(st.integers(0, 300), max_size=30),
)
def test_random_llm_like_text(pieces: list[tuple[str, str]], cuts: list[int]) -> None:
    text = "".join(p + sep for p, sep in pieces)
    whole = chunk(text)
    assert chunk_split(text, cuts) == whole
    assert all(c.strip() and any(ch.isalnum() for ch in c) for c in whole)
    assert alnum_words(" ".join(whole)) == alnum_words(speakable(text))


def test_token_by_token_like_an_llm() -> None:
    rng = random.Random(3)
    for text in SAMPLES:
        whole = chunk(text)
        for _ in range(20):
            c = ClauseChunker()
            out: list[str] = []
            i = 0
            while i < len(text):
                j = i + rng.choice([1, 2, 3, 4, 5, 7])
                out += c.push(text[i:j])
                i = j
            assert out + c.flush() == whole
