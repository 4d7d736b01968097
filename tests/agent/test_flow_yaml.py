"""Flow YAML: compile errors with file:line:col, and the features a custom flow can use."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest

from harken.agent.flow import FlowAgent, HangupRequest, ToolRequest, TransferRequest, builtin_flows
from harken.errors import ConfigError

NOW = datetime(2025, 3, 5, 15, 0)

VALID = """\
name: test
nodes:
  main:
    say: "Hi."
    slots:
      - name: count
        type: number
        prompt: "How many?"
        validate: {min: 1, max: 9}
    next: done
  done:
    say: "Bye."
    actions:
      - hangup: finished
"""


def compile_error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        FlowAgent.from_yaml(text, filename="flow.yaml")
    return str(info.value)


def test_the_valid_base_compiles() -> None:
    agent = FlowAgent.from_yaml(VALID)
    assert agent.name == "test" and agent.tool_names == frozenset()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "type: number",
            "type: nunber",
            "flow.yaml:7:15: nodes.main.slots[0].type: unknown slot type 'nunber' "
            "(did you mean 'number'?); known types: number, party_size, date, time, name, "
            "phone, yes_no, choice, text",
        ),
        (
            "{min: 1, max: 9}",
            "{min: 1, max: lots}",
            "flow.yaml:9:33: nodes.main.slots[0].validate.max: expected a number, got 'lots'",
        ),
        (
            "next: done",
            "next: dnoe",
            "flow.yaml:10:11: nodes.main.next: no node named 'dnoe' (did you mean 'done'?); "
            "nodes: main, done",
        ),
        (
            "    slots:",
            "    slot:",
            "flow.yaml:5:5: nodes.main.slot: unknown key 'slot' (did you mean 'slots'?); known "
            "keys: say, reprompt, help, slots, intents, transitions, confirm, actions, "
            "on_result, next",
        ),
        (
            'prompt: "How many?"',
            'prompt: "How many {things}?"',
            "flow.yaml:8:17: nodes.main.slots[0].prompt: template names {things}, not a slot",
        ),
        (
            'prompt: "How many?"',
            'prompt: "How many {?"',
            "flow.yaml:8:17: nodes.main.slots[0].prompt: unmatched '{'",
        ),
        (
            "{min: 1, max: 9}",
            "{between: ['17:00', '22:00']}",
            "flow.yaml:9:20: nodes.main.slots[0].validate.between: 'between' does not apply to "
            "a number slot",
        ),
        (
            "      - hangup: finished",
            "      - hangup: finished\n        transfer: desk",
            "flow.yaml:14:9: nodes.done.actions[0]: an action needs exactly one of 'tool', "
            "'hangup', 'transfer'",
        ),
        (
            "name: test\n",
            "name: test\nstart: mian\n",
            "flow.yaml:2:8: start: no node named 'mian' (did you mean 'main'?)",
        ),
        (
            "name: test\n",
            "name: test\nfuzzy_threshold: 2\n",
            "flow.yaml:2:18: fuzzy_threshold: expected a number in (0, 1], got 2.0",
        ),
        (
            "    next: done\n",
            "",
            "flow.yaml:3:3: nodes.main: this node collects slots but has no 'next' or transitions",
        ),
        (
            "    next: done\n",
            "    next: done\n    transitions: [{intent: bok, to: done}]\n",
            "flow.yaml:11:28: nodes.main.transitions[0].intent: no intent named 'bok'",
        ),
        (
            "    next: done\n",
            "    next:\n      - {to: done, when: 'count >> 3'}\n",
            "flow.yaml:11:26: nodes.main.next[0].when: cannot read condition 'count >> 3'",
        ),
        (
            "    next: done\n",
            "    next:\n      - {to: done, when: 'count > 3'}\n",
            "flow.yaml:11:9: nodes.main.next[0]: the last branch needs no 'when' (the default)",
        ),
        (
            "    next: done\n",
            "    next: done\n    intents: {x: {patterns: ['(?P<nope>a)']}}\n",
            "flow.yaml:11:30: nodes.main.intents.x.patterns[0]: no slot named 'nope'",
        ),
        (
            "    next: done\n",
            "    next: done\n    intents: {x: {patterns: ['(']}}\n",
            "flow.yaml:11:30: nodes.main.intents.x.patterns[0]: invalid regular expression",
        ),
        (
            "    next: done\n",
            "    next: done\n    intents: {x: {}}\n",
            "flow.yaml:11:15: nodes.main.intents.x: intent 'x' has no keywords, patterns or "
            "examples",
        ),
        (
            "      - hangup: finished",
            "      - tool: book",
            "flow.yaml:11:3: nodes.done: a node that calls a tool needs on_result",
        ),
        (
            '    say: "Bye."\n',
            '    say: "Bye."\n    on_result: {next: main}\n',
            "flow.yaml:13:5: nodes.done.on_result: on_result needs a tool action in this node",
        ),
        (
            "name: test\n",
            "name: test\nglobal_intents: {desk: {action: transfer, keywords: [desk]}}\n",
            "flow.yaml:2:33: global_intents.desk.action: action 'transfer' needs a target",
        ),
        (
            "name: test\n",
            "name: test\nglobal_intents: {x: {action: anwser, keywords: [x]}}\n",
            "flow.yaml:2:30: global_intents.x.action: expected one of 'answer', 'repeat', 'help', "
            "'transfer', 'goodbye', 'restart', got 'anwser' (did you mean 'answer'?)",
        ),
        (
            "  done:\n",
            "  lost:\n    say: hi\n  done:\n",
            "flow.yaml:11:3: nodes.lost: this node is a dead end: no slots, transitions, next or "
            "actions",
        ),
        (
            "        type: number\n",
            "        type: number\n        assume: pm\n",
            "flow.yaml:8:17: nodes.main.slots[0].assume: only time slots take 'assume'",
        ),
    ],
)
def test_compile_errors_name_file_line_and_field(old: str, new: str, expected: str) -> None:
    assert old in VALID
    message = compile_error(VALID.replace(old, new, 1))
    assert message.startswith(expected), f"\n{message}\n{expected}"


def test_errors_name_the_file_when_loaded_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(VALID.replace("next: done", "next: nowhere"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:10:11: nodes.main.next: no node")):
        FlowAgent.from_yaml(path)
    with pytest.raises(ConfigError, match=re.escape(f"{path}:10:11:")):
        FlowAgent.from_yaml(str(path))


def test_invalid_yaml_and_wrong_top_level() -> None:
    assert compile_error("name: [\n").startswith("flow.yaml:2:1: invalid YAML")
    assert compile_error("- a\n") == "flow.yaml:1:1: expected a mapping, got a list"
    assert compile_error("name: x\nnodes: {}\n").startswith("flow.yaml:2:1: nodes: a flow needs")


def test_slot_type_is_one_per_flow() -> None:
    text = VALID.replace(
        "  done:\n",
        "  other:\n    slots: [{name: count, type: date, prompt: 'When?'}]\n"
        "    next: done\n  done:\n",
    )
    assert compile_error(text).startswith(
        "flow.yaml:12:33: nodes.other.slots[0].type: slot 'count' is a number elsewhere"
    )


def test_builtin_flows() -> None:
    assert "restaurant" in builtin_flows()
    with pytest.raises(ConfigError, match="no built-in flow 'pizza'"):
        FlowAgent.builtin("pizza")
    with pytest.raises(ConfigError, match="not a plain name"):
        FlowAgent.builtin("../etc/passwd")


def test_builtin_yaml_ships_in_the_package() -> None:
    import harken.agent

    flows = Path(harken.agent.__file__).parent / "flows" / "restaurant.yaml"
    assert flows.is_file()
    agent = FlowAgent.from_yaml(flows)
    assert agent.tool_names == FlowAgent.builtin().tool_names


# -- a custom flow with the less common features ------------------------------------------------

CUSTOM = """\
name: clinic
greeting: "Clinic line."
fallback:
  prompts: ["Pardon?"]
  max: 2
  action: hangup
