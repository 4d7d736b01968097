"""The interface every carrier codec implements, and the state they share.

A codec is a sans-I/O state machine for one carrier media stream (one call). The transport feeds
it each WebSocket message it receives and sends whatever the builders return::

    codec = CODECS["twilio"]()
    event = codec.receive_text(text)       # or codec.receive_bytes(data) for binary frames
    ws.send(codec.media(mulaw_bytes))      # str -> send as a text frame, bytes -> binary frame
    ws.send(codec.mark("utt-7"))
    ws.send(codec.clear())

Rules (the state machine, h11 style)::

    state       inbound allowed                     outbound allowed
    ---------   ---------------------------------   ------------------------
    IDLE        connected, start, unknown events    nothing
    STREAMING   media, dtmf, mark echo, clear ack,  media, mark, clear
                error, stop, unknown events
    STOPPED     nothing                             nothing

* Any inbound message that breaks these rules, or is malformed in any way (not UTF-8, not JSON,
  wrong types, missing fields, bad base64, a second ``start``, a stream id that does not match
  the one from ``start``) raises :class:`~harken.errors.RemoteProtocolError` and nothing else.
* Well-formed messages with an event name the codec does not know return
  :class:`~harken.protocols.events.UnknownEvent` so carriers can add events without ending
  calls; the server logs and ignores them.
* Asking for an outbound message outside STREAMING, or with an invalid argument (empty or
  wrongly sized audio, an empty mark name), raises :class:`~harken.errors.LocalProtocolError`.

Marks and ``clear``: the codec remembers the marks it built that the carrier has not yet echoed.
``clear()`` moves them to a *flushed* list; an echo of a flushed mark comes back as
``MarkEchoed(name, cleared=True)`` (flushed, not played). Carriers that confirm a clear
(``confirms_clear``) produce :class:`~harken.protocols.events.AudioCleared` listing the marks
that were pending. ``marks_echo_on_clear`` records what each carrier documents: True (Twilio,
Telnyx: cleared marks are echoed), False (Plivo: they are not), None (not documented).
"""

from __future__ import annotations

import abc
from collections import deque
from typing import ClassVar, Final, Literal

from harken.errors import LocalProtocolError, RemoteProtocolError

from . import _wire
from .events import AudioCleared, Encoding, Event, MarkEchoed, StreamStopped

__all__ = ["IDLE", "STOPPED", "STREAMING", "CarrierCodec", "State", "frame_bytes"]

State = Literal["idle", "streaming", "stopped"]
IDLE: Final = "idle"
STREAMING: Final = "streaming"
STOPPED: Final = "stopped"

#: Bounds on remembered marks: a carrier that never echoes must not grow a call's memory.
_MAX_PENDING = 1024
_MAX_FLUSHED = 256


def frame_bytes(encoding: Encoding, sample_rate: int, ms: int = 20) -> int:
    """Bytes of ``ms`` milliseconds of mono audio in ``encoding`` at ``sample_rate``."""
    samples = sample_rate * ms // 1000
    return samples if encoding in ("mulaw", "alaw") else samples * 2


