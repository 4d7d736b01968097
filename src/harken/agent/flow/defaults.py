"""The global intents every flow has unless its YAML replaces or disables them.

A flow's ``global_intents`` entry with one of these names replaces the default entirely (so a
flow can change the operator's transfer target, or the goodbye keywords); ``enabled: false``
turns one off.

=============  ========  =====================================================================
name           action    recognised by
=============  ========  =====================================================================
repeat         repeat    "what?", "sorry?", "pardon", "say that again", "come again", "didn't
                         catch that", keypad ``*``
help           help      "help", "what are my options", "what can you do"
operator       transfer  "operator", "human", "real person", "representative", "speak to
                         someone", keypad ``0``
goodbye        goodbye   "bye", "goodbye", "hang up"
start_over     restart   "start over", "start again", "from the beginning"
=============  ========  =====================================================================

The built-in intents ``yes`` and ``no`` (the yes/no slot parser as an intent) may be named by any
transition without being defined.
"""

from __future__ import annotations

from harken.agent.flow.schema import GlobalIntentDef

__all__ = ["BUILTIN_YES_NO", "DEFAULT_GLOBALS"]

BUILTIN_YES_NO = {"yes": True, "no": False}

DEFAULT_GLOBALS: dict[str, GlobalIntentDef] = {
    "repeat": GlobalIntentDef(
        action="repeat",
        keywords=("say that again", "repeat that", "repeat yourself", "come again", "once more"),
        patterns=(
            r"^(?:um |uh |oh |sorry )?(?:what|huh|pardon|sorry|excuse me|come again)"
            r"(?: was that| did you say| again)?$",
            r"\b(?:didnt|did not|couldnt|could not) (?:catch|hear|get|understand)"
            r" (?:that|you|it)\b",
            r"\b(?:can|could) you repeat\b",
        ),
        dtmf="*",
    ),
    "help": GlobalIntentDef(
        action="help",
        keywords=("help", "what are my options", "what can you do", "what can i say"),
    ),
    "operator": GlobalIntentDef(
        action="transfer",
        keywords=(
            "operator",
            "human",
            "real person",
            "representative",
            "live agent",
            "speak to someone",
            "talk to someone",
            "speak to a person",
            "talk to a person",
            "speak to somebody",
            "talk to somebody",
        ),
        say="Sure, let me put you through to someone.",
        target="operator",
        reason="caller asked for a person",
        dtmf="0",
    ),
    "goodbye": GlobalIntentDef(
        action="goodbye",
        keywords=("bye", "goodbye", "good bye", "bye bye", "hang up"),
    ),
    "start_over": GlobalIntentDef(
        action="restart",
        keywords=("start over", "start again", "begin again", "from the beginning", "restart"),
        say="Okay, let's start over.",
    ),
}
