"""The stage protocol and the composite :class:`Pipeline`.

A stage is a plain object with two hot-path methods::

    on_down(frame)   a frame arrives from upstream   -> usually self.push_down(...)
    on_up(frame)     a frame arrives from downstream -> usually self.push_up(...)

``push_down`` / ``push_up`` are *attributes* holding the next stage's entry method, bound when the
call is wired, so passing a frame on is one direct Python call: no queue, no task switch, no
allocation. A :class:`Pipeline` is itself a stage; wiring flattens it, so nesting costs nothing at
run time.

System frames never travel this way: the call delivers them to every stage through
:meth:`Stage.on_system` (see :mod:`harken.pipeline.call`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from harken.errors import PipelineError
from harken.frames import Frame, SystemFrame

if TYPE_CHECKING:
    from harken.pipeline.call import Call

Push = Callable[[Frame], None]


def _unlinked(frame: Frame) -> None:
    raise PipelineError(f"stage is not wired into a call; cannot pass on {type(frame).__name__}")


class Stage:
    """Base class of every pipeline stage (CPU-only stages run inline, as direct calls)."""

    __slots__ = ("call", "name", "push_down", "push_up")

    def __init__(self, name: str | None = None) -> None:
        self.name: str = name or type(self).__name__
        self.push_down: Push = _unlinked
        self.push_up: Push = _unlinked
        self.call: Call | None = None

    # --- hot path: override these ----------------------------------------------------------

    def on_down(self, frame: Frame) -> None:
        """Handle a frame travelling downstream; the default passes it on."""
        self.push_down(frame)

    def on_up(self, frame: Frame) -> None:
        """Handle a frame travelling upstream; the default passes it on."""
        self.push_up(frame)

    def on_system(self, frame: SystemFrame) -> None:
        """React to a system frame; the call delivers each one to every stage synchronously."""

    # --- lifecycle ---------------------------------------------------------------------------

    async def setup(self) -> None:
        """Acquire resources before the call starts (connections, per-call model state)."""

    async def teardown(self) -> None:
        """Release resources once the call has finished (after end or cancel)."""

    def broadcast(self, frame: SystemFrame) -> None:
        """Send a system frame to every stage of this stage's call (e.g. a VAD's speech start)."""
        call = self.call
        if call is None:
            raise PipelineError(f"stage {self.name!r} is not part of a call")
        call.system(frame)

    # --- wiring (used by the call; rarely overridden) ----------------------------------------

    def entry_down(self) -> Push:
        """What the stage above calls to send a frame down into this stage."""
        return self.on_down

    def entry_up(self) -> Push:
        """What the stage below calls to send a frame up into this stage."""
        return self.on_up

    def link_down(self, target: Push) -> None:
        self.push_down = target

    def link_up(self, target: Push) -> None:
        self.push_up = target

    def bind(self, call: Call) -> None:
        if self.call is not None and self.call is not call:
            raise PipelineError(f"stage {self.name!r} already belongs to another call")
        self.call = call

    def leaves(self) -> Iterator[Stage]:
        """The non-composite stages in pipeline order."""
        yield self

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Pipeline(Stage):
    """A sequence of stages that is itself a stage: pipelines nest freely."""

    __slots__ = ("stages",)

    def __init__(self, stages: Sequence[Stage], name: str | None = None) -> None:
        super().__init__(name)
        self.stages: tuple[Stage, ...] = tuple(stages)
        seen: set[int] = set()
        for leaf in self.leaves():
            if id(leaf) in seen:
                raise PipelineError(f"stage {leaf.name!r} appears twice in pipeline {self.name!r}")
            seen.add(id(leaf))

    def on_down(self, frame: Frame) -> None:
        self.entry_down()(frame)

    def on_up(self, frame: Frame) -> None:
        self.entry_up()(frame)

    def entry_down(self) -> Push:
        return self.stages[0].entry_down() if self.stages else self.push_down

    def entry_up(self) -> Push:
        return self.stages[-1].entry_up() if self.stages else self.push_up

    def link_down(self, target: Push) -> None:
        self.push_down = target
        for stage in reversed(self.stages):
            stage.link_down(target)
            target = stage.entry_down()

    def link_up(self, target: Push) -> None:
        self.push_up = target
        for stage in self.stages:
            stage.link_up(target)
            target = stage.entry_up()

    def bind(self, call: Call) -> None:
        super().bind(call)
        for stage in self.stages:
            stage.bind(call)

    def leaves(self) -> Iterator[Stage]:
        for stage in self.stages:
            yield from stage.leaves()
