"""Voice activity detection: a cheap per-call gate in front of a batched Silero model.

Two gates (the "dual-gate" VAD):

1. **Energy gate, inline, per call.** Every 32 ms window's level (dBFS) is compared with an
   adaptive noise floor (falls fast, rises ~2 dB/s, and rises faster when the model has just
   called a gated window noise). Only windows ``gate_margin_db`` above the floor (and above
   ``gate_min_dbfs``) open the gate; the gate then stays open for ``hangover_ms`` so the model
   sees speech tails and can end the segment itself.
2. **Silero, batched across calls** (:mod:`harken.speech.vad_batch`). When the gate opens, the
   ``preroll_ms`` of audio *before* the opening window goes to the model too (with their
   context samples), so a soft onset under the gate is still seen and timestamped by the model.
   After a long closed gap the LSTM state is reset, as if the stream started there.

Windows the gate keeps from the model count as silence (probability 0). While no speech is
going on, a gated-out window is held back ``preroll`` windows before it counts, so the pre-roll
windows can still be upgraded to model windows: decisions never depend on batching or timing.

**Speech state machine** (:class:`SpeechSegmenter`): speech starts after ``start_ms`` of
windows with probability >= ``threshold`` and level >= ``min_volume_dbfs`` (windows between
``neg_threshold`` and ``threshold`` neither count nor reset), and stops after ``stop_ms`` of
windows below ``neg_threshold``. Reported timestamps are *media* times: the start of the first
speech window, and the end of the last one (the start of the first silent window).

:class:`VadStage` is an inline pipeline stage: it passes every :class:`AudioFrame` downstream
unchanged and, a few ms later when the batch returns, broadcasts
:class:`UserStartedSpeakingFrame` / :class:`UserStoppedSpeakingFrame`. Silero runs natively at
8 and 16 kHz; other input rates are resampled to 16 kHz for the VAD only.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from harken.audio import Resampler
from harken.errors import ConfigError
from harken.frames import (
    AudioFrame,
    CancelFrame,
    Frame,
    SystemFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from harken.pipeline import Stage
from harken.speech.vad_batch import CONTEXT, WINDOW, SileroBatcher, VadSlot, default_batcher

__all__ = ["SpeechSegmenter", "VadParams", "VadStage", "VadStream"]

_SCALE: Final = np.float32(1.0 / 32768.0)
_LOG_EPS: Final = 1e-12
_NEVER: Final = -(10**9)
_BLOCKS: Final = 4  # sub-blocks per window for the energy edges (8 ms)
WINDOW_MS: Final = 32.0

#: ``on_event(started, media_time)``: True for speech start, False for stop
VadEvent = Callable[[bool, float], None]


@dataclass(frozen=True, slots=True)
class VadParams:
    """VAD configuration. Window counts are durations rounded to whole 32 ms windows."""

    #: speech probability at or above which a window counts as speech
    threshold: float = 0.5
    #: probability below which a window counts as silence (default ``threshold - 0.15``)
    neg_threshold: float | None = None
    #: speech starts after this much speech (windows >= threshold and >= min_volume_dbfs)
    start_ms: float = 160.0
    #: speech stops after this much silence, measured from the refined end of speech
    stop_ms: float = 200.0
    #: quieter windows never start speech
    min_volume_dbfs: float = -45.0
    #: False: every window goes to the model (the "model-only" baseline)
    gate: bool = True
    #: a window opens the gate this far above the noise floor...
    gate_margin_db: float = 9.0
    #: ...and above this absolute level
    gate_min_dbfs: float = -62.0
    #: how fast the noise floor may rise (it falls at once)
    floor_rise_db_s: float = 2.0
    #: the gate stays open this long after the last loud window
    hangover_ms: float = 192.0
    #: audio before the gate opened that goes to the model with the opening window
    preroll_ms: float = 64.0
    #: a model gap this long resets the LSTM state (a fresh onset)
    reset_after_ms: float = 1000.0
    #: boundaries move to the energy edge (8 ms resolution) when it is this close
    refine_ms: float = 224.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("VadParams.threshold must be in (0, 1)")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ConfigError("VadParams.neg_threshold must be in [0, threshold]")
        for name in (
            "start_ms",
            "stop_ms",
            "hangover_ms",
            "preroll_ms",
            "reset_after_ms",
            "refine_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"VadParams.{name} must be >= 0")

    @property
    def negative(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(0.01, self.threshold - 0.15)

    def windows(self, ms: float) -> int:
        """A duration in whole 32 ms windows."""
        return round(ms / WINDOW_MS)


class SpeechSegmenter:
    """The per-call speech state machine (pure, synchronous; one window at a time).

    Each window brings the model's probability, its level, its start time, whether it was loud
    (above the gate's threshold) and an energy edge: for a loud window, where its loud run began;
    for a quiet one, where the last loud run ended (NaN when unknown). Silero's probability rises
    a little late on soft onsets and stays up ~100 ms after speech ends; the energy edges, when
    close enough (``refine_ms``), give the boundaries to 8 ms, and silence is counted from the
    refined end, so a clean stop is reported ``stop_ms`` after the speech really ended.
    """

    __slots__ = (
        "_neg",
        "_refine",
        "_run",
        "_run_ts",
        "_silent",
        "_start_n",
        "_stop_s",
        "_stop_ts",
        "_thr",
        "_vol",
        "_win_s",
        "speaking",
    )

    def __init__(self, params: VadParams) -> None:
        self._thr = params.threshold
        self._neg = params.negative
        self._vol = params.min_volume_dbfs
        self._start_n = max(1, params.windows(params.start_ms))
        self._stop_s = max(WINDOW_MS, params.stop_ms) / 1000.0 - 1e-6
        self._refine = params.refine_ms / 1000.0
        self._win_s = WINDOW_MS / 1000.0
        self.speaking = False
        self._run = 0
        self._run_ts = 0.0
        self._silent = 0
        self._stop_ts = 0.0

    def step(
        self, prob: float, level_db: float, ts: float, loud: bool = False, edge: float = math.nan
    ) -> float | None:
        """Feed one window starting at media time ``ts``; returns the event's media time when
        the state flips (read :attr:`speaking` for which way), else None."""
        if not self.speaking:
            if prob >= self._thr and level_db >= self._vol:
                if self._run == 0:
                    # a loud run that began shortly before: the onset is there
                    self._run_ts = edge if loud and 0.0 <= ts - edge <= self._refine else ts
                self._run += 1
                if self._run >= self._start_n:
                    self.speaking = True
                    self._run = 0
                    self._silent = 0
                    return self._run_ts
            elif prob < self._neg:
                self._run = 0
            return None
        if prob < self._neg:
            if self._silent == 0:
                # the model's silence lags the energy: start counting where the loud part ended
                self._stop_ts = edge if not loud and 0.0 <= ts - edge <= self._refine else ts
            self._silent += 1
            if ts + self._win_s - self._stop_ts >= self._stop_s:
                self.speaking = False
                self._silent = 0
                return self._stop_ts
        else:
            self._silent = 0
        return None

    def reset(self) -> None:
        self.speaking = False
        self._run = self._silent = 0


class VadStream:
    """One call's VAD: framing, the energy gate, model submission and the state machine.

    ``feed(pcm, timestamp)`` takes int16 mono PCM at ``rate`` (8000 or 16000) whose first sample
    is at media time ``timestamp``; ``on_event`` is called when speech starts or stops (from
    ``feed`` or from the batcher's delivery, always on the loop thread).
    """

    __slots__ = (
        "_buf",
        "_c",
        "_fill",
        "_floor",
        "_floor_rise",
        "_gate",
        "_hang",
        "_hist",
        "_last_model",
        "_loud",
        "_loud_from",
        "_loud_to",
        "_margin",
        "_min_db",
        "_n",
        "_neg",
        "_open_until",
        "_pending",
        "_pos",
        "_preroll",
        "_reset_after",
        "_seg",
        "_slot",
        "_w",
        "batcher",
        "closed",
        "model_windows",
        "on_event",
        "params",
        "rate",
        "windows",
    )

    def __init__(
        self,
        rate: int,
        on_event: VadEvent,
        params: VadParams | None = None,
        batcher: SileroBatcher | None = None,
    ) -> None:
        if rate not in WINDOW:
            raise ConfigError(f"VadStream runs at 8000 or 16000 Hz, not {rate}")
        self.params = p = params or VadParams()
        self.rate = rate
        self.on_event = on_event
        self.batcher = batcher if batcher is not None else default_batcher()
        self._slot: VadSlot = self.batcher.open(rate, self._deliver)
        self._w = w = WINDOW[rate]
        self._c = c = CONTEXT[rate]
        self._preroll = p.windows(p.preroll_ms) if p.gate else 0
        self._hist = c + max(1, self._preroll) * w
        self._buf: npt.NDArray[np.float32] = np.zeros(self._hist + 16 * w, np.float32)
        self._fill = self._pos = self._hist
        self._seg = SpeechSegmenter(p)
        self._gate = p.gate
        self._margin = p.gate_margin_db
        self._min_db = p.gate_min_dbfs
        self._floor = math.nan
        self._floor_rise = p.floor_rise_db_s * w / rate
        self._hang = p.windows(p.hangover_ms)
        self._reset_after = p.windows(p.reset_after_ms)
        self._neg = p.negative
        self._open_until = _NEVER
        self._last_model = _NEVER
        self._loud = False
        self._loud_from = math.nan
        self._loud_to = math.nan
        self._n = 0
        # windows not yet counted, in order: [index, ts, level_db, prob (None: model pending),
        # loud (passed the gate), sent to the model, energy edge (see SpeechSegmenter)]
        self._pending: deque[list[Any]] = deque()
        self.closed = False
        self.windows = 0
        self.model_windows = 0

    @property
    def speaking(self) -> bool:
        return self._seg.speaking

    @property
    def noise_floor_dbfs(self) -> float:
        return self._floor

    def close(self) -> None:
        """Stop: results still in flight are discarded."""
        if not self.closed:
            self.closed = True
            self.batcher.close(self._slot)
            self._pending.clear()

    def feed(self, pcm: bytes | npt.NDArray[np.int16], timestamp: float) -> None:
        if self.closed:
            return
        x = np.frombuffer(pcm, np.int16) if isinstance(pcm, bytes | bytearray | memoryview) else pcm
        n = x.shape[0]
        buf = self._buf
        if self._fill + n > buf.shape[0]:
            keep = self._fill - (self._pos - self._hist)
            if keep + n > buf.shape[0]:
                buf = self._buf = np.concatenate([buf, np.zeros(keep + n, np.float32)])
            buf[:keep] = buf[self._pos - self._hist : self._fill]
            self._pos = self._hist
            self._fill = keep
        fill = self._fill
        np.multiply(x, _SCALE, out=buf[fill : fill + n], casting="unsafe")
        self._fill = fill + n
        w = self._w
        rate = self.rate
        while self._fill - self._pos >= w:
            # media time of the window: relative to this chunk's first sample
            ts = timestamp + (self._pos - fill) / rate
            self._window(ts)
            self._pos += w

    # --- per window ---------------------------------------------------------------------------

    def _window(self, ts: float) -> None:
        pos = self._pos
        w = self._w
        win = self._buf[pos : pos + w]
        energy = float(np.dot(win, win)) / w
        level = 10.0 * math.log10(energy + _LOG_EPS)
        idx = self._n
        self._n = idx + 1
        self.windows += 1
        floor = self._floor
        if floor != floor:  # NaN: first window
            floor = level
        gate_db = floor + self._margin
        passed = level >= gate_db and level >= self._min_db
        if passed != self._loud:
            self._edge(ts, win, passed, max(gate_db, self._min_db))
        edge = self._loud_from if passed else self._loud_to
        if level < floor:
            floor += 0.3 * (level - floor)
        elif not passed:
            floor += min(level - floor, self._floor_rise)
        self._floor = floor
        if passed:
            self._open_until = idx + self._hang
        if not self._gate or idx <= self._open_until:
            if not passed and self._seg.speaking and level >= self._min_db:
                edge = self._tail(ts, win, max(gate_db, self._min_db))
            self._to_model(idx, [idx, ts, level, None, passed, True, edge])
        else:
            self._pending.append([idx, ts, level, 0.0, passed, False, edge])
        self._advance()

    def _tail(self, ts: float, win: npt.NDArray[np.float32], gate_db: float) -> float:
        """A quiet window during speech: a short loud burst in it (a plosive release) moves the
        end of the loud part forward."""
        blk = self._w // _BLOCKS
        b = win.reshape(_BLOCKS, blk)
        hits = np.flatnonzero(np.einsum("ij,ij->i", b, b) >= 10.0 ** (gate_db / 10.0) * blk)
        if hits.size:
            self._loud_to = ts + (int(hits[-1]) + 1) * blk / self.rate
        return self._loud_to

    def _edge(self, ts: float, win: npt.NDArray[np.float32], loud: bool, gate_db: float) -> None:
        """The gate flipped: locate the energy edge to one 8 ms block (rare, so not costly)."""
        w = self._w
        blk = w // _BLOCKS
        thr = 10.0 ** (gate_db / 10.0) * blk
        if loud:  # rising: the first loud block of this window
            b = win.reshape(_BLOCKS, blk)
            hits = np.flatnonzero(np.einsum("ij,ij->i", b, b) >= thr)
            first = int(hits[0]) if hits.size else 0
            self._loud_from = ts + first * blk / self.rate
        else:  # falling: the end of the last loud block of the previous window
            prev = self._buf[self._pos - w : self._pos].reshape(_BLOCKS, blk)
            hits = np.flatnonzero(np.einsum("ij,ij->i", prev, prev) >= thr)
            last = int(hits[-1]) + 1 if hits.size else _BLOCKS
            self._loud_to = ts - (w - last * blk) / self.rate
        self._loud = loud

    def _to_model(self, idx: int, rec: list[Any]) -> None:
        pos, w, c = self._pos, self._w, self._c
        gap = idx - self._last_model - 1
        first = idx
        if gap > 0 and self._preroll:
            # the gate just opened: send the held-back windows before it as well
            pending = self._pending
            k = 0
            while k < self._preroll and k < len(pending) and not pending[-1 - k][5]:
                held = pending[-1 - k]
                held[3] = None
                held[5] = True
                k += 1
            first = idx - k
        self._pending.append(rec)
        count = idx - first + 1
        start = pos - (count - 1) * w - c
        windows = np.lib.stride_tricks.sliding_window_view(self._buf[start : pos + w], c + w)[::w]
        reset = gap >= self._reset_after
        self._last_model = idx
        self.model_windows += count
        self.batcher.submit(self._slot, first, windows.copy(), reset=reset)

    def _deliver(self, first: int, probs: npt.NDArray[np.float32]) -> None:
        """Model results for windows ``first``.. (on the loop)."""
        if self.closed:
            return
        pending = self._pending
        if not pending:
            return
        base: int = pending[0][0]
        seg = self._seg
        for k in range(probs.shape[0]):
            j = first + k - base
            if 0 <= j < len(pending):
                rec = pending[j]
                p = float(probs[k])
                if p != p:  # dropped under overload: hold the previous decision
                    p = 1.0 if seg.speaking else 0.0
                rec[3] = p
                if rec[4] and p < 0.1 and not seg.speaking:
                    # the gate let noise through: lift the floor towards that level
                    lift = rec[2] - self._margin + 1.0 - self._floor
                    if lift > 0.0:
                        self._floor += 0.5 * lift
        self._advance()

    def _advance(self) -> None:
        """Count every resolved window at the head of the queue, in order."""
        pending = self._pending
        seg = self._seg
        hold = self._preroll
        newest = self._n - 1
        while pending:
            rec = pending[0]
            prob = rec[3]
            if prob is None:
                return
            if hold and not rec[5] and not seg.speaking and newest - rec[0] < hold:
                return  # held back: may still become a pre-roll window
            pending.popleft()
            event = seg.step(prob, rec[2], rec[1], rec[4], rec[6])
            if event is not None:
                self.on_event(seg.speaking, event)
                if self.closed:
                    return


class VadStage(Stage):
    """Inline VAD: audio passes unchanged; speech start/stop are broadcast as system frames.

    ``batcher`` defaults to the running loop's process-wide :class:`SileroBatcher`.
    """

    __slots__ = ("_batcher", "_in_rate", "_resampler", "_stream", "params", "started", "stopped")

    def __init__(
        self,
        params: VadParams | None = None,
        *,
        batcher: SileroBatcher | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.params = params or VadParams()
        self._batcher = batcher
        self._stream: VadStream | None = None
        self._resampler: Resampler | None = None
        self._in_rate = 0
        self.started = 0
        self.stopped = 0

    @property
    def stream(self) -> VadStream | None:
        return self._stream

    @property
    def speaking(self) -> bool:
        return self._stream is not None and self._stream.speaking

    def on_down(self, frame: Frame) -> None:
        if frame.is_audio:
            self._audio(frame)  # type: ignore[arg-type]
        self.push_down(frame)

    def _audio(self, frame: AudioFrame) -> None:
        rate = frame.sample_rate
        stream = self._stream
        if stream is None or rate != self._in_rate:
            stream = self._open(rate)
        pcm: bytes | npt.NDArray[np.int16] = frame.pcm
        if frame.channels > 1:  # the first channel is the caller
            pcm = np.frombuffer(frame.pcm, np.int16)[:: frame.channels].copy()
        resampler = self._resampler
        if resampler is None:
            stream.feed(pcm, frame.timestamp)
            return
        if isinstance(pcm, np.ndarray):
            out = resampler.process_array(pcm)
        else:
            out = np.frombuffer(resampler.process(pcm), np.int16)
        stream.feed(out, frame.timestamp - resampler.delay_s)

    def _open(self, rate: int) -> VadStream:
        if self._stream is not None:
            self._stream.close()
        self._in_rate = rate
        self._resampler = None
        vad_rate = rate
        if rate not in WINDOW:
            self._resampler = Resampler(rate, 16000)
            vad_rate = 16000
        batcher = self._batcher if self._batcher is not None else default_batcher()
        self._stream = VadStream(vad_rate, self._event, self.params, batcher)
        return self._stream

    def _event(self, started: bool, media_time: float) -> None:
        call = self.call
        if call is None or call.closed:
            return
        if started:
            self.started += 1
            self.broadcast(UserStartedSpeakingFrame(timestamp=media_time))
        else:
            self.stopped += 1
            self.broadcast(UserStoppedSpeakingFrame(timestamp=media_time))

    def on_system(self, frame: SystemFrame) -> None:
        if isinstance(frame, CancelFrame):
            self._close()

    def _close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    async def teardown(self) -> None:
        self._close()
