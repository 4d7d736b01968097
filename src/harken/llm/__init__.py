"""Streaming chat completions from any OpenAI-compatible server.

:class:`LLMClient` streams :class:`TextDelta`, :class:`ToolCall` and :class:`Finish` events;
:mod:`harken.llm.sse` and :mod:`harken.llm.chunks` are the sans-I/O parsers beneath it. Errors
are :class:`~harken.errors.LLMError` subclasses.
"""

from __future__ import annotations

from harken.llm.chunks import ChunkDecoder
from harken.llm.client import LLMClient, retryable_status
from harken.llm.sse import SSEEvent, SSEParser
from harken.llm.types import Finish, LLMEvent, LLMStats, TextDelta, ToolCall

__all__ = [
    "ChunkDecoder",
    "Finish",
    "LLMClient",
    "LLMEvent",
    "LLMStats",
    "SSEEvent",
    "SSEParser",
    "TextDelta",
    "ToolCall",
    "retryable_status",
]
