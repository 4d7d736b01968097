"""Sans-I/O decoding of a chat-completions stream: SSE ``data`` payloads in, events out.

One :class:`ChunkDecoder` per response. Each ``chat.completion.chunk`` is read like this:

* ``choices[i]`` with ``index`` 0 is used (a request asks for one choice); a non-empty
  ``delta.content`` becomes a :class:`~harken.llm.types.TextDelta` at once;
* ``delta.tool_calls`` fragments are gathered by their ``index``: the first fragment of a call
  carries ``id``, ``type`` and ``function.name`` (and usually ``arguments: ""``), later ones
  carry ``function.arguments`` pieces, which are concatenated. Several calls can be open at once
  and their fragments may interleave. A fragment without an ``index`` (some servers) continues
  the call with its ``id``, or the latest call; a missing ``id`` becomes ``call_<index>``;
* a ``finish_reason`` completes the open tool calls: their argument strings are parsed as JSON
  objects (an empty string is ``{}``) and they come out as :class:`~harken.llm.types.ToolCall`
  in index order. Malformed arguments raise :class:`~harken.errors.LLMResponseError` naming the
  tool. Calls still open when the stream ends (``[DONE]`` or end of body) complete then;
* ``usage`` (the ``choices: []`` chunk of ``stream_options.include_usage``) is kept;
  ``[DONE]`` marks the end; a chunk with an ``error`` object (vLLM, LiteLLM and others report
  failures mid-stream that way) raises :class:`~harken.errors.LLMResponseError` with its message;
  a payload that is not a JSON object of this shape raises it too.

:meth:`ChunkDecoder.feed_completion` reads a non-streamed ``chat.completion`` body the same way,
for servers that ignore ``stream: true``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from harken.errors import LLMResponseError
from harken.llm.types import TextDelta, ToolCall

__all__ = ["ChunkDecoder"]


def _excerpt(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(slots=True)
class _PartialCall:
    id: str = ""
    name: str = ""
    pieces: list[str] = field(default_factory=list)
    parsed: dict[str, Any] | None = None  # a server that sent the arguments as an object


class ChunkDecoder:
    """Decoder state for one response. ``got_token`` turns true at the first non-empty content
    or tool-call delta; ``done`` at ``[DONE]``; ``finish_reason`` and ``usage`` hold what the
    server sent."""

    def __init__(self) -> None:
        self.got_token = False
        self.done = False
        self.finish_reason: str | None = None
        self.usage: dict[str, Any] | None = None
        self.saw_tool_call = False
        self._calls: dict[int, _PartialCall] = {}

    def feed(self, data: str) -> list[TextDelta | ToolCall]:
        """Decode one SSE ``data`` payload; return the events it completes."""
        if data.strip() == "[DONE]":
            self.done = True
            return list(self._complete())
        if self.done:
            return []  # nothing counts after [DONE]
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise LLMResponseError(
                f"malformed chunk (not JSON: {exc}): {_excerpt(data)!r}"
            ) from exc
        if not isinstance(doc, dict):
            raise LLMResponseError(f"malformed chunk (not a JSON object): {_excerpt(data)!r}")
        return self._chunk(doc, data)

    def feed_completion(self, doc: Any) -> list[TextDelta | ToolCall]:
        """Decode a whole non-streamed ``chat.completion`` body (already parsed)."""
        if not isinstance(doc, dict):
            raise LLMResponseError("malformed completion (not a JSON object)")
        self._check_error(doc)
        choices = doc.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise LLMResponseError("malformed completion (no choices)")
        first = choices[0]
        message = first.get("message")
        if not isinstance(message, dict):
            raise LLMResponseError("malformed completion (choice has no message)")
        delta = dict(message)
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            delta["tool_calls"] = [
                {**tc, "index": i} if isinstance(tc, dict) else tc for i, tc in enumerate(calls)
            ]
        chunk = {
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": first.get("finish_reason") or "stop"}
            ],
            "usage": doc.get("usage"),
        }
        events = self._chunk(chunk, "")
        self.done = True
        return events

    def end(self) -> list[ToolCall]:
        """The body ended cleanly. A stream with neither ``finish_reason`` nor ``[DONE]`` was cut
        short: :class:`~harken.errors.LLMResponseError`. Otherwise return open tool calls."""
        if not self.done and self.finish_reason is None:
            raise LLMResponseError("the stream ended without finish_reason or [DONE] (cut short)")
        return self._complete()

    @property
    def reason(self) -> str:
        """The finish reason to report: the server's, else ``tool_calls`` or ``stop``."""
        if self.finish_reason:
            return self.finish_reason
        return "tool_calls" if self.saw_tool_call else "stop"

    # ----------------------------------------------------------------------------------------

    @staticmethod
    def _check_error(doc: dict[str, Any]) -> None:
        err = doc.get("error")
        if err:
            message = err.get("message") if isinstance(err, dict) else err
            raise LLMResponseError(f"the server reported an error mid-stream: {message}")

    def _chunk(self, doc: dict[str, Any], raw: str) -> list[TextDelta | ToolCall]:
        self._check_error(doc)
        usage = doc.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = doc.get("choices")
        if choices is None:
            if isinstance(usage, dict):
                return []
            raise LLMResponseError(f"malformed chunk (no choices): {_excerpt(raw)!r}")
        if not isinstance(choices, list):
            raise LLMResponseError(f"malformed chunk (choices is not a list): {_excerpt(raw)!r}")
        out: list[TextDelta | ToolCall] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise LLMResponseError(f"malformed chunk (choice is not an object): {raw[:80]!r}")
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise LLMResponseError(f"malformed chunk (delta is not an object): {raw[:80]!r}")
            content = delta.get("content")
            if isinstance(content, str):
                if content:
                    self.got_token = True
                    out.append(TextDelta(content))
            elif content is not None:
                raise LLMResponseError(f"malformed chunk (content is not text): {raw[:80]!r}")
            calls = delta.get("tool_calls")
            if calls is not None:
                if not isinstance(calls, list):
                    raise LLMResponseError(f"malformed chunk (tool_calls not a list): {raw[:80]!r}")
                for fragment in calls:
                    self._fragment(fragment)
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = str(reason)
                out.extend(self._complete())
        return out

    def _fragment(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise LLMResponseError("malformed tool-call fragment (not an object)")
        call_id = fragment.get("id")
        index = fragment.get("index")
        if not isinstance(index, int) or isinstance(index, bool):
            index = self._index_for(call_id if isinstance(call_id, str) else "")
        part = self._calls.setdefault(index, _PartialCall())
        self.saw_tool_call = True
        if isinstance(call_id, str) and call_id and not part.id:
            part.id = call_id
        function = fragment.get("function") or {}
        if not isinstance(function, dict):
            raise LLMResponseError(f"malformed tool-call fragment #{index} (function)")
        name = function.get("name")
        if isinstance(name, str) and name and name != part.name:
            part.name += name  # the first fragment names it; a repeat of the name is ignored
            self.got_token = True
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            if arguments:
                part.pieces.append(arguments)
                self.got_token = True
        elif isinstance(arguments, dict):
            part.parsed = arguments
            self.got_token = True
        elif arguments is not None:
            raise LLMResponseError(f"malformed tool-call fragment #{index} (arguments)")

    def _index_for(self, call_id: str) -> int:
        if call_id:
            for index, part in self._calls.items():
                if part.id == call_id:
                    return index
            if any(part.id for part in self._calls.values()) or not self._calls:
                return max(self._calls, default=-1) + 1
        return max(self._calls, default=0)

    def _complete(self) -> list[ToolCall]:
        out: list[ToolCall] = []
        for index in sorted(self._calls):
            part = self._calls[index]
            if not part.name:
                raise LLMResponseError(f"tool call #{index} ({part.id or 'no id'}) has no name")
            arguments = part.parsed
            if arguments is None:
                text = "".join(part.pieces).strip()
                try:
                    arguments = orjson.loads(text) if text else {}
                except orjson.JSONDecodeError as exc:
                    raise LLMResponseError(
                        f"tool call {part.name!r} ({part.id or index}) has malformed JSON "
                        f"arguments ({exc}): {_excerpt(text)!r}"
                    ) from exc
                if not isinstance(arguments, dict):
                    raise LLMResponseError(
                        f"tool call {part.name!r} ({part.id or index}) arguments are not a "
                        f"JSON object: {_excerpt(text)!r}"
                    )
            out.append(ToolCall(part.id or f"call_{index}", part.name, arguments))
        self._calls.clear()
        return out
