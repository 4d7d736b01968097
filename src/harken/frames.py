"""Frame types: the only things that travel through a harken pipeline.

Three families, told apart by the class attribute ``kind``:

* **system** frames (``KIND_SYSTEM``) overtake everything. The runtime delivers them synchronously
  to every stage of the call at once (``Stage.on_system``); they never wait in a lane. Start,
  cancel, interruption, user/agent started/stopped speaking and DTMF are system frames.
* **control** frames (``KIND_CONTROL``) travel *in order* with data, so they can mark positions in
  the stream (end of an LLM response, a playback mark). :class:`EndFrame` is a control frame on
  purpose: a graceful end must drain the audio queued before it. :class:`ErrorFrame` is a control
  frame that travels *upstream* from the stage that failed.
* **data** frames (``KIND_DATA``): audio, text, transcripts, LLM tokens.

``interruptible`` says whether an interruption may discard the frame while it waits in a lane:
data and most control frames are interruptible; :class:`EndFrame` and :class:`ToolResultFrame` are
not (the call must still end; a tool's side effect has happened and its result must be kept).

This module imports nothing else of harken. Frames are slotted dataclasses: creating one costs a
few hundred nanoseconds and ~60-100 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

KIND_SYSTEM = 0
KIND_CONTROL = 1
KIND_DATA = 2

_INT16_BYTES = 2


@dataclass(slots=True)
class Frame:
    """Base of every frame."""

    kind: ClassVar[int] = KIND_DATA
    interruptible: ClassVar[bool] = True
    is_audio: ClassVar[bool] = False


# --------------------------------------------------------------------------------------------
# data frames


@dataclass(slots=True)
class AudioFrame(Frame):
    """Mono or interleaved PCM, signed 16-bit little-endian.

    ``timestamp`` is the media time of the first sample in seconds since the call's start.
    """

    pcm: bytes
    sample_rate: int
    channels: int = 1
    timestamp: float = 0.0

    is_audio: ClassVar[bool] = True

    @property
    def num_samples(self) -> int:
        """Samples per channel."""
        return len(self.pcm) // (_INT16_BYTES * self.channels)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sample_rate


@dataclass(slots=True)
class TextFrame(Frame):
    """Text meant for the next stage (e.g. a clause for TTS)."""

    text: str


@dataclass(slots=True)
class TranscriptFrame(Frame):
    """Speech recognised from the caller. ``final`` is False for interim (partial) results.

    ``speculative`` marks an interim that reads *all* the speech up to the caller's latest stop
    (the final the turn gets unless speech resumes): turn detection and barge-in can act on it
    before the turn is over.
    """

    text: str
    final: bool = True
    confidence: float | None = None
    language: str | None = None
    timestamp: float = 0.0
    speculative: bool = False


@dataclass(slots=True)
class LLMTokenFrame(Frame):
    """A piece of a streamed language-model reply."""

    text: str


# --------------------------------------------------------------------------------------------
# control frames (ordered with data)


@dataclass(slots=True)
class ControlFrame(Frame):
    """Base of ordered control frames."""

    kind: ClassVar[int] = KIND_CONTROL


@dataclass(slots=True)
class EndFrame(ControlFrame):
    """Graceful end: travels behind queued data, so everything before it is delivered first."""

    reason: str = "end"

    interruptible: ClassVar[bool] = False


@dataclass(slots=True)
class LLMResponseStartFrame(ControlFrame):
    """A language-model reply begins."""


@dataclass(slots=True)
class LLMResponseEndFrame(ControlFrame):
    """A language-model reply is complete."""


@dataclass(slots=True)
class TTSStartedFrame(ControlFrame):
    """Synthesis of an utterance begins; ``utterance_id`` ties marks and playback reports to it.

    ``live`` marks audio produced in real time (an echo, a relayed stream): after a stall the
    transport drops what the stall made stale instead of carrying the delay for the rest of the
    call. Synthesised speech is not live: every sample of it is played.
    """

    utterance_id: int = 0
    text: str = ""
    live: bool = False


@dataclass(slots=True)
class TTSStoppedFrame(ControlFrame):
    """Synthesis of an utterance is complete (its audio has been emitted, not yet played)."""

    utterance_id: int = 0


@dataclass(slots=True)
class MarkFrame(ControlFrame):
    """A named position in the outbound audio; the transport reports when it has been played."""

    name: str


@dataclass(slots=True)
class ToolResultFrame(ControlFrame):
    """The result of a tool call. Never discarded: the tool's side effect has already happened."""

    call_id: str
    name: str
    result: Any = None

    interruptible: ClassVar[bool] = False


