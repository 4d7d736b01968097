"""LocalAgreement-2 and the transcript scoring helpers: pure, no models."""

from __future__ import annotations

import pytest

from harken.bench.stt_corpus import normalize, phone_path, wer, word_errors
from harken.speech.stt.agreement import (
    LocalAgreement,
    TrimPlan,
    common_prefix,
    continuation,
    final_words,
    strip_overlap,
    trim_plan,
    word_key,
)


def w(text: str) -> list[str]:
    return text.split()


def test_word_key_folds_case_and_punctuation_but_keeps_apostrophes() -> None:
    assert word_key("Evening.") == word_key("evening") == "evening"
    assert word_key("I'd,") == "i'd"
    assert word_key("'quoted'") == "quoted"


def test_common_prefix() -> None:
    assert common_prefix(w("a b c"), w("A, b d")) == 2
    assert common_prefix(w("a b"), w("a b c")) == 2
    assert common_prefix([], w("a")) == 0


def test_first_hypothesis_commits_nothing_second_commits_the_agreed_prefix() -> None:
    la = LocalAgreement(2)
    assert la.insert(w("I would like")) == []
    assert la.tentative == w("I would like")
    assert la.insert(w("I would like to book")) == w("I would like")
    assert la.committed == w("I would like")
    assert la.tentative == w("to book")
    # the next hypothesis is the continuation after the committed words
    assert la.insert(w("to book a table")) == w("to book")
    assert la.text == "I would like to book a table"


def test_disagreement_commits_only_up_to_the_first_difference() -> None:
    la = LocalAgreement(2)
    la.insert(w("the whether is"))
    assert la.insert(w("the weather is nice")) == w("the")
    assert la.tentative == w("weather is nice")
    # a changed hypothesis is compared with the latest one, not the first
    assert la.insert(w("weather is nice today")) == w("weather is nice")
    assert la.committed == w("the weather is nice")


def test_committed_words_keep_the_newest_spelling_and_never_change() -> None:
    la = LocalAgreement(2, holdback=0)
    la.insert(w("hello there"))
    assert la.insert(w("Hello, there.")) == w("Hello, there.")
    la.insert(w("general"))
    la.insert(w("kenobi"))  # contradicts the tentative word: nothing new committed
    assert la.committed == w("Hello, there.")


def test_the_last_word_of_a_hypothesis_is_held_back() -> None:
    la = LocalAgreement(2)  # holdback=1
    la.insert(w("what is the weather like this week"))
    # the audio was cut inside "weekend" twice: "week" agrees but is the newest last word
    assert la.insert(w("what is the weather like this week")) == w("what is the weather like this")
    assert la.tentative == w("week")
    assert la.insert(w("weekend?")) == []
    assert la.finish(w("weekend?")) == w("weekend?")


def test_final_words_extend_a_glued_committed_word() -> None:
    assert final_words(w("like this week"), "like this weekend?") == w("like this weekend?")
    assert final_words(w("book a"), "book a table") == w("book a table")
    assert final_words([], "hello there") == w("hello there")
    # a different word is not an extension: the committed word stays
    assert final_words(w("I want"), "I went home") == w("I want home")


def test_local_agreement_three_needs_three_hypotheses() -> None:
    la = LocalAgreement(3)
    assert la.insert(w("a b")) == []
    assert la.insert(w("a b c")) == []
    assert la.insert(w("a x")) == w("a")
    assert la.insert(w("x y")) == []  # "b c" and "x y" disagree at once
    assert la.insert(w("x y")) == w("x")  # "y" is in only two of the last three
    assert la.insert(w("y z")) == w("y")
    with pytest.raises(ValueError):
        LocalAgreement(0)


def test_finish_commits_everything_and_forget_history_restarts_agreement() -> None:
    la = LocalAgreement(2)
    la.insert(w("one two"))
    la.forget_history()
    assert la.insert(w("one two")) == []  # no earlier hypothesis to agree with
    assert la.finish(w("one two three")) == w("one two three")
    assert la.committed == w("one two three") and la.tentative == []
    la.reset()
    assert la.words == []


def test_continuation_after_a_forced_prefix() -> None:
    assert continuation("I would like to book", "I would like") == w("to book")
    assert continuation("I would like to book", "") == w("I would like to book")
    # the engine glued a fragment onto the last prefix word: the fragment is dropped
    assert continuation("I want booking now", "I want book") == w("now")
    # the engine read the prefix's words differently: aligned word for word
    assert continuation("I want a cab", "I would") == w("a cab")
    assert continuation("You want a cab", "I would") == w("a cab")
    assert continuation("I", "I would") == []


def test_strip_overlap_removes_a_repeated_tail_of_committed_words() -> None:
    assert strip_overlap(w("book a table"), w("a table for four")) == w("for four")
    assert strip_overlap(w("book a table"), w("Table, for four")) == w("for four")
    assert strip_overlap(w("book a table"), w("for four")) == w("for four")
    assert strip_overlap([], w("for four")) == w("for four")


def test_trim_plan_only_past_the_limit_and_inside_the_buffer() -> None:
    assert trim_plan(10.0, 5, 6.0, max_s=20.0) is None
    assert trim_plan(25.0, 0, 6.0, max_s=20.0) is None
    assert trim_plan(25.0, 5, None, max_s=20.0) is None
    assert trim_plan(25.0, 5, 26.0, max_s=20.0) is None
    assert trim_plan(25.0, 5, 18.5, max_s=20.0) == TrimPlan(18.5, 5)


def test_normalize_and_word_error_rate() -> None:
    assert normalize("I'd like 2 coffees, at 7:30!") == w("i'd like two coffees at seven thirty")
    assert normalize("Twenty-one") == w("twenty one")
    assert word_errors("the cat sat", "the cat sat") == (0, 3)
    assert word_errors("the cat sat", "a cat sat down") == (2, 3)  # one substitution, one insertion
    assert word_errors("the cat sat", "") == (3, 3)
    assert wer([("a b c d", "a b c d"), ("a b c d", "a x c")]) == pytest.approx(2 / 8)


def test_phone_path_halves_the_rate_and_quantizes() -> None:
    import numpy as np

    t = np.arange(16000) / 16000
    tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    out = phone_path(tone)
    assert out.dtype == np.int16 and len(out) == 8000
    # µ-law keeps a 440 Hz tone: correlate with the ideal 8 kHz tone
    ideal = 8000 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)
    corr = float(np.dot(out[100:-100], ideal[100:-100]))
    norm = float(np.linalg.norm(out[100:-100]) * np.linalg.norm(ideal[100:-100]))
    assert corr / norm > 0.99
