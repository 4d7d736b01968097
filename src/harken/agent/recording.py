"""Stereo call recordings: the caller on the left channel, the agent on the right.

:class:`RecordingTap` is an inline stage placed first in a call's pipeline (``records.wav_dir``
set). It writes the caller's audio as it arrives and,
through the transport's ``on_sent`` hook, the agent's audio as it leaves for the caller (so audio
a barge-in discarded is never in the recording), both placed by the loop time since the call
started (one clock for both channels). The
:class:`~harken.records.wav.StereoWavWriter` writes incrementally and keeps its header valid, so a
killed worker leaves a playable file up to about its last second; nothing is held whole in
memory.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from harken.audio import Resampler
from harken.frames import AudioFrame, Frame, StartFrame, SystemFrame
from harken.pipeline import Stage
from harken.records.wav import StereoWavWriter
from harken.transports.wire_audio import decoder

__all__ = ["RecordingTap"]

log = logging.getLogger("harken.records")


class RecordingTap(Stage):
    """Records the call to ``<directory>/<call id>.wav`` (see the module docstring)."""

    def __init__(self, directory: str | Path, call_id: str) -> None:
        super().__init__("recording")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id) or "call"
        self.path = Path(directory) / f"{safe}.wav"
        self.writer: StereoWavWriter | None = None
        self._rate = 0
        self._resampler: Resampler | None = None
        self._t0 = 0.0

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, StartFrame):
            self._start(frame)

    def _start(self, frame: StartFrame) -> None:
        self._rate = frame.sample_rate_out
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = StereoWavWriter(self.path, self._rate)
        except OSError as exc:  # a recording must never end a call
            log.warning("cannot record to %s: %s", self.path, exc)
            return
        self._t0 = asyncio.get_running_loop().time()
        output = self._output()
        if output is not None:
            decode = decoder(output.codec.output_encoding)

            def sent(data: bytes, now: float) -> None:
                if self.writer is not None:
                    self.writer.write_agent(decode(data), now - self._t0)

            output.on_sent = sent

    def _output(self) -> Any:
        call = self.call
        if call is None:
            return None
        for stage in call.stages:
            if hasattr(stage, "on_sent") and hasattr(stage, "codec"):
                return stage
        return None

    def on_down(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame) and self.writer is not None:
            pcm = frame.pcm
            if frame.sample_rate != self._rate:
                r = self._resampler
                if r is None or r.in_rate != frame.sample_rate:
                    r = self._resampler = Resampler(frame.sample_rate, self._rate)
                pcm = r.process(pcm)
            # arrival time on the loop clock, the agent channel's clock too: one timeline,
            # whatever the carrier's media timestamps drift to under load
            now = asyncio.get_running_loop().time() - self._t0
            self.writer.write_caller(pcm, max(0.0, now - frame.duration))
        self.push_down(frame)

    def _close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            try:
                writer.close()
            except OSError as exc:
                log.warning("recording %s: %s", self.path, exc)

    async def teardown(self) -> None:
        """After the call (its last audio has left): close the file."""
        self._close()
