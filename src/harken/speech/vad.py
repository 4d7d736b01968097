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
from harken.speech.vad_segment import WINDOW_MS, SpeechSegmenter, VadParams

__all__ = ["SpeechSegmenter", "VadParams", "VadStage", "VadStream"]

_NEVER: Final = -(10**9)
_BLOCKS: Final = 4  # sub-blocks per window for the energy edges (8 ms)

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
        "__weakref__",
        "_bank",
        "_blk_s",
        "_c",
        "_dip_s",
        "_fresh",
        "_gate",
        "_hist",
        "_last",
        "_last_model",
        "_long",
        "_loud_from",
        "_loud_to",
        "_min_db",
        "_neg",
        "_open_at",
        "_pending",
        "_pos",
        "_preroll",
        "_probe_every",
        "_raw",
        "_ref",
        "_reset_after",
        "_resume",
        "_row",
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
        self._blk_s = w / _BLOCKS / rate
        self._gate = p.gate
        self._preroll = p.windows(p.preroll_ms) if p.gate else 0
        self._hist = c + max(1, self._preroll) * w
        # the recent input as int16 bytes, and the sample index of the next window in it
        self._raw = bytes(2 * self._hist)
        self._pos = self._hist
        self._seg = SpeechSegmenter(p)
        self._min_db = p.gate_min_dbfs
        self._reset_after = p.windows(p.reset_after_ms)
        self._skip_after = max(1, p.windows(p.start_ms)) if p.gate and p.skip_speech else 0
        self._resume = min(self._skip_after, max(1, p.windows(p.resume_ms)))
        self._long = False
        # a loud run after a quiet stretch this long (the VAD may have stopped in it) sends its
        # first windows to the model whatever the gate's hysteresis run says; _fresh counts them
        self._dip_s = max(0.0, p.stop_ms - 2 * WINDOW_MS) / 1000
        self._fresh = 0
        self._open_at = _NEVER
        self._neg = p.negative
        self._probe_every = max(2, p.windows(p.probe_ms))
        self._last = -1  # the last window this stream's Python has seen (see ``_step``)
        self._last_model = _NEVER
        self._skipped = 0
        self._ref: list[Any] | None = None  # the latest model window's record
        self._loud_from = math.nan
        self._loud_to = math.nan
        # every window not yet counted, in order:
        # [index, ts, level_db, prob (None: not known yet), loud, edge, kind, ref]
        self._pending: deque[list[Any]] = deque()
        self.closed = False
        self.model_windows = 0
        # the energy gate runs for every call at once, at the batcher's tick
        self._bank = self.batcher.gate_bank(rate)
        self._row = self._bank.open(self, p, self._preroll, self._resume)

    @property
    def speaking(self) -> bool:
        return self._seg.speaking

    @property
    def windows(self) -> int:
        """Windows gated so far."""
        return self._bank.windows(self._row)

    @property
    def noise_floor_dbfs(self) -> float:
        return self._bank.noise_floor(self._row)

    def close(self) -> None:
        """Stop: results still in flight are discarded."""
        if not self.closed:
            self.closed = True
            self.batcher.close(self._slot)
            self._bank.release(self._row)
            self._pending.clear()

    def feed(self, pcm: bytes, timestamp: float) -> None:
        """Take a chunk of int16 PCM bytes (any length) starting at media time ``timestamp``.

        Each window the chunk completes is queued for the gate bank (gated at the batcher's
        next tick, with every other call's windows)."""
        if self.closed:
            return
        old = self._raw
        raw = self._raw = old + pcm
        w = self._w
        pos = self._pos
        end = (len(raw) >> 1) - w
        if pos > end:
            return
        chunk = len(old) >> 1  # sample index of this chunk's first sample
        queue = self._bank.queue
        if not queue:
            self._bank.wake()
        row = self._row
        rate = self.rate
        while pos <= end:
            # row, the window's media time (relative to this chunk's first sample), its bytes,
            # and the input with its position for the stream's own Python
            queue.append(
                (row, timestamp + (pos - chunk) / rate, raw[pos << 1 : (pos + w) << 1], raw, pos)
            )
            pos += w
        if pos > self._hist + 2 * w:  # forget what no window can reach back to
            drop = pos - self._hist
            self._raw = raw[drop << 1 :]
            pos -= drop
        self._pos = pos

    def feed_array(self, x: npt.NDArray[np.int16], timestamp: float) -> None:
        self.feed(x.astype(np.int16, copy=False).tobytes(), timestamp)

    # --- per window ---------------------------------------------------------------------------

    def _step(
        self,
        idx: int,
        raw: bytes,
        pos: int,
        ts: float,
        level: float,
        passed: bool,
        in_gate: bool,
        active_run: int,
        flip: bool,
        first_hit: int,
        last_hit: int,
        prev_last: int,
        cruised: int = 0,
    ) -> None:
        """One window the gate bank found interesting (in an open gate, at a gate edge, or of
        a busy stream); ``raw[pos]`` is its first sample. ``first_hit``/``last_hit``: its first
        and last 8 ms block at or above the gate's level, ``prev_last`` the previous window's
        last (-1: none). ``cruised``: windows the bank counted as skipped since the last call
        (the stream was cruising; they directly precede this one)."""
        pending = self._pending
        if cruised:
            self._skipped += cruised
            self._last = self._open_at = idx - 1
        last = self._last
        if idx - last > 1:
            # windows the bank skipped (gate shut, stream not busy): the last ``preroll`` of
            # them are still held back as pre-roll candidates, as if gated here
            bank = self._bank
            h = bank.hist
            row = self._row
            for i in range(max(last + 1, idx - self._preroll), idx):
                pending.append(
                    [
                        i,
                        float(bank.ts_hist[row, i % h]),
                        float(bank.lv_hist[row, i % h]),
                        0.0,
                        False,
                        self._loud_to,
                        _GATED,
                        None,
                    ]
                )
        self._last = idx
        if flip:
            # the gate flipped: the energy edge, to one 8 ms block
            if passed:  # rising: the first loud block of this window
                self._loud_from = ts + max(0, first_hit) * self._blk_s
            else:  # falling: the end of the last loud block of the previous window
                last = prev_last + 1 if prev_last >= 0 else _BLOCKS
                self._loud_to = ts - (_BLOCKS - last) * self._blk_s
        if flip and passed and self._loud_from - self._loud_to >= self._dip_s:
            # loud again after a pause: the model must hear the onset. (The gate's hysteresis
            # run can span a quiet comma pause; skipping on it, "Okay, | goodbye" took the
            # pause's answers for "goodbye", whose start was never seen)
            self._fresh = self._skip_after
            self._long = False
        edge = self._loud_from if passed else self._loud_to
        if in_gate:
            if self._open_at != idx - 1:
                self._long = False  # the gate (re)opened: a new episode
            self._open_at = idx
            if not passed and level >= self._min_db and last_hit >= 0:
                # a quiet window with a short loud burst (a plosive release) moves the end of
                # the loud part forward
                edge = self._loud_to = ts + (last_hit + 1) * self._blk_s
            probe = False
            skip = self._skip_after
            if (
                skip
                and self._ref is not None
                and not self._fresh
                and (active_run > skip or (self._long and active_run > self._resume))
            ):
                self._long = True
                # a long active run the model has already heard: it is only probed now and
                # then; the windows between take the latest model answer
                self._skipped += 1
                if self._skipped < self._probe_every:
                    pending.append([idx, ts, level, None, passed, edge, _SKIPPED, self._ref])
                    self._advance()
                    return
                probe = True
            self._skipped = 0
            if self._fresh:
                self._fresh -= 1
            rec = [idx, ts, level, None, passed, edge, _MODEL, None]
            self._to_model(idx, raw, pos, rec, probe)
        else:
            pending.append([idx, ts, level, 0.0, passed, edge, _GATED, None])
        self._advance()

    def _to_model(self, idx: int, raw: bytes, pos: int, rec: list[Any], probe: bool) -> None:
        w, c = self._w, self._c
        pending = self._pending
        gap = idx - self._last_model - 1
        count = 1
        if gap > 0 and self._preroll:
            # the gate just opened: the windows before this one go to the model too, so its
            # state has heard the audio leading here. Gated-out ones are still waiting (held
            # back ``preroll`` windows) and now count with the model's answer. A probe inside
            # a long run goes alone (a warm-up window before it changed no decision on the
            # bench's calls and cost 2% of all windows).
            k = 0 if probe else min(self._preroll, gap)
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
        # the windows with their context, as int16 bytes (the worker scales them to float)
        if count == 1:
            data = raw[start << 1 : (pos + w) << 1]
        else:
            data = b"".join(
                [raw[(start + j * w) << 1 : (start + j * w + c + w) << 1] for j in range(count)]
            )
        reset = gap >= self._reset_after
        self._last_model = idx
        self.model_windows += count
        self.batcher.submit_bytes(self._slot, idx - count + 1, data, count, reset=reset)

    def _deliver(self, first: int, probs: list[float]) -> None:
        """Model results for windows ``first``.. (on the loop)."""
        pending = self._pending
        if self.closed or not pending:
            return
        base: int = pending[0][0]
        n = len(pending)
        for k, p in enumerate(probs):
            j = first + k - base
            if 0 <= j < n:
                rec = pending[j]
                if rec[6] == _MODEL:
                    if p != p:  # dropped under overload: hold the current decision
                        p = 1.0 if self._seg.speaking else 0.0
                    rec[3] = p
        self._advance()

    def _advance(self) -> None:
        """Count every window at the head of the queue whose answer is known, in order; then
        tell the gate bank whether this stream is busy (its Python must see every window)."""
        pending = self._pending
        hold_until = self._last - self._preroll
        seg = self._seg
        while pending:
            rec = pending[0]
            prob = rec[3]
            if prob is None:
                if rec[6] != _SKIPPED or rec[7][3] is None:
                    self._bank.busy[self._row] = True  # waiting for the model
                    self._bank.cruise[self._row] = False
                    return
                prob = rec[7][3]  # the answer of the model window it follows
                if prob < self._neg and rec[4]:
                    # loud, and the model never heard it: no evidence of silence. (Taking a
                    # pause's answer, "Oh, sorry, wrong number. | Bye!" stopped the speech
                    # inside "Bye!", which then never started: the model alone hears it all)
                    prob = self._neg
            elif rec[6] == _GATED and rec[0] > hold_until:
                break  # held back: it may still become a pre-roll window
            pending.popleft()
            if prob == 0.0 and not seg.speaking:
                seg._run = 0  # a silent window while not speaking: all it does
                continue
            event = seg.step(prob, rec[2], rec[1], rec[4], rec[5])
            if event is not None:
                self.on_event(seg.speaking, event)
                if self.closed:
                    return
        bank = self._bank
        row = self._row
        ref = self._ref
        if seg.speaking:
            # cruising: nothing pending, a long run whose latest model answer is speech (the
            # bank may then count loud windows that only skip the model by itself)
            cruise = (
                not pending
                and self._long
                and not self._fresh
                and ref is not None
                and ref[3] is not None
                and ref[3] >= self._neg
                and seg._silent == 0
            )
            bank.busy[row] = True
            bank.cruise[row] = cruise
            if cruise:
                bank.set_skip_base(row, self._skipped)
            return
        bank.cruise[row] = False
        busy = seg._run != 0
        if not busy:
            for rec in pending:
                if rec[6] != _GATED:
                    busy = True
                    break
        bank.busy[row] = busy


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
