"""The built-in restaurant flow, driven through the session API the conversation engine uses."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harken.agent.flow import (
    FlowAgent,
    FlowSession,
    FlowTurn,
    HangupRequest,
    ToolRequest,
    TransferRequest,
)
from harken.agent.flow.demo_tools import book_table

NOW = datetime(2025, 3, 5, 15, 0)  # a Wednesday afternoon
AGENT = FlowAgent.builtin("restaurant")


def new_session() -> FlowSession:
    session = AGENT.session(now=NOW)
    session.start()
    return session


def booked_session(*texts: str) -> FlowSession:
    """A session that went through the texts (each must be understood)."""
    session = new_session()
    for text in texts:
        turn = session.on_text(text)
        assert turn.matched_by is not None, (text, turn)
    return session


def tool_request(turn: FlowTurn) -> ToolRequest:
    (action,) = turn.actions
    assert isinstance(action, ToolRequest)
    return action


def test_agent_facts() -> None:
    assert AGENT.tool_names == frozenset({"book_table"})
    assert AGENT.transfer_targets == frozenset({"front_desk"})
    assert AGENT.name == "luigis"


def test_full_booking_conversation() -> None:
    session = AGENT.session(now=NOW)
    turn = session.start()
    assert turn.say == ("Hi, thanks for calling Luigi's.", "How can I help you today?")
    assert turn.node == "main" and turn.actions == ()

    turn = session.on_text("hi i'd like to book a table")
    assert (turn.node, turn.intent, turn.matched_by) == ("collect", "book", "keywords")
    assert turn.say[-1] == "How many people will be dining?"

    script = [
        ("six", "What day would you like to come in?", {"party_size": 6}),
        ("friday", "And what time?", {"date": "2025-03-07"}),
        ("seven thirty", "What name is the booking under?", {"time": "19:30"}),
        ("it's under ana smith", None, {"name": "Ana Smith"}),
    ]
    for text, question, slots in script:
        turn = session.on_text(text)
        assert turn.matched_by == "slot" and turn.intent is None
        if question is not None:
            assert turn.say == (question,)
        for key, value in slots.items():
            assert session.state["slots"][key] == value
    assert session.state["asked"] == "phone"

    turn = session.on_dtmf("5558675309#")
    assert session.state["slots"]["phone"] == "5558675309"
    assert turn.say == (
        "So that's a table for 6 on Friday, March 7th at 7:30 pm, under Ana Smith. Is that right?",
    )
    assert session.state["mode"] == "confirm"

    turn = session.on_text("yes that's right")
    request = tool_request(turn)
    assert turn.node == "book" and turn.say == ("One moment while I book that.",)
    assert request.name == "book_table"
    assert request.args == {
        "party_size": 6,
        "date": "2025-03-07",
        "time": "19:30",
        "name": "Ana Smith",
        "phone": "5558675309",
    }
    assert session.state["pending"] == request.call_id

    result = book_table(**request.args)
    turn = session.on_tool_result(request.call_id, result)
    assert turn.say == (
        f"You're all set! Your confirmation code is {result['code']}.",
        "Is there anything else I can help with?",
    )
    assert turn.node == "anything_else"

    turn = session.on_text("no that's all thanks")
    assert turn.actions == (HangupRequest("caller is done"),)
    assert turn.say == ("Thanks for calling Luigi's. Enjoy your meal. Goodbye!",)
    assert session.done and session.state["done"]
    # after the end every input answers an empty turn
    assert session.on_text("hello?").say == ()
    assert session.on_dtmf("0").actions == ()
    assert session.on_idle(1).say == ()


def test_one_utterance_fills_several_slots_then_asks_the_rest() -> None:
    session = new_session()
    turn = session.on_text("can I book a table for 4 tomorrow at 7")
    assert turn.say == ("Great, let's get you a table.", "What name is the booking under?")
    assert session.state["slots"] == {"party_size": 4, "date": "2025-03-06", "time": "19:00"}


def test_correction_after_no_updates_the_slot_directly() -> None:
    session = booked_session("book a table for 4 on friday at 8", "my name is bob", "no thanks")
    assert session.state["mode"] == "confirm"
    turn = session.on_text("no, make it 6 people")
    assert session.state["slots"]["party_size"] == 6
    assert turn.say == (
        "So that's a table for 6 on Friday, March 7th at 8 pm, under Bob. Is that right?",
    )

    turn = session.on_text("no")
    assert (turn.intent, turn.say) == ("no", ("No problem. What should I change?",))
    turn = session.on_text("the time")
    assert turn.say == ("And what time?",) and session.state["asked"] == "time"
    turn = session.on_text("half past seven")
    assert "at 7:30 pm" in turn.text and session.state["mode"] == "confirm"
    turn = session.on_text("no, saturday")
    assert session.state["slots"]["date"] == "2025-03-08" and "Saturday, March 8th" in turn.text
    request = tool_request(session.on_text("yep"))
    assert request.args["date"] == "2025-03-08" and request.args["time"] == "19:30"


def test_large_parties_take_the_conditional_branch() -> None:
    session = booked_session("a table for 10 tomorrow at 7", "smith", "skip")
    turn = session.on_text("yes")
    assert turn.say[0] == "Just so you know, for groups over eight we serve a set menu."
    assert turn.node == "book" and tool_request(turn).args["party_size"] == 10


def test_validation_messages_and_the_question_again() -> None:
    session = new_session()
    turn = session.on_text("table for 20")
    assert turn.say == (
        "Great, let's get you a table.",
        "Sorry, by phone we can book tables for 1 to 12 people.",
        "How many people will be dining?",
    )
    assert "party_size" not in session.state["slots"]
    turn = session.on_text("ok 4 then, on monday")
    assert turn.say == ("Sorry, we're closed on Mondays.", "What day would you like to come in?")
    turn = session.on_text("tuesday at 11")
    assert turn.say == ("Sorry, we seat from 5 to 9:30 pm.", "And what time?")
    assert session.state["slots"] == {"party_size": 4, "date": "2025-03-11"}


def test_fallback_escalates_to_a_transfer() -> None:
    session = new_session()
    first = session.on_text("blah blah")
    assert first.matched_by is None and first.intent is None
    assert first.say == (
        "Sorry, I didn't catch that.",
        "You can book a table, or ask about our hours or address.",
    )
    second = session.on_text("flibber")
    assert second.say[0] == "Sorry, I'm still not sure what you need."
    third = session.on_text("zzz")
    assert third.say == ("Let me get someone from the restaurant to help you.",)
    assert third.actions == (TransferRequest("front_desk", "caller not understood"),)
    assert session.done


def test_a_match_resets_the_fallback_count() -> None:
    session = new_session()
    session.on_text("blah")
    session.on_text("blah")
    assert session.on_text("what are your hours").intent == "hours"
    assert session.on_text("blah").actions == ()
    assert not session.done


def test_repeated_invalid_answers_reach_the_fallback_ending() -> None:
    session = booked_session("book a table")
    for text in ("20", "30"):
        assert session.on_text(text).actions == ()
    assert session.on_text("40").actions == (TransferRequest("front_desk", "no valid answer"),)


def test_idle_reprompts_then_hang_up() -> None:
    session = new_session()
    assert session.on_idle(1).say == ("You can book a table, or ask about our hours or address.",)
    assert session.on_idle(2).say == ("Are you still there? Say book a table, or hours.",)
    assert session.on_idle(3).say == ("Are you still there? Say book a table, or hours.",)
    turn = session.on_idle(4)
    assert turn.say == ("I'll let you go now. Call us back any time. Goodbye!",)
    assert turn.actions == (HangupRequest("caller silent"),)


def test_idle_while_a_slot_is_asked_uses_its_reprompts() -> None:
    session = booked_session("book a table")
    assert session.on_idle(1).say == ("How many people is the table for?",)
    assert session.on_idle(2).say == ("Just say a number, like four.",)
    session.on_text("two")
    assert session.on_idle(1).say == ("Which day? For example, tonight, tomorrow or Friday.",)


def test_idle_during_confirm_repeats_the_read_back() -> None:
    session = booked_session("a table for 2 tonight at 8", "under the name of lee", "no")
    assert session.on_idle(1).say[0].startswith("So that's a table for 2")


def test_dtmf_phone_entry_key_by_key() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee")
    assert session.state["asked"] == "phone"
    for key in "555":
        turn = session.on_dtmf(key)
        assert turn.say == () and turn.matched_by == "slot"
    session.on_dtmf("*")  # clears what was typed
    for key in "5558675309":
        session.on_dtmf(key)
    assert "phone" not in session.state["slots"]
    turn = session.on_dtmf("#")
    assert session.state["slots"]["phone"] == "5558675309"
    assert session.state["mode"] == "confirm" and turn.say[0].startswith("So that's")


def test_dtmf_phone_batch_too_short_and_skip() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee")
    turn = session.on_dtmf("555#")
    assert turn.say[0] == "Sorry, that number sounds too short."
    assert session.state["asked"] == "phone"
    turn = session.on_dtmf("#")  # an optional phone is skipped with # alone
    assert "phone" not in session.state["slots"] and session.state["mode"] == "confirm"


def test_dtmf_phone_entry_completed_by_silence() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee")
    for key in "5551234":
        session.on_dtmf(key)
    turn = session.on_idle(1)
    assert session.state["slots"]["phone"] == "5551234" and turn.say[0].startswith("So that's")


def test_spoken_phone_number_and_skipping_it() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee")
    session.on_text("it's five five five, eight six seven, five three oh nine")
    assert session.state["slots"]["phone"] == "5558675309"
    other = booked_session("a table for 2 tonight at 8", "lee")
    turn = other.on_text("no thanks")
    assert turn.matched_by == "slot" and other.state["mode"] == "confirm"


def test_dtmf_keys_answer_confirm_and_numbers() -> None:
    session = booked_session("book a table")
    session.on_dtmf("4")
    assert session.state["slots"]["party_size"] == 4
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    assert isinstance(session.on_dtmf("1").actions[0], ToolRequest)  # 1 = yes


def test_dtmf_zero_is_the_operator() -> None:
    turn = new_session().on_dtmf("0")
    assert turn.actions == (TransferRequest("front_desk", "caller asked for a person"),)
    assert (turn.intent, turn.matched_by) == ("operator", "dtmf")


def test_unbound_key_is_a_miss() -> None:
    turn = new_session().on_dtmf("7")
    assert turn.say[0] == "Sorry, I didn't catch that."


@pytest.mark.parametrize(
    ("text", "intent", "answer"),
    [
        ("what are your opening hours", "hours", "We're open Tuesday to Sunday, from 5 to 10 pm."),
        ("where are you located", "address", "We're at 12 Harbour Street"),
        ("is there parking", "parking", "There's free parking"),
        ("help", "help", "I need the number of people, the day, the time and a name"),
    ],
)
def test_faq_answers_anywhere_then_the_question_stands(text: str, intent: str, answer: str) -> None:
    session = booked_session("book a table", "four")
    turn = session.on_text(text)
    assert turn.intent == intent and turn.matched_by == "keywords"
    assert turn.say[0].startswith(answer)
    assert turn.say[-1] == "What day would you like to come in?"
    assert session.state["asked"] == "date"


def test_flow_help_where_the_node_has_none() -> None:
    turn = new_session().on_text("what are my options")
    assert turn.intent == "help" and turn.say[0].startswith("I can book a table")
    assert turn.say[-1] == "You can book a table, or ask about our hours or address."


def test_repeat_says_the_last_turn_again() -> None:
    session = booked_session("book a table")
    for text in ("what?", "sorry, say that again", "pardon", "I didn't catch that"):
        turn = session.on_text(text)
        assert turn.intent == "repeat", text
        assert turn.say == ("Great, let's get you a table.", "How many people will be dining?")
    assert new_session().on_dtmf("*").intent == "repeat"


@pytest.mark.parametrize("text", ["operator", "can I speak to someone", "a real person please"])
def test_operator_transfers(text: str) -> None:
    session = booked_session("book a table")
    turn = session.on_text(text)
    assert turn.intent == "operator"
    assert turn.say == ("Sure, putting you through to the front desk.",)
    assert turn.actions == (TransferRequest("front_desk", "caller asked for a person"),)
    assert session.done


def test_goodbye_hangs_up_anywhere() -> None:
    session = booked_session("book a table", "four")
    turn = session.on_text("ok bye")
    assert turn.intent == "goodbye"
    assert turn.say == ("Thanks for calling Luigi's. Goodbye!",)
    assert turn.actions == (HangupRequest("caller intent goodbye"),)


def test_start_over_clears_everything() -> None:
    session = booked_session("a table for 4 tomorrow at 7")
    turn = session.on_text("let's start over")
    assert turn.intent == "start_over"
    assert turn.say == ("Okay, let's start over.", "How can I help you today?")
    assert session.state["slots"] == {} and session.state["node"] == "main"


def test_cancel_transfers_to_the_front_desk() -> None:
    turn = new_session().on_text("I need to cancel my reservation")
    assert turn.intent == "cancel" and turn.node == "cancel_transfer"
    assert turn.actions == (TransferRequest("front_desk", "change or cancel a booking"),)


def test_fuzzy_intent_from_examples() -> None:
    turn = new_session().on_text("do you have space for dinner")
    assert (turn.intent, turn.matched_by, turn.node) == ("book", "fuzzy", "collect")


def confirmed(session: FlowSession) -> ToolRequest:
    return tool_request(session.on_text("yes"))


def test_text_while_the_tool_runs_is_answered_with_one_moment() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    request = confirmed(session)
    turn = session.on_text("hello? are you there?")
    assert turn.say == ("One moment, please.",) and turn.actions == ()
    assert session.on_idle(1).say == ("One moment, please.",)
    assert session.on_tool_result("not-the-id", {"code": "X"}).say == ()
    assert session.state["pending"] == request.call_id


def test_tool_error_branch_asks_for_another_time() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    request = confirmed(session)
    turn = session.on_tool_result(
        request.call_id, None, "ToolError: we're fully booked at 8 pm, but 8:30 pm is free"
    )
    assert turn.say == (
        "Sorry, we're fully booked at 8 pm, but 8:30 pm is free.",
        "What time would you like instead?",
    )
    assert turn.node == "retry_time" and "time" not in session.state["slots"]
    turn = session.on_text("8:30")
    assert turn.say == (
        "So that's 2 on Wednesday, March 5th at 8:30 pm, under Lee. Shall I book it?",
    )
    second = confirmed(session)
    assert second.call_id != request.call_id and second.args["time"] == "20:30"


def test_a_result_without_the_spoken_field_counts_as_an_error() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    request = confirmed(session)
    turn = session.on_tool_result(request.call_id, {"booked": True})
    assert turn.node == "retry_time" and turn.say[0] == "Sorry, the result has no code."


def test_another_booking_keeps_the_name_but_not_the_table() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    request = confirmed(session)
    session.on_tool_result(request.call_id, book_table(**request.args))
    turn = session.on_text("yes I'd like to book another table")
    assert turn.intent == "book" and turn.node == "collect"
    assert turn.say == (
        "Sure, another table.",
        "Great, let's get you a table.",
        "How many people will be dining?",
    )
    assert session.state["slots"] == {"name": "Lee"}
    turn = session.on_text("4 people tomorrow at 7")  # the name is kept, the phone was skipped
    assert turn.say == (
        "So that's a table for 4 on Thursday, March 6th at 7 pm, under Lee. Is that right?",
    )


def test_anything_else_yes_goes_back_to_the_menu() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    request = confirmed(session)
    session.on_tool_result(request.call_id, book_table(**request.args))
    turn = session.on_text("yeah")
    assert turn.node == "main_again" and turn.say == ("Sure, what can I do for you?",)


def test_start_twice_repeats_and_blank_text_is_ignored() -> None:
    session = AGENT.session(now=NOW)
    first = session.start()
    assert session.start().say == first.say
    assert session.on_text("   ").say == () and session.on_text("...").say == ()
    assert session.on_dtmf("").say == ()


# -- robustness ---------------------------------------------------------------------------------

VOCABULARY = (
    "a table for four tomorrow at 7 pm no yes my name is bob the time 555 1234 friday help "
    "what operator start over cancel twenty one half past six # march 3rd oh double"
)
EVENT = st.one_of(
    st.tuples(st.just("text"), st.text(max_size=60)),
    st.tuples(
        st.just("text"),
        st.lists(
            st.sampled_from(VOCABULARY.split()),
            max_size=12,
        ).map(" ".join),
    ),
    st.tuples(st.just("dtmf"), st.text(alphabet="0123456789*#x", max_size=12)),
    st.tuples(st.just("idle"), st.integers(-2, 6)),
    st.tuples(st.just("result"), st.one_of(st.none(), st.text(max_size=10))),
)


def play(session: FlowSession, kind: str, value: Any) -> FlowTurn:
    if kind == "text":
        return session.on_text(value)
    if kind == "dtmf":
        return session.on_dtmf(value)
    if kind == "idle":
        return session.on_idle(value)
    pending = session.state["pending"] or "none"
    if value is None:
        return session.on_tool_result(pending, {"code": "ABC123"})
    return session.on_tool_result(pending, None, value)


@settings(max_examples=150, deadline=None)
@given(st.lists(EVENT, max_size=25))
def test_the_session_never_raises(events: list[tuple[str, Any]]) -> None:
    session = AGENT.session(now=NOW)
    session.start()
    for kind, value in events:
        was_done = session.done
        turn = play(session, kind, value)
        assert isinstance(turn, FlowTurn) and all(isinstance(s, str) and s for s in turn.say)
        assert turn.node in AGENT.flow.nodes
        if was_done:
            assert turn.say == () and turn.actions == ()
        for action in turn.actions:
            if isinstance(action, (HangupRequest, TransferRequest)):
                assert session.done


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("perfect, thanks", "goodbye"),
        ("no that's all", "goodbye"),
        ("that's it, thank you", "goodbye"),
        ("sure", "main_again"),
        ("yes please", "main_again"),
        ("that's right", "anything_else"),  # agreeing is not a yes to "anything else?"
        ("great", "anything_else"),
    ],
)
def test_anything_else_tells_thanks_from_yes(text: str, node: str) -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    request = confirmed(session)
    session.on_tool_result(request.call_id, book_table(**request.args))
    assert session.on_text(text).node == node


def test_keys_complete_tells_a_whole_entry_from_one_still_being_typed() -> None:
    fresh = new_session()
    assert fresh.keys_complete("0")  # the operator: no need to wait for more keys
    assert fresh.keys_complete("*")  # repeat
    assert not fresh.keys_complete("7") and not fresh.keys_complete("")
    phone = booked_session("a table for 2 tonight at 8", "lee")
    assert not phone.keys_complete("555")
    assert not phone.keys_complete("5558675309")  # a longer number may follow: "#" ends it
    assert phone.keys_complete("1" * 15)  # the slot's max_digits
    assert not phone.keys_complete("1" * 14 + "*1")  # "*" cleared what was typed
    party = booked_session("book a table")
    assert not party.keys_complete("1")  # 1, or 12: only "#" or the timeout can tell
    confirm = booked_session("a table for 2 tonight at 8", "lee", "skip")
    assert confirm.keys_complete("1") and confirm.keys_complete("2")


@pytest.mark.parametrize(
    ("said", "text", "entry"),
    [
        ((), "Hi.", False),  # nothing the flow can act on yet: the caller is probably not done
        ((), "Hi, um", False),
        ((), "Um.", False),
        ((), "I'd like to book a table.", None),  # an intent: no opinion
        ((), "What time do you close?", None),
        (("book a table",), "For three.", True),  # the asked party size: a whole answer
        (("book a table",), "Fifty people.", False),  # breaks its rule: more may be coming
        (("book a table",), "Friday.", None),  # a value for another slot
        (("book a table", "3"), "Thursday.", True),
        (("book a table", "3", "thursday"), "At seven thirty.", True),
        (("book a table", "3", "thursday", "7 pm"), "My name is", None),  # words trail off
        (("book a table", "3", "thursday", "7 pm"), "Maria Garcia.", None),  # free text
        (("a table for 2 tonight at 8", "lee"), "Sure, it's five five five.", False),
        (("a table for 2 tonight at 8", "lee"), "It's 555-867.", False),
        (("a table for 2 tonight at 8", "lee"), "It's 555-8675.", None),  # valid, may go on
        (("a table for 2 tonight at 8", "lee"), "It's 555-867-5309.", True),
        (("a table for 2 tonight at 8", "lee"), "No thanks.", None),  # skips the optional slot
        (("a table for 2 tonight at 8", "lee", "skip"), "Yes.", True),  # the read-back: yes
        (("a table for 2 tonight at 8", "lee", "skip"), "No.", False),  # the change follows
        (("a table for 2 tonight at 8", "lee", "skip"), "No way.", False),  # "No wait," misheard
        (("a table for 2 tonight at 8", "lee", "skip"), "No, make it five.", None),
        (("a table for 2 tonight at 8", "lee", "skip"), "Blah blah.", False),
        ((), "Sorry, time to you close.", None),  # a longer miss: misheard, not unfinished
        ((), "Oh, sorry.", None),  # "sorry" asks to repeat: an intent
        ((), "APM.", None),  # "Eight pm." misheard: waiting would only delay the reprompt
    ],
)
def test_text_entry_tells_a_whole_answer_from_a_partial_one(
    said: tuple[str, ...], text: str, entry: bool | None
) -> None:
    session = booked_session(*said)
    before = session.state
    assert session.text_entry(text) is entry
    assert session.state == before  # asking changes nothing
    understood = session.on_text(text).matched_by is not None
    assert understood or entry is not True  # a whole answer is one the flow acts on


def test_text_entry_has_no_opinion_while_a_tool_runs_or_after_the_end() -> None:
    session = booked_session("a table for 2 tonight at 8", "lee", "skip")
    tool_request(session.on_text("yes"))
    assert session.text_entry("Hi.") is None  # a booking is pending
    done = new_session()
    done.on_text("goodbye")
    assert done.done and done.text_entry("Hi.") is None