intents:
  visit:
    patterns: ['(?:see|visit) (?:a |the )?(?P<who>doctor|nurse)']
global_intents:
  operator: {action: transfer, keywords: [reception], target: reception, dtmf: "9"}
  start_over: {action: restart, enabled: false}
nodes:
  main:
    say: "Say see a doctor, or see a nurse."
    transitions:
      - {intent: visit, to: urgent, when: 'who == doctor'}
      - {intent: visit, to: nurse}
  urgent:
    slots:
      - name: who
        type: choice
        prompt: "Doctor or nurse?"
        options: {doctor: [gp, physician], nurse: [practice nurse]}
      - name: urgent
        type: yes_no
        prompt: "Is it urgent?"
      - name: notes
        type: text
        required: false
        prompt: "Anything we should know?"
    next:
      - {to: call, when: urgent == true}
      - to: nurse
  nurse:
    say: "The nurse will call you."
    actions: [{transfer: nurse_line}]
  call:
    say: "Checking."
    actions:
      - tool: triage
        args: {notes: "{notes}", who: "{who}", fixed: 3, label: "for {who}"}
    on_result:
      say: "Slot {result.slot}."
      next: bye
  bye:
    actions: [{hangup: done}]
"""


def test_custom_flow_pattern_groups_conditions_choice_yes_no_text_and_tools() -> None:
    agent = FlowAgent.from_yaml(CUSTOM, filename="clinic.yaml")
    assert agent.tool_names == frozenset({"triage"})
    assert agent.transfer_targets == frozenset({"reception", "nurse_line"})
    session = agent.session(now=NOW)
    assert session.start().say == ("Clinic line.", "Say see a doctor, or see a nurse.")
    turn = session.on_text("I want to see a doctor")
    assert (turn.intent, turn.matched_by, turn.node) == ("visit", "pattern", "urgent")
    assert session.state["slots"] == {"who": "doctor"}  # filled from the named group
    assert turn.say == ("Is it urgent?",)
    turn = session.on_text("yes it is")
    assert session.state["slots"]["urgent"] is True and turn.say == ("Anything we should know?",)
    turn = session.on_text("My knee hurts.")
    (request,) = turn.actions
    assert isinstance(request, ToolRequest)
    assert request.args == {
        "notes": "My knee hurts.",
        "who": "doctor",
        "fixed": 3,
        "label": "for doctor",
    }
    # no on_error: sorry, then the fallback ending (a hangup here)
    turn = session.on_tool_result(request.call_id, None, "timed out after 5 s")
    assert turn.say[0] == "Sorry, something went wrong on our side."
    assert isinstance(turn.actions[-1], HangupRequest) and session.done


def test_custom_flow_other_branch_dtmf_choice_and_disabled_global() -> None:
    agent = FlowAgent.from_yaml(CUSTOM)
    session = agent.session(now=NOW)
    session.start()
    turn = session.on_text("visit the nurse")
    assert turn.actions == (TransferRequest("nurse_line", "transfer to nurse_line"),)

    session = agent.session(now=NOW)
    session.start()
    assert session.on_text("start over").say[0] == "Pardon?"  # start_over is disabled
    assert session.on_dtmf("9").actions == (TransferRequest("reception", "caller intent operator"),)


def test_custom_flow_fallback_hangs_up() -> None:
    session = FlowAgent.from_yaml(CUSTOM).session(now=NOW)
    session.start()
    assert session.on_text("hmm").say == ("Pardon?", "Say see a doctor, or see a nurse.")
    turn = session.on_text("hmm")
    assert isinstance(turn.actions[0], HangupRequest)


def test_choice_by_keypad_and_optional_text_skipped() -> None:
    text = CUSTOM.replace(
        "    transitions:\n      - {intent: visit, to: urgent, when: 'who == doctor'}\n"
        "      - {intent: visit, to: nurse}\n",
        "    next: urgent\n",
    )
    session = FlowAgent.from_yaml(text).session(now=NOW)
    assert session.start().say[-1] == "Doctor or nurse?"
    session.on_dtmf("2")
    assert session.state["slots"] == {"who": "nurse"}
    session.on_dtmf("2")  # yes/no by keypad: 2 = no
    assert session.state["slots"]["urgent"] is False
    turn = session.on_text("no thanks")
    assert turn.actions == (TransferRequest("nurse_line", "transfer to nurse_line"),)


def test_a_loop_that_never_waits_is_rejected() -> None:
    text = "name: x\nnodes:\n  a: {say: hi, next: b}\n  b: {say: ho, next: a}\n"
    assert compile_error(text).endswith("a loop that never waits: a -> b -> a")


def test_fixed_lines_and_their_clauses_for_the_tts_cache() -> None:
    from harken.agent.conversation import fixed_clauses
    from harken.agent.flow import FlowAgent
    from harken.conversation import EngineSettings

    agent = FlowAgent.builtin()
    lines = agent.fixed_lines()
    assert "Hi, thanks for calling Luigi's." in lines
    assert "What day would you like to come in?" in lines  # a slot's prompt
    assert not any("{" in line for line in lines)  # lines with placeholders are left out
    clauses = fixed_clauses(lines, 64, EngineSettings().first_clause_words)
    assert "We're at 12 Harbour Street," in clauses  # the first clause the engine sends to TTS
    assert all(len(c) <= 64 for c in clauses) and len(set(clauses)) == len(clauses)
