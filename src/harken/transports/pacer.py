"""Outbound pacing: audio leaves in real time with a small, bounded lead over the listener.

The :class:`Pacer` is pure (time is passed in). It holds outbound audio already in the wire
encoding, cut into 20 ms chunks, with named marks at positions in the stream, and decides what to
release *now* so that no more than ``lead_s`` of audio waits at the far end. Keeping the far-end
queue short is what makes a ``clear`` take effect at once and makes marks map to what was played.

The far end's queue is modelled as ``far_end``: the wall-clock time at which it will have played
everything released so far. Releasing a chunk moves it by the chunk's duration; if the far end ran
dry (a stall, or silence), ``far_end`` is first brought up to ``now``. After a stall the pacer
therefore *catches up* (releases up to the lead at once) instead of carrying the delay for the
rest of the call.
"""

from __future__ import annotations

from typing import NamedTuple

from harken.errors import AudioError

AUDIO = 0
MARK = 1


class Release(NamedTuple):
    """One thing to send: a chunk of audio (``kind == AUDIO``) or a mark (``kind == MARK``).

    ``offset_s`` is the stream position (seconds of audio released before it) where it sits.
    (A tuple: one is built per 20 ms chunk per call, through ``tuple.__new__``.)
    """

    kind: int
    data: bytes = b""
    name: str = ""
    offset_s: float = 0.0


_new_tuple = tuple.__new__


