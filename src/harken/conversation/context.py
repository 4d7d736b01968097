"""The conversation as the language model sees it, rewritten to what the caller really heard.

:class:`ChatContext` holds OpenAI-style messages. Two rules make it truthful on the phone:

* **Heard, not generated.** After a barge-in the assistant messages of the abandoned reply are
  cut to the words the caller heard (:meth:`ChatContext.truncate_reply`, fed from the
  transport's playback report mapped to text through TTS word timings); messages after the cut
  keep their tool calls (those side effects happened) but lose their unheard text.
* **One caller turn, one user message.** When the caller resumes after the agent was cut off
  before saying anything (the endpoint was early), the new words join the previous user message.

Every tool call gets a tool message, even a cancelled one, so the history stays valid for
OpenAI-compatible servers. The oldest turns are dropped past ``max_messages`` (never splitting a
tool call from its result; the system prompt stays).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["ChatContext", "ReplyMessages"]


@dataclass(slots=True)
class ReplyMessages:
    """The assistant messages one reply produced (indices into ``ChatContext.messages``)."""

    indices: list[int] = field(default_factory=list)
    interrupted: bool = False
    spoken: str = ""  # the full text as generated
    heard: str | None = None  # what the caller heard (None until known)


class ChatContext:
    """Messages for an OpenAI-compatible chat model (see the module docstring)."""

    __slots__ = ("max_messages", "merge_next_user", "messages", "system_prompt")

    def __init__(self, system_prompt: str = "", max_messages: int = 80) -> None:
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self.messages: list[dict[str, Any]] = []
        self.merge_next_user = False

    def add_user(self, text: str) -> None:
        if self.merge_next_user and self.messages and self.messages[-1]["role"] == "user":
            self.messages[-1]["content"] = f"{self.messages[-1]['content']} {text}".strip()
        else:
            self.messages.append({"role": "user", "content": text})
        self.merge_next_user = False
        self._trim()

    def add_assistant(self, text: str, tool_calls: list[dict[str, Any]] | None = None) -> int:
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            message["tool_calls"] = tool_calls
        self.messages.append(message)
        return len(self.messages) - 1

    def add_tool_result(self, call_id: str, name: str, result: Any, error: str | None) -> None:
        payload = {"error": error} if error is not None else {"result": result}
        content = orjson.dumps(payload, default=str).decode()
        self.messages.append(
            {"role": "tool", "tool_call_id": call_id, "name": name, "content": content}
        )

    def for_llm(self) -> list[dict[str, Any]]:
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [dict(m) for m in self.messages]

    def truncate_reply(self, reply: ReplyMessages, heard: str) -> None:
        """Cut ``reply``'s assistant text to the first words of ``heard`` (see module doc)."""
        reply.heard = heard
        reply.interrupted = True
        budget = len(heard.split())
        for index in reply.indices:
            if index >= len(self.messages):
                continue
            message = self.messages[index]
            words = (message.get("content") or "").split()
            if budget >= len(words):
                budget -= len(words)
                continue
            message["content"] = " ".join(words[:budget]) or None
            budget = 0
        # a message left with neither text nor tool calls says nothing: drop it
        for index in sorted(reply.indices, reverse=True):
            if index < len(self.messages):
                m = self.messages[index]
                if m["role"] == "assistant" and not m.get("content") and not m.get("tool_calls"):
                    del self.messages[index]
        if not heard.strip():
            self.merge_next_user = True

    def _trim(self) -> None:
        excess = len(self.messages) - self.max_messages
        if excess <= 0:
            return
        cut = excess
        # never start the history with a tool result or an assistant tool-call's orphan
        while cut < len(self.messages) and self.messages[cut]["role"] != "user":
            cut += 1
        del self.messages[:cut]
