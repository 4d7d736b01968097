"""Stages for tests: record what a call's pipeline sees."""

from __future__ import annotations

from typing import TypeVar

from harken.frames import Frame, SystemFrame
from harken.pipeline import Stage

F = TypeVar("F", bound=Frame)


class Recorder(Stage):
    """Passes everything on and records the system frames and downstream frames it saw."""

    def __init__(self, name: str = "recorder") -> None:
        super().__init__(name)
        self.system: list[SystemFrame] = []
        self.down: list[Frame] = []

    def on_down(self, frame: Frame) -> None:
        self.down.append(frame)
        self.push_down(frame)

    def on_system(self, frame: SystemFrame) -> None:
        self.system.append(frame)

    def of(self, kind: type[F]) -> list[F]:
        """Every recorded frame (system or downstream) of type ``kind``, in arrival order."""
        return [f for f in (*self.system, *self.down) if isinstance(f, kind)]