class Pacer:
    """Real-time release of outbound audio with a bounded lead (see the module docstring)."""

    __slots__ = (
        "_buf",
        "_marks",
        "bytes_per_s",
        "chunk_bytes",
        "dropped_bytes",
        "far_end",
        "lead_s",
        "paused",
        "pushed_bytes",
        "sent_bytes",
        "silence",
        "step_s",
    )

    def __init__(self, chunk_bytes: int, bytes_per_s: int, silence: bytes, lead_s: float = 0.08):
        if chunk_bytes <= 0 or bytes_per_s <= 0:
            raise AudioError("pacer needs a positive chunk size and byte rate")
        if len(silence) != chunk_bytes:
            raise AudioError("silence must be exactly one chunk long")
        self.chunk_bytes = chunk_bytes
        self.bytes_per_s = bytes_per_s
        self.silence = silence
        self.lead_s = lead_s
        self.step_s = chunk_bytes / bytes_per_s  # one chunk's duration
        self._buf = bytearray()
        self._marks: list[tuple[int, str]] = []  # (stream byte offset, name); a few at most
        self.pushed_bytes = 0  # stream offset of the end of everything pushed
        self.sent_bytes = 0  # stream offset of the end of everything released
        self.dropped_bytes = 0  # stale live audio dropped by trim()
        self.far_end = 0.0
        #: while True nothing is released (a possible barge-in is being checked); the far end
        #: plays out what it holds (at most ``lead_s``) and the rest waits here
        self.paused = False

    # --- input -------------------------------------------------------------------------------

    def push(self, data: bytes | memoryview) -> None:
        """Queue audio (wire encoding, any length)."""
        self._buf += data
        self.pushed_bytes += len(data)

    def flush(self) -> None:
        """Pad a partial last chunk with silence so everything queued can be released."""
        rest = len(self._buf) % self.chunk_bytes
        if rest:
            pad = self.chunk_bytes - rest
            self._buf += self.silence[:pad]
            self.pushed_bytes += pad

    def mark(self, name: str) -> float:
        """Place a mark after the audio queued so far (flushing it); returns its offset (s)."""
        self.flush()
        self._marks.append((self.pushed_bytes, name))
        return self.pushed_bytes / self.bytes_per_s

    # --- output ------------------------------------------------------------------------------

    def release(self, now: float) -> list[Release]:
        """What to send now; never more than ``lead_s`` is queued at the far end afterwards."""
        far = self.far_end
        if far < now:
            far = self.far_end = now
        if self.paused:
            return []
        buf = self._buf
        marks = self._marks
        chunk = self.chunk_bytes
        if len(buf) < chunk and not marks:  # nothing whole to send (the usual idle check)
            return []
        out: list[Release] = []
        limit = now + self.lead_s + 1e-9
        step = self.step_s
        bps = self.bytes_per_s
        sent = self.sent_bytes
        while True:
            if marks and marks[0][0] <= sent:
                offset, name = marks.pop(0)
                out.append(_new_tuple(Release, (MARK, b"", name, offset / bps)))
                continue
            if len(buf) < chunk or far + step > limit:
                break
            if len(buf) == chunk:  # in step: exactly one chunk waits (one copy, not two)
                data = bytes(buf)
                buf.clear()
            else:
                data = bytes(buf[:chunk])
                del buf[:chunk]
            out.append(_new_tuple(Release, (AUDIO, data, "", sent / bps)))
            sent += chunk
            far += step
        self.sent_bytes = sent
        self.far_end = far
        return out

    def pass_through(self, data: bytes, now: float, live_max_s: float | None = None) -> bool:
        """The in-step fast path of :meth:`push` + :meth:`trim_live` + :meth:`release` for one
        chunk. When nothing is held or marked here, playback is not paused, ``data`` is exactly
        one chunk and the far end has room for it (within the lead and, for live audio, within
        ``live_max_s``), count it as pushed and released and return True: the caller sends
        ``data`` now, exactly what :meth:`release` would have returned. Otherwise change nothing
        and return False: the caller takes the general path."""
        if self.paused or self._buf or self._marks or len(data) != self.chunk_bytes:
            return False
        far = self.far_end
        if far < now:
            far = now
        step = self.step_s
        if far + step > now + self.lead_s + 1e-9:  # the lead is full: release would hold it
            return False
        if live_max_s is not None and step + (far - now) - live_max_s > 1e-9:  # trim_live's test
            return False
        chunk = self.chunk_bytes
        self.pushed_bytes += chunk
        self.sent_bytes += chunk
        self.far_end = far + step
        return True

    def next_due(self, now: float) -> float | None:
        """When :meth:`release` will next have something to send (None: nothing waits)."""
        if self.paused:
            return None
        if self._marks and self._marks[0][0] <= self.sent_bytes:
            return now
        if len(self._buf) < self.chunk_bytes:
            return None
        return max(now, self.far_end + self.chunk_bytes / self.bytes_per_s - self.lead_s)

    def trim_live(self, now: float, max_s: float) -> None:
        """Keep at most ``max_s`` of audio between now and the newest sample (held here plus
        queued at the far end), dropping the oldest held audio beyond it (see :meth:`trim`)."""
        bps = self.bytes_per_s
        held = len(self._buf) / bps
        far = self.far_end - now
        excess = held + (far if far > 0.0 else 0.0) - max_s
        if excess > 1e-9:
            self.trim(held - excess if held > excess else 0.0)

    def trim(self, keep_s: float) -> float:
        """Drop the oldest held audio beyond ``keep_s`` (live audio a stall made stale).

        The dropped bytes count as released (stream offsets stay consistent, marks inside them
        come out on the next :meth:`release`) but are never played. Returns seconds dropped.
        """
        keep = int(keep_s * self.bytes_per_s)
        keep -= keep % self.chunk_bytes
        excess = len(self._buf) - keep
        excess -= excess % self.chunk_bytes
        if excess <= 0:
            return 0.0
        del self._buf[:excess]
        self.sent_bytes += excess
        self.dropped_bytes += excess
        return excess / self.bytes_per_s

    def clear(self, now: float) -> float:
        """Drop everything not yet released and forget the far end's queue (a barge-in).

        Returns the seconds of audio dropped here; marks not yet released are dropped too.
        """
        dropped = len(self._buf) / self.bytes_per_s
        self._buf.clear()
        self._marks.clear()
        self.pushed_bytes = self.sent_bytes
        self.far_end = now
        self.paused = False
        return dropped

    # --- state -------------------------------------------------------------------------------

    @property
    def queued_s(self) -> float:
        """Audio held here, not yet released."""
        return len(self._buf) / self.bytes_per_s

    def far_queue_s(self, now: float) -> float:
        """Audio released and, by the clock, not yet played at the far end."""
        return max(0.0, self.far_end - now)

    def played_offset(self, now: float) -> float:
        """Stream position the far end has reached by the clock (seconds)."""
        return self.sent_bytes / self.bytes_per_s - self.far_queue_s(now)

    def remaining_s(self, now: float) -> float:
        """Everything still to be heard: held here plus queued at the far end."""
        return self.queued_s + self.far_queue_s(now)

    @property
    def idle(self) -> bool:
        return not self._buf and not self._marks

    @property
    def holding(self) -> bool:
        """Audio or marks wait here (``not idle``)."""
        return bool(self._buf or self._marks)