class CarrierCodec(abc.ABC):
    """One carrier media stream, seen as bytes/text in and events out (no I/O).

    Class attributes describe the carrier so the server can treat all codecs alike:

    * ``name``: registry key (``"twilio"``, ``"telnyx"``, ...).
    * ``binary_audio``: audio travels as binary WebSocket frames (Vonage); otherwise as base64
      inside JSON text frames.
    * ``supports_marks``: the carrier can report when audio before a marker has played.
    * ``completion``: the wire mechanism that confirms playback (``"mark"``, ``"checkpoint"``,
      ``"notify"``).
    * ``confirms_clear``: the carrier acknowledges ``clear`` (-> :class:`AudioCleared`).
    * ``marks_echo_on_clear``: whether pending marks are echoed when ``clear`` flushes them
      (None: the carrier does not document it).

    Instance attributes: ``encoding``/``sample_rate``/``channels`` describe inbound audio,
    ``output_encoding``/``output_sample_rate`` what :meth:`media` expects (they differ only where
    the carrier lets the two directions use different codecs, e.g. Telnyx). Both are defaults
    until ``start`` arrives. ``stream_id``/``call_id`` are learnt from ``start``.
    """

    name: ClassVar[str]
    binary_audio: ClassVar[bool] = False
    supports_marks: ClassVar[bool] = True
    completion: ClassVar[str] = "mark"
    confirms_clear: ClassVar[bool] = False
    marks_echo_on_clear: ClassVar[bool | None] = None

    def __init__(self, encoding: Encoding = "mulaw", sample_rate: int = 8000) -> None:
        self.state: State = IDLE
        self.encoding: Encoding = encoding
        self.sample_rate = sample_rate
        self.channels = 1
        self.output_encoding: Encoding = encoding
        self.output_sample_rate = sample_rate
        self.stream_id: str | None = None
        self.call_id: str | None = None
        #: Highest carrier sequence number seen, and how often numbers were skipped or went
        #: backwards (Telnyx documents that frames may arrive out of order).
        self.last_sequence: int | None = None
        self.sequence_gaps = 0
        self.sequence_reorders = 0
        self._pending: deque[str] = deque(maxlen=_MAX_PENDING)
        self._flushed: deque[str] = deque(maxlen=_MAX_FLUSHED)
        # For carriers that acknowledge ``clear``: the marks each unacknowledged clear flushed.
        self._clears: deque[tuple[str, ...]] = deque(maxlen=_MAX_FLUSHED)

    # ----------------------------------------------------------------------------------------
    # inbound

    @abc.abstractmethod
    def receive_text(self, text: str | bytes) -> Event:
        """Parse one text frame (``bytes`` are accepted and must be UTF-8)."""

    def media_audio(self, data: bytes) -> bytes | None:
        """The hot path for a text frame: the audio of ``data`` if it is a media message in
        the carrier's usual form, with the effects :meth:`receive_text` would have; None for
        anything else (then pass it to :meth:`receive_text`). By default nothing is taken."""
        return None

    def mark_echo(self, data: bytes) -> tuple[str, bool] | None:
        """The hot path for a mark echo: ``(name, cleared)`` if ``data`` is a mark echo in the
        carrier's usual form, with the effects :meth:`receive_text` would have (the
        :class:`MarkEchoed` it would return, as a tuple); None for anything else. By default
        nothing is taken."""
        return None

    def receive_bytes(self, data: bytes) -> Event:
        """Parse one binary frame. Only Vonage sends binary frames."""
        raise RemoteProtocolError(f"{self.name}: unexpected binary frame ({len(data)} bytes)")

    def connection_lost(self) -> StreamStopped | None:
        """The transport saw the socket close. Returns the :class:`StreamStopped` the carrier
        never sent (Plivo and Vonage end streams by closing the socket), or None if the stream
        had already stopped."""
        if self.state == STOPPED:
            return None
        self._stopped()
        return StreamStopped("closed")

    # ----------------------------------------------------------------------------------------
    # outbound

    @abc.abstractmethod
    def media(self, payload: bytes) -> str | bytes:
        """Build the message that plays ``payload`` (raw audio in ``output_encoding``)."""

    def mark(self, name: str) -> str:
        """Build a marker placed after the audio sent so far; the carrier echoes ``name`` once
        that audio has played (or was cleared)."""
        quoted = _wire.mark_name(name)
        self._require_streaming("mark")
        message = self._build_mark(quoted)
        self._pending.append(name)
        return message

    def clear(self) -> str:
        """Build the message that flushes the carrier's playback buffer (barge-in)."""
        self._require_streaming("clear")
        if self.confirms_clear:
            self._clears.append(tuple(self._pending))
        self._flushed.extend(self._pending)
        self._pending.clear()
        return self._build_clear()

    @abc.abstractmethod
    def _build_mark(self, quoted_name: str) -> str:
        """The mark message; ``quoted_name`` is already a JSON string literal."""

    @abc.abstractmethod
    def _build_clear(self) -> str:
        """The clear message."""

    # ----------------------------------------------------------------------------------------
    # state shared by the subclasses

    @property
    def pending_marks(self) -> tuple[str, ...]:
        """Marks sent and not yet echoed, oldest first (excluding those flushed by ``clear``)."""
        return tuple(self._pending)

    @property
    def frame_bytes(self) -> int:
        """Bytes of 20 ms of outbound audio: the natural unit for :meth:`media`."""
        return frame_bytes(self.output_encoding, self.output_sample_rate)

    def _require_streaming(self, what: str) -> None:
        if self.state != STREAMING:
            raise self._cannot_send(what)

    def _cannot_send(self, what: str) -> LocalProtocolError:
        return LocalProtocolError(
            f"{self.name}: cannot send {what} while the stream is {self.state}"
        )

    def _require_idle(self, event: str) -> None:
        if self.state != IDLE:
            raise RemoteProtocolError(
                f"{self.name}: {event!r} received while the stream is {self.state}"
            )

    def _not_streaming(self, event: str) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{self.name}: {event!r} received while the stream is {self.state}"
        )

    def _check_stream_id(self, value: object, event: str) -> None:
        """A stream id carried by a message must be the one learnt from ``start``."""
        if value is not None and value != self.stream_id and self.stream_id is not None:
            raise RemoteProtocolError(
                f"{self.name} {event}: stream id {value!r:.60} does not match {self.stream_id!r}"
            )

    def _note_sequence(self, seq: int | None) -> None:
        if seq is None or seq == 0:  # Plivo-style carriers send 0 on acknowledgements
            return
        last = self.last_sequence
        if last is None or seq > last:
            if last is not None and seq > last + 1:
                self.sequence_gaps += seq - last - 1
            self.last_sequence = seq
        else:
            self.sequence_reorders += 1

    def _started(self, stream_id: str | None, call_id: str | None) -> None:
        self.state = STREAMING
        self.stream_id = stream_id
        self.call_id = call_id

    def _stopped(self) -> None:
        self.state = STOPPED

    def _mark_echoed(self, name: str) -> MarkEchoed:
        return MarkEchoed(name, cleared=self._mark_cleared(name))

    def _mark_cleared(self, name: str) -> bool:
        """Resolve an echoed mark against what we sent: flushed marks first (the carrier
        returns them before anything sent after the clear), then pending ones. True: it was
        flushed by a ``clear`` (not played)."""
        flushed = self._flushed
        if flushed and name in flushed:
            flushed.remove(name)
            return True
        pending = self._pending
        if pending:
            if pending[0] == name:
                pending.popleft()
            elif name in pending:
                pending.remove(name)
        return False

    def _audio_cleared(self) -> AudioCleared:
        """The carrier acknowledged our oldest unacknowledged ``clear``. The flushed marks are
        kept: should the carrier echo one after all, it is still reported as ``cleared``."""
        return AudioCleared(self._clears.popleft() if self._clears else ())