@dataclass(slots=True)
class HangupFrame(ControlFrame):
    """The agent ends the call once the audio before this frame has played."""

    reason: str = "agent"

    interruptible: ClassVar[bool] = False


@dataclass(slots=True)
class TransferFrame(ControlFrame):
    """The agent moves the call to ``target`` (a number or SIP URI) once the audio before this
    frame has played; the transport asks the carrier to do it."""

    target: str = ""
    reason: str = ""

    interruptible: ClassVar[bool] = False


@dataclass(slots=True)
class ErrorFrame(ControlFrame):
    """A stage failed. Pushed *upstream* from the failing stage, inline, and reaches the call's
    error hook at the head of the pipeline; ``fatal`` ends the call."""

    error: BaseException
    stage: str = ""
    fatal: bool = False

    interruptible: ClassVar[bool] = False


# --------------------------------------------------------------------------------------------
# system frames (overtake everything)


@dataclass(slots=True)
class SystemFrame(Frame):
    """Base of system frames: delivered at once to every stage, never queued."""

    kind: ClassVar[int] = KIND_SYSTEM
    interruptible: ClassVar[bool] = False


@dataclass(slots=True)
class StartFrame(SystemFrame):
    """The call starts. Carries the audio rates the transport speaks."""

    call_id: str = ""
    sample_rate_in: int = 16000
    sample_rate_out: int = 16000
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class CancelFrame(SystemFrame):
    """Immediate stop: queued work is discarded."""

    reason: str = "cancel"


@dataclass(slots=True)
class InterruptionFrame(SystemFrame):
    """The caller cut in: abandon the current reply (queued audio, LLM and TTS work)."""

    generation: int = 0


@dataclass(slots=True)
class PausePlaybackFrame(SystemFrame):
    """Hold the agent's outbound audio (caller speech began over it: maybe a barge-in, maybe a
    backchannel). Nothing is discarded; :class:`ResumePlaybackFrame` continues where it held,
    an :class:`InterruptionFrame` drops it."""


@dataclass(slots=True)
class ResumePlaybackFrame(SystemFrame):
    """Continue the outbound audio held by :class:`PausePlaybackFrame`."""


@dataclass(slots=True)
class UserStartedSpeakingFrame(SystemFrame):
    """Voice activity from the caller began."""

    timestamp: float = 0.0


@dataclass(slots=True)
class UserStoppedSpeakingFrame(SystemFrame):
    """Voice activity from the caller stopped."""

    timestamp: float = 0.0


@dataclass(slots=True)
class UserTurnEndFrame(SystemFrame):
    """The caller has finished their turn: the agent may answer.

    ``speech_end`` is the media time (s) the caller's speech stopped; ``reason`` names the rule
    that decided (``"model"`` semantic turn model, ``"text"`` transcript completeness,
    ``"silence"`` backstop timer); ``confidence`` is the model's probability where one was used.
    """

    speech_end: float = 0.0
    reason: str = ""
    confidence: float | None = None


@dataclass(slots=True)
class AgentStartedSpeakingFrame(SystemFrame):
    """The first audio of an agent utterance left for the caller."""

    utterance_id: int = 0


@dataclass(slots=True)
class AgentStoppedSpeakingFrame(SystemFrame):
    """An agent utterance finished playing, or was cut off.

    ``played_s`` is how much of it the caller heard; ``strategy`` names what resolved completion
    (``"mark"``, ``"drained"``, ``"silence"``, ``"deadman"``, ``"interrupted"``).
    """

    utterance_id: int = 0
    played_s: float = 0.0
    interrupted: bool = False
    strategy: str = ""


@dataclass(slots=True)
class DTMFFrame(SystemFrame):
    """A keypad digit from the caller (``0-9``, ``*``, ``#``, ``A-D``)."""

    digit: str
    duration_ms: int = 0
