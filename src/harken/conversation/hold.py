"""Holding the agent's audio while the caller may be cutting in.

:class:`PlaybackHold` is the engine's switch for the transport's pacer: ``hold()`` sends
:class:`~harken.frames.PausePlaybackFrame` (nothing more leaves, nothing is discarded),
``release()`` sends :class:`~harken.frames.ResumePlaybackFrame`. It also keeps the times a
barge-in is measured by (the caller's onset, the moment the audio was held), and the **energy
hold**: caller sound above ``early_dbfs`` for ``early_ms`` over the agent holds the audio before
the VAD's start (which needs 160 ms of speech), and lets go after ``early_s`` unless the VAD
confirms speech by then (a cough, a door: the agent goes on after a short gap). While the caller
still sounds at that moment it looks again every 40 ms, up to ``early_max_s`` after the hold:
the VAD's start comes ~0.35 s after the onset, about when ``early_s`` runs out, and letting go
just before it played a blip of the agent into the caller's sentence.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from harken.audio.level import rms_dbfs
from harken.frames import AudioFrame, PausePlaybackFrame, ResumePlaybackFrame, SystemFrame

__all__ = ["PlaybackHold"]


class PlaybackHold:
    """One call's hold state (see the module docstring)."""

    __slots__ = (
        "_early_timer",
        "_loud_s",
        "_send",
        "early_dbfs",
        "early_max_s",
        "early_ms",
        "early_s",
        "enabled",
        "held",
        "stats",
        "t_held",
        "t_loud",
        "t_onset",
    )

    def __init__(
        self,
        send: Callable[[SystemFrame], bool],
        *,
        enabled: bool = True,
        early_ms: float = 60.0,
        early_dbfs: float = -40.0,
        early_s: float = 0.3,
        early_max_s: float = 1.0,
    ) -> None:
        self._send = send  # delivers a system frame to the call; False when it has closed
        self.enabled = enabled
        self.early_ms = early_ms
        self.early_dbfs = early_dbfs
        self.early_s = early_s
        self.early_max_s = early_max_s
        self.held = False
        self.t_onset: float | None = None  # perf_counter of the caller's onset
        self.t_held: float | None = None  # perf_counter when the audio was held
        self.t_loud = -1e9  # perf_counter of the caller's last frame above early_dbfs
        self._loud_s = 0.0
        self._early_timer: asyncio.TimerHandle | None = None
        #: energy holds made, and released without the VAD's confirmation
        self.stats = {"held": 0, "released": 0}

    def hold(self) -> None:
        if self.enabled and not self.held and self._send(PausePlaybackFrame()):
            self.held = True
            self.t_held = time.perf_counter()

    def release(self) -> None:
        self.cancel_early()
        if self.held and self._send(ResumePlaybackFrame()):
            self.held = False

    def forget(self) -> None:
        """The transport dropped the pause itself (an interruption cleared the audio)."""
        self.held = False
        self.cancel_early()

    def onset(self) -> None:
        """The VAD confirmed caller speech over the agent: hold, keeping an energy hold's times."""
        early = self._early_timer is not None and self.held
        self.cancel_early()
        if not early:
            self.t_onset = time.perf_counter()
            self.t_held = None
            self.hold()

    def sound(self, frame: AudioFrame, agent_busy: bool) -> None:
        """Caller audio over the agent before the VAD's start: hold at once if it lasts."""
        if self.early_ms <= 0 or not self.enabled:
            return
        loud = rms_dbfs(frame.pcm) > self.early_dbfs
        if loud:
            self.t_loud = time.perf_counter()
        if self.held:
            return
        if not loud:
            self._loud_s = 0.0
            return
        self._loud_s += frame.duration
        if self._loud_s * 1000 < self.early_ms or not agent_busy:
            return
        self.t_onset = time.perf_counter() - self._loud_s
        self._loud_s = 0.0
        self.hold()
        self.stats["held"] += 1
        loop = asyncio.get_running_loop()
        self._early_timer = loop.call_later(self.early_s, self._early_release)

    def audible(self, within_s: float = 0.1) -> bool:
        """The caller sounded (above ``early_dbfs``) within the last ``within_s``: speech the
        VAD may not have confirmed yet (it needs ~0.35 s of it)."""
        return time.perf_counter() - self.t_loud < within_s

    def _early_release(self) -> None:
        """The VAD has not confirmed speech: a noise, not the caller, unless it is still
        sounding (then look again shortly, up to ``early_max_s``). The agent goes on."""
        self._early_timer = None
        held_s = time.perf_counter() - (self.t_held or 0.0)
        if self.held and self.audible() and held_s < self.early_max_s:
            loop = asyncio.get_running_loop()
            self._early_timer = loop.call_later(0.04, self._early_release)
            return
        self.stats["released"] += 1
        self.release()

    def cancel_early(self) -> None:
        if self._early_timer is not None:
            self._early_timer.cancel()
            self._early_timer = None
