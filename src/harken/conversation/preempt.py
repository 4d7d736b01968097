"""Preemptive generation: start the brain's reply before the turn is declared over.

When the caller stops, the words so far (the last interim; then the STT's speculative reading of
the whole turn, if its words differ) are handed to the brain's optional ``prepare(text)``; the
LLM brain starts its request at once. At the final transcript, a prepared reply with the same
words is used (its first tokens may already be there); otherwise it is cancelled. ``counts``
keeps started / used / wasted per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from harken.conversation.brain import Brain, Piece

__all__ = ["Preemptive"]


class Preemptive:
    """One call's preemptive reply (see the module docstring)."""

    __slots__ = ("_prepared", "brain", "counts", "enabled")

    def __init__(self, brain: Brain, enabled: bool) -> None:
        self.brain = brain
        self.enabled = enabled
        self._prepared: Any = None
        #: started, used (the final matched), wasted (it did not)
        self.counts = {"started": 0, "used": 0, "wasted": 0}

    def prepare(self, text: str) -> None:
        """Start (or restart, if the words changed) a reply to ``text``."""
        prepare: Callable[[str], Any] | None = getattr(self.brain, "prepare", None)
        text = text.strip()
        if not self.enabled or prepare is None or not text:
            return
        if self._prepared is not None:
            from harken.conversation.llm_brain import same_words

            if same_words(self._prepared.text, text):
                return  # already under way with these words
        self.drop()
        self._prepared = prepare(text)
        self.counts["started"] += 1

    def drop(self) -> None:
        """The caller went on (or the call ended): the prepared reply is wasted."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.cancel()
            self.counts["wasted"] += 1

    def reply(self, text: str) -> AsyncIterator[Piece]:
        """The reply to the final ``text``: the prepared one if it has the same words."""
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            from harken.conversation.llm_brain import same_words

            if same_words(prepared.text, text):
                self.counts["used"] += 1
                return self.brain.reply(text, prepared=prepared)  # type: ignore[call-arg]
            prepared.cancel()
            self.counts["wasted"] += 1
        return self.brain.reply(text)
