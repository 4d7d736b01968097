"""Stereo call recordings: the caller on the left channel, the agent on the right.

:class:`StereoWavWriter` writes a 16-bit PCM WAV file incrementally while the call runs. Both
channels share one timeline, in samples at ``sample_rate`` from the call's start: audio handed to
``write_caller``/``write_agent`` is placed at ``media_time_s`` (the time of its first sample),
gaps are filled with silence, and audio within ``snap_s`` (5 ms) of where the channel ends is
appended contiguously (timestamp jitter must not click). Each channel only moves forward: audio
for a time already recorded on that channel is dropped (``dropped_samples`` counts it).

The two channels arrive out of step (the caller's audio as the carrier sends it, the agent's as
it is played). Stereo frames are written up to where *both* channels have audio; the one ahead
waits in memory, but at most ``max_skew_s`` (0.5 s): past that the lagging channel is padded with
silence and its late audio dropped. So memory per call is bounded by about ``max_skew_s`` of
audio plus one chunk, whatever the call's length; a long gap is filled one second at a time.

Crash safety: the header's RIFF and data sizes are patched, and the buffered bytes flushed to
the OS, every ``sync_every_s`` (1 s) of wall time and on close. Data is flushed before the header
that counts it, so a process killed at any moment leaves a valid file holding at least the audio
up to the last sync (bytes after the counted size are ignored by readers).

Blocking: writes are small (a 20 ms chunk is 640 bytes at 8 kHz, 1.9 kB at 24 kHz) and go into
a 64 kB userspace buffer, then to the OS page cache; nothing calls ``fsync``. That costs
microseconds on the event loop, so the writer runs inline rather than on a thread (a thread hop
per chunk would cost more than the write). Call it from one thread.

The audio for both channels must already be at ``sample_rate`` (mono, signed 16-bit little
endian); resample before writing.
"""

from __future__ import annotations

import os
import struct
import time
from types import TracebackType
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from harken.errors import AudioError

__all__ = ["StereoWavWriter"]

Pcm = bytes | bytearray | memoryview

_HEADER_BYTES = 44
_MAX_DATA_BYTES = 0xFFFFFFFF - 36
_GAP_STEP_S = 1.0


class _Channel:
    """One channel's samples not yet written; ``end`` is the timeline position after them."""

    __slots__ = ("buf", "end")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.end = 0

    def append(self, pcm: Pcm) -> None:
        self.buf += pcm
        self.end += len(pcm) // 2

    def pad(self, samples: int) -> None:
        if samples > 0:
            self.buf += bytes(2 * samples)
            self.end += samples

    def take(self, samples: int) -> npt.NDArray[np.int16]:
        out = np.frombuffer(self.buf, dtype="<i2", count=samples).copy()
        del self.buf[: 2 * samples]
        return out


def _header(sample_rate: int, data_bytes: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        2,  # channels
        sample_rate,
        sample_rate * 4,  # byte rate
        4,  # block align
        16,  # bits per sample
        b"data",
        data_bytes,
    )


class StereoWavWriter:
    """Write a call's audio to ``path`` as it happens (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        sample_rate: int,
        *,
        max_skew_s: float = 0.5,
        snap_s: float = 0.005,
        sync_every_s: float = 1.0,
    ) -> None:
        if not 1000 <= sample_rate <= 192_000:
            raise AudioError(f"unsupported sample rate {sample_rate}")
        if max_skew_s <= 0 or snap_s < 0 or sync_every_s <= 0:
            raise AudioError("max_skew_s and sync_every_s must be > 0, snap_s >= 0")
        self.path = os.fspath(path)
        self.sample_rate = sample_rate
        self.sync_every_s = sync_every_s
        self._skew = max(1, round(max_skew_s * sample_rate))
        self._snap = round(snap_s * sample_rate)
        self._gap_step = round(_GAP_STEP_S * sample_rate)
        self._left = _Channel()
        self._right = _Channel()
        self._frames = 0  # stereo frames written to the file
        self._synced_frames = -1
        self._last_sync = 0.0
        self.dropped_samples = 0
        self._closed = False
        self._file: BinaryIO = open(self.path, "wb", buffering=64 * 1024)  # noqa: SIM115
        self._file.write(_header(sample_rate, 0))
        self._sync()

    # --- input ----------------------------------------------------------------------------

    def write_caller(self, pcm: Pcm, media_time_s: float) -> None:
        """Caller audio (left channel) whose first sample plays at ``media_time_s``."""
        self._place(self._left, pcm, media_time_s)

    def write_agent(self, pcm: Pcm, media_time_s: float) -> None:
        """Agent audio (right channel) whose first sample plays at ``media_time_s``."""
        self._place(self._right, pcm, media_time_s)

    @property
    def frames_written(self) -> int:
        """Stereo frames in the file so far (not counting audio still held for alignment)."""
        return self._frames

    @property
    def duration_s(self) -> float:
        return self._frames / self.sample_rate

    def _place(self, ch: _Channel, pcm: Pcm, media_time_s: float) -> None:
        if self._closed:
            raise AudioError(f"WAV writer for {self.path} is closed")
        if len(pcm) % 2:
            raise AudioError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
        if not media_time_s >= 0:  # also rejects NaN
            raise AudioError(f"media time must be >= 0, got {media_time_s}")
        start = round(media_time_s * self.sample_rate)
        n = len(pcm) // 2
        if abs(start - ch.end) <= self._snap:
            start = ch.end
        if start < ch.end:  # audio for time already recorded on this channel
            late = min(n, ch.end - start)
            self.dropped_samples += late
            pcm = memoryview(pcm)[2 * late :]
            if not pcm:
                return
        while ch.end < start:  # fill the gap a second at a time, writing as we go
            ch.pad(min(start - ch.end, self._gap_step))
            self._pump()
        ch.append(pcm)
        self._pump()

    def _pump(self) -> None:
        left, right = self._left, self._right
        floor = max(left.end, right.end) - self._skew
        for ch in (left, right):
            if ch.end < floor:
                ch.pad(floor - ch.end)
        self._emit(min(left.end, right.end) - self._frames)
        if time.monotonic() - self._last_sync >= self.sync_every_s:
            self._sync()

    def _emit(self, frames: int) -> None:
        if frames <= 0:
            return
        if (self._frames + frames) * 4 > _MAX_DATA_BYTES:
            raise AudioError(f"WAV file {self.path} would exceed 4 GiB")
        stereo = np.empty((frames, 2), dtype="<i2")
        stereo[:, 0] = self._left.take(frames)
        stereo[:, 1] = self._right.take(frames)
        self._file.write(stereo.tobytes())
        self._frames += frames

    # --- the file -------------------------------------------------------------------------

    def _sync(self) -> None:
        """Flush the data, then patch the header to count it (data first: see the docstring)."""
        self._last_sync = time.monotonic()
        if self._frames == self._synced_frames:
            return
        f = self._file
        f.flush()
        data_bytes = self._frames * 4
        f.seek(4)
        f.write(struct.pack("<I", 36 + data_bytes))
        f.seek(40)
        f.write(struct.pack("<I", data_bytes))
        f.seek(_HEADER_BYTES + data_bytes)
        f.flush()
        self._synced_frames = self._frames

    def close(self) -> None:
        """Pad the shorter channel to the longer one's end, write everything and fix the header."""
        if self._closed:
            return
        try:
            end = max(self._left.end, self._right.end)
            self._left.pad(end - self._left.end)
            self._right.pad(end - self._right.end)
            self._emit(end - self._frames)
            self._sync()
        finally:
            self._closed = True
            self._file.close()

    def __enter__(self) -> StereoWavWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
