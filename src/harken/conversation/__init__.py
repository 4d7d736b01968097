"""The conversation engine: turn-taking, barge-in, replies, tools and the agents' brains.

* :mod:`.engine` — :class:`ConversationEngine`, the per-call stage;
* :mod:`.states` — the turn state machine (a transition table);
* :mod:`.policy` — barge-in vs backchannel;
* :mod:`.brain` — the :class:`Brain` protocol and the offline :class:`FlowBrain`;
* :mod:`.llm_brain` — :class:`LLMBrain`, an OpenAI-compatible model with tools;
* :mod:`.context` — the chat history, rewritten to what the caller heard;
* :mod:`.tools` — the tool registry with timeouts and cancellation;
* :mod:`.chunker` — LLM tokens to speakable clauses (the first one short).
"""

from harken.conversation.brain import Brain, FlowBrain, Flush, Hangup, Heard, Piece, Say, Transfer
from harken.conversation.engine import ConversationEngine, EngineSettings, ReplyRecord
from harken.conversation.policy import BargeInParams
from harken.conversation.states import State
from harken.conversation.tools import Tool, ToolBox, ToolContext, ToolOutcome, builtin_tools

__all__ = [
    "BargeInParams",
    "Brain",
    "ConversationEngine",
    "EngineSettings",
    "FlowBrain",
    "Flush",
    "Hangup",
    "Heard",
    "Piece",
    "ReplyRecord",
    "Say",
    "State",
    "Tool",
    "ToolBox",
    "ToolContext",
    "ToolOutcome",
    "Transfer",
    "builtin_tools",
]
