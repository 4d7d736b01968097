"""Voice activity detection: a cheap per-call gate in front of a batched Silero model.

Two gates (the "dual-gate" VAD):

1. **Energy gate, inline, per call.** Every 32 ms window's level (dBFS) is compared with an
   adaptive noise floor (falls fast, rises ~2 dB/s, and is lifted to the quietest window of
   the last ~5 s, so noise that stays loud is learnt as noise). A window ``gate_margin_db``
   above the floor (and above ``gate_min_dbfs``) opens the gate; windows ``gate_hold_db``
   above it keep it open (hysteresis: quiet word endings) and it closes ``hangover_ms`` after
   the last of them, so the model hears speech tails and ends segments itself.
2. **Silero, batched across calls** (:mod:`harken.speech.vad_batch`). When the gate opens, the
   ``preroll_ms`` of audio *before* the opening window goes to the model too, so a soft onset
   under the gate is still heard and timestamped by the model. After a long closed gap the
   LSTM state is reset, as if the stream started there. Inside a long loud run the model has
   already heard (``skip_speech``), windows skip it except for a probe every ``probe_ms``, and
   take the latest model answer: sustained speech costs a fraction of a model window each.

Windows the gate keeps from the model count as silence (probability 0). Each is held back
``preroll`` windows before it counts, so it can still become a pre-roll window. Which windows
reach the model depends on the audio only, so decisions never depend on batching or timing.

**Speech state machine** (:class:`SpeechSegmenter`, :mod:`harken.speech.vad_segment`): speech
starts after ``start_ms`` of windows with probability >= ``threshold`` and level >=
``min_volume_dbfs`` (windows between
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
from harken.speech.vad_segment import SpeechSegmenter, VadParams

__all__ = ["SpeechSegmenter", "VadParams", "VadStage", "VadStream"]

_SCALE: Final = np.float32(1.0 / 32768.0)
_LOG_EPS: Final = 1e-12
_NEVER: Final = -(10**9)
_BLOCKS: Final = 4  # sub-blocks per window for the energy edges (8 ms)
_MIN_BLOCK: Final = 16  # windows per minimum-statistics block (~0.5 s)
_MIN_BLOCKS: Final = 10  # blocks the noise floor may not stay under (~5 s)

#: ``on_event(started, media_time)``: True for speech start, False for stop
VadEvent = Callable[[bool, float], None]


# record kinds in the pending queue
_GATED, _MODEL, _SKIPPED = 0, 1, 2


class VadStream:
    """One call's VAD: framing, the energy gate, model submission and the state machine.

    ``feed(pcm, timestamp)`` takes int16 mono PCM bytes at ``rate`` (8000 or 16000) whose first
    sample is at media time ``timestamp``; ``on_event`` is called when speech starts or stops
    (from ``feed`` or from the batcher's delivery, always on the loop thread).

    Which windows reach the model depends on the audio alone (energy, never the model's answers
    or the state machine, which arrive with the batcher's latency), so the decisions are the
    same however the windows are batched and however late the results come back.
    """

    __slots__ = (
        "_active",
        "_active_run",
        "_blk_min",
        "_blk_n",
        "_c",
        "_dur",
        "_floor",
        "_floor_rise",
        "_gate",
        "_hang",
        "_hist",
        "_hold",
        "_last_model",
        "_loud",
        "_loud_from",
        "_loud_to",
        "_margin",
        "_min_db",
        "_mins",
        "_n",
        "_open_until",
        "_pending",
        "_pos",
        "_preroll",
        "_probe_every",
        "_raw",
        "_ref",
        "_reset_after",
        "_seg",
        "_skip_after",
        "_skipped",
        "_slot",
        "_w",
        "batcher",
        "closed",
        "model_windows",
        "on_event",
        "params",
        "rate",
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
        self._dur = w / rate
        self._gate = p.gate
        self._preroll = p.windows(p.preroll_ms) if p.gate else 0
        self._hist = c + max(1, self._preroll) * w
        # the recent input as int16 bytes, and the sample index of the next window in it
        self._raw = bytes(2 * self._hist)
        self._pos = self._hist
        self._seg = SpeechSegmenter(p)
        self._margin = p.gate_margin_db
        self._hold = p.gate_hold_db
        self._min_db = p.gate_min_dbfs
        self._floor = math.nan
        self._floor_rise = p.floor_rise_db_s * w / rate
        self._blk_min = math.inf  # minimum statistics: the quietest window of each ~0.5 s
        self._blk_n = 0
        self._mins: deque[float] = deque(maxlen=_MIN_BLOCKS)
        self._hang = p.windows(p.hangover_ms)
        self._reset_after = p.windows(p.reset_after_ms)
        self._skip_after = max(1, p.windows(p.start_ms)) if p.gate and p.skip_speech else 0
        self._probe_every = max(2, p.windows(p.probe_ms))
        self._open_until = _NEVER
        self._last_model = _NEVER
        self._active = False
        self._loud = False
        self._active_run = 0
        self._skipped = 0
        self._ref: list[Any] | None = None  # the latest model window's record
        self._loud_from = math.nan
        self._loud_to = math.nan
        self._n = 0
        # every window not yet counted, in order:
        # [index, ts, level_db, prob (None: not known yet), loud, edge, kind, ref]
        self._pending: deque[list[Any]] = deque()
        self.closed = False
        self.model_windows = 0

    @property
    def speaking(self) -> bool:
        return self._seg.speaking

    @property
    def windows(self) -> int:
        """Windows seen so far."""
        return self._n

    @property
    def noise_floor_dbfs(self) -> float:
        return self._floor

    def close(self) -> None:
        """Stop: results still in flight are discarded."""
        if not self.closed:
            self.closed = True
            self.batcher.close(self._slot)
            self._pending.clear()

    def feed(self, pcm: bytes, timestamp: float) -> None:
        """Take a chunk of int16 PCM bytes (any length) starting at media time ``timestamp``."""
        if self.closed:
            return
        old = self._raw
        raw = self._raw = old + pcm
        chunk = len(old) >> 1  # sample index of this chunk's first sample
        w = self._w
        pos = self._pos
        end = len(raw) - (w << 1)
        while (pos << 1) <= end:
            win = np.frombuffer(raw, np.int16, w, pos << 1).astype(np.float32)
            # dBFS of the window: samples are int16-valued (-90.309 = 20*log10(1/32768))
            level = 10.0 * math.log10(float(win.dot(win)) / w + _LOG_EPS) - 90.309
            # the window's media time, relative to this chunk's first sample
            self._window(pos, timestamp + (pos - chunk) / self.rate, level, win)
            pos += w
            self._pos = pos
        if pos > self._hist + 2 * w:  # forget what no window can reach back to
            drop = pos - self._hist
            self._raw = self._raw[drop << 1 :]
            self._pos = pos - drop

    def feed_array(self, x: npt.NDArray[np.int16], timestamp: float) -> None:
        self.feed(x.astype(np.int16, copy=False).tobytes(), timestamp)

    # --- per window ---------------------------------------------------------------------------

    def _noise_floor(self, level: float, passed: bool) -> None:
        floor = self._floor
        if level < floor:
            floor += 0.3 * (level - floor)
        elif not passed:
            rise = level - floor
            floor += rise if rise < self._floor_rise else self._floor_rise
        # minimum statistics: noise that stays loud for seconds is noise, not speech
        if level < self._blk_min:
            self._blk_min = level
        self._blk_n += 1
        if self._blk_n == _MIN_BLOCK:
            self._mins.append(self._blk_min)
            self._blk_min = math.inf
            self._blk_n = 0
            if len(self._mins) == _MIN_BLOCKS:
                least = min(self._mins) - 1.0
                if least > floor:
                    floor = least
        self._floor = floor

    def _window(self, pos: int, ts: float, level: float, win: npt.NDArray[np.float32]) -> None:
        idx = self._n
        self._n = idx + 1
        floor = self._floor
        if floor != floor:  # NaN: the first window
            floor = self._floor = level
        gate_db = floor + self._margin
        if gate_db < self._min_db:
            gate_db = self._min_db
        passed = level >= gate_db
        if passed != self._loud:
            self._edge(pos, ts, win, passed, gate_db)
        self._noise_floor(level, passed)
        # energy hysteresis: opened by a loud window, kept open by anything clearly above noise
        active = passed or (self._active and level >= floor + self._hold)
        self._active = active
        if active:
            self._open_until = idx + self._hang
            self._active_run += 1
        else:
            self._active_run = 0
        pending = self._pending
        edge = self._loud_from if passed else self._loud_to
        if idx <= self._open_until or not self._gate:
            if not passed and level >= self._min_db:
                edge = self._tail(ts, win, gate_db)
            probe = False
            if self._skip_after and self._active_run > self._skip_after and self._ref is not None:
                # a long active run the model has already heard: it is only probed now and
                # then; the windows between take the latest model answer
                self._skipped += 1
                if self._skipped < self._probe_every:
                    pending.append([idx, ts, level, None, passed, edge, _SKIPPED, self._ref])
                    self._advance()
                    return
                probe = True
            self._skipped = 0
            self._to_model(idx, pos, [idx, ts, level, None, passed, edge, _MODEL, None], probe)
        else:
            pending.append([idx, ts, level, 0.0, passed, edge, _GATED, None])
        self._advance()

    def _tail(self, ts: float, win: npt.NDArray[np.float32], gate_db: float) -> float:
        """A quiet window in an open gate: a short loud burst in it (a plosive release) moves the
        end of the loud part forward."""
        blk = self._w // _BLOCKS
        b = win.reshape(_BLOCKS, blk)
        thr = 10.0 ** ((gate_db + 90.309) / 10.0) * blk
        hits = np.flatnonzero(np.einsum("ij,ij->i", b, b) >= thr)
        if hits.size:
            self._loud_to = ts + (int(hits[-1]) + 1) * blk / self.rate
        return self._loud_to

    def _edge(
        self, pos: int, ts: float, win: npt.NDArray[np.float32], loud: bool, gate_db: float
    ) -> None:
        """The gate flipped: locate the energy edge to one 8 ms block (rare, so not costly)."""
        w = self._w
        blk = w // _BLOCKS
        thr = 10.0 ** ((gate_db + 90.309) / 10.0) * blk
        if loud:  # rising: the first loud block of this window
            b = win.reshape(_BLOCKS, blk)
            hits = np.flatnonzero(np.einsum("ij,ij->i", b, b) >= thr)
            first = int(hits[0]) if hits.size else 0
            self._loud_from = ts + first * blk / self.rate
        else:  # falling: the end of the last loud block of the previous window
            prev = np.frombuffer(self._raw, np.int16, w, (pos - w) << 1).astype(np.float32)
            prev = prev.reshape(_BLOCKS, blk)
            hits = np.flatnonzero(np.einsum("ij,ij->i", prev, prev) >= thr)
            last = int(hits[-1]) + 1 if hits.size else _BLOCKS
            self._loud_to = ts - (w - last * blk) / self.rate
        self._loud = loud

    def _to_model(self, idx: int, pos: int, rec: list[Any], probe: bool) -> None:
        w, c = self._w, self._c
        pending = self._pending
        gap = idx - self._last_model - 1
        count = 1
        if gap > 0 and self._preroll:
            # the gate just opened, or loud windows were skipped: the windows before this one
            # go to the model too, so its state has heard the audio leading here. Gated-out
            # ones are still waiting (held back ``preroll`` windows) and now count with the
            # model's answer; skipped ones only warm the model up (one window for a probe).
            k = min(1 if probe else self._preroll, gap)
            n = len(pending)
            for j in range(1, k + 1):
                if j <= n:
                    held = pending[n - j]
                    if held[0] == idx - j and held[6] == _GATED:
                        held[3] = None
                        held[6] = _MODEL
            count += k
        pending.append(rec)
        self._ref = rec
        start = pos - (count - 1) * w - c
        # int16 views of the input (bytes are immutable: the views stay valid); the worker
        # thread scales them to float, so the loop copies nothing
        span = np.frombuffer(self._raw, np.int16, pos + w - start, start << 1)
        if count == 1:
            windows = span[None]
        else:
            windows = np.stack([span[j * w : j * w + c + w] for j in range(count)])
        reset = gap >= self._reset_after
        self._last_model = idx
        self.model_windows += count
        self.batcher.submit(self._slot, idx - count + 1, windows, reset=reset)

    def _deliver(self, first: int, probs: npt.NDArray[np.float32]) -> None:
        """Model results for windows ``first``.. (on the loop)."""
        pending = self._pending
        if self.closed or not pending:
            return
        base: int = pending[0][0]
        n = len(pending)
        for k, p in enumerate(probs.tolist()):
            j = first + k - base
            if 0 <= j < n:
                rec = pending[j]
                if rec[6] == _MODEL:
                    if p != p:  # dropped under overload: hold the current decision
                        p = 1.0 if self._seg.speaking else 0.0
                    rec[3] = p
        self._advance()

    def _advance(self) -> None:
        """Count every window at the head of the queue whose answer is known, in order."""
        pending = self._pending
        hold_until = self._n - 1 - self._preroll
        seg = self._seg
        while pending:
            rec = pending[0]
            prob = rec[3]
            if prob is None:
                if rec[6] != _SKIPPED:
                    return
                prob = rec[7][3]  # the answer of the model window it follows
                if prob is None:
                    return
            elif rec[6] == _GATED and rec[0] > hold_until:
                return  # held back: it may still become a pre-roll window
            pending.popleft()
            if prob == 0.0 and not seg.speaking:
                seg._run = 0  # a silent window while not speaking: all it does
                continue
            event = seg.step(prob, rec[2], rec[1], rec[4], rec[5])
            if event is not None:
                self.on_event(seg.speaking, event)
                if self.closed:
                    return


class VadStage(Stage):
    """Inline VAD: audio passes unchanged; speech start/stop are broadcast as system frames.

    ``batcher`` defaults to the running loop's process-wide :class:`SileroBatcher`.
    """

    __slots__ = (
        "_batcher",
        "_direct",
        "_in_rate",
        "_resampler",
        "_stream",
        "params",
        "started",
        "stopped",
    )

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
        self._direct: VadStream | None = None  # the stream, when frames need no conversion
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
            stream = self._direct
            if (
                stream is not None
                and frame.sample_rate == self._in_rate  # type: ignore[attr-defined]
                and frame.channels == 1  # type: ignore[attr-defined]
            ):
                stream.feed(frame.pcm, frame.timestamp)  # type: ignore[attr-defined]
            else:
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
            if isinstance(pcm, np.ndarray):
                stream.feed_array(pcm, frame.timestamp)
            else:
                stream.feed(pcm, frame.timestamp)
            return
        if isinstance(pcm, np.ndarray):
            out = resampler.process_array(pcm)
        else:
            out = np.frombuffer(resampler.process(pcm), np.int16)
        stream.feed_array(out, frame.timestamp - resampler.delay_s)

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
        self._direct = self._stream if self._resampler is None else None
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
