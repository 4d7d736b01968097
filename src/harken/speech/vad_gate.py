"""The energy gate of every call at one sample rate, run as one numpy pass per batcher tick.

A :class:`~harken.speech.vad.VadStream` does almost nothing per frame: it appends the frame's
bytes and, for each 32 ms window the frame completes, queues ``(row, raw, pos, ts)`` here. At the
batcher's tick, :meth:`GateBank.step` takes every call's queued windows at once and computes, in
a handful of numpy operations over all of them: the window's level (dBFS), the gate threshold
from the call's adaptive noise floor, whether it passed, the noise floor update (fast fall,
bounded rise, minimum statistics over ~5 s), the hysteresis (``active``), the hangover
(``open_until``) and the length of the active run. Per-call state lives in arrays, one row per
call.

Only *interesting* windows go back to the stream's Python (``VadStream._step``): a window in an
open gate (it goes to the model, or skips it inside sustained speech), a gate edge (its 8 ms
block is located), or any window of a call that is *busy* (speaking, in a run of speech windows
not yet decided, or waiting for model answers). A call listening to line noise with its gate
closed costs no Python at all per window: in the per-window code such a window would be held
back ``preroll`` windows and then counted as silence, which changes nothing while the call is
not busy. If the gate opens within ``preroll`` windows, the stream rebuilds those held windows
from the level and time recorded here (``lv_hist``, ``ts_hist``), so the decisions are exactly
those of gating every window in Python.

A window's calls are processed in *rounds* (the k-th queued window of each call in round k), so
each call's windows are gated in order.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from harken.speech.vad import VadStream
    from harken.speech.vad_segment import VadParams

__all__ = ["GateBank"]

_LOG_EPS: Final = 1e-12
_DBFS0: Final = 90.309  # dBFS of int16-valued samples: 20 * log10(1 / 32768) = -90.309
_NEVER: Final = -(10**9)
MIN_BLOCK: Final = 16  # windows per minimum-statistics block (~0.5 s)
MIN_BLOCKS: Final = 10  # blocks the noise floor may not stay under (~5 s)
BLOCKS: Final = 4  # sub-blocks per window for the energy edges (8 ms)

F64 = npt.NDArray[np.float64]

# columns of the per-row state matrix (float64; counts and flags are exact in it)
(
    _N,  # windows gated so far
    _FLOOR,  # adaptive noise floor (dBFS; NaN before the first window)
    _BLK_MIN,  # the quietest window of the current minimum-statistics block
    _BLK_N,
    _MINS_I,  # next slot in the ring of the last blocks' minima
    _MINS_N,
    _LOUD,  # the last window passed the gate
    _ACTIVE,
    _RUN,  # length of the active run
    _UNTIL,  # the gate is open up to this window (hangover)
    _WAS_OPEN,  # the last window was in the open gate
    _CRUISE_N,  # windows skipped here while cruising, since the stream's Python last ran
    _SKIP_BASE,  # the stream's skip counter when it started cruising
    _PROBE,  # per-stream parameters from here on
    _RESUME,
    _GATE_ON,
    _MARGIN,
    _HOLD,
    _MIN_DB,
    _RISE,
    _HANG,
    _BE,  # energy of the last window's four 8 ms blocks (4 columns)
) = range(22)
_COLS: Final = _BE + 4
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]


class GateBank:
    """Energy-gate state of every stream at one rate (one row each), stepped all at once.

    ``wake`` is called when the first window is queued after a step (the batcher schedules its
    tick). Used on the event loop thread only (or the thread that pumps a manual batcher).
    """

    #: True: every window goes to its stream's Python (no quiet or cruising window is settled
    #: here); the reference the tests hold the fast paths to
    reference = False

    def __init__(self, window: int, wake: Callable[[], None]) -> None:
        self.w = window
        self.wake = wake
        #: queued windows, appended by the streams: (row, media time, the window's int16 bytes,
        #: and for the stream's Python its input bytes and the window's sample index in them)
        self.queue: list[tuple[int, float, bytes, bytes, int]] = []
        #: weak: a stream dropped without ``close()`` does not stay alive here (its row is
        #: released when it is collected)
        self.streams: list[weakref.ref[VadStream] | None] = []
        self._free: list[int] = []
        self._released: list[int] = []
        self.hist = 1  # windows of level/time history kept per row (the largest pre-roll)
        self._cap = 0
        self.state: F64 = np.zeros((0, _COLS))
        self.mins: F64 = np.zeros((0, MIN_BLOCKS))  # ring of the last blocks' minima
        #: level and media time of each row's last ``hist`` windows (at ``index % hist``)
        self.lv_hist: F64 = np.zeros((0, 1))
        self.ts_hist: F64 = np.zeros((0, 1))
        #: per row: the stream's Python must see every window (written by the stream; a
        #: bytearray so that a write from Python is cheap; ``_busy`` is a numpy view of it)
        self.busy = bytearray()
        self._busy: B8 = np.zeros(0, np.bool_)
        #: per row: the stream is *cruising* (written by the stream): speaking, nothing
        #: pending, in a long run whose latest model answer is speech. A loud window that
        #: would only skip the model (not a probe) then changes nothing but the skip count,
        #: and is counted here without the stream's Python.
        self.cruise = bytearray()
        self._cruise: B8 = np.zeros(0, np.bool_)
        self._alloc(64)

    # --- rows -------------------------------------------------------------------------------

    def _alloc(self, cap: int) -> None:
        old = self._cap

        def grow(a: F64) -> F64:
            out = np.zeros((cap, a.shape[1]))
            out[:old] = a
            return out

        self.state = grow(self.state)
        self.mins = grow(self.mins)
        self.lv_hist = grow(self.lv_hist)
        self.ts_hist = grow(self.ts_hist)
        del self._busy, self._cruise  # release the buffers before the bytearrays grow
        self.busy.extend(bytes(cap - old))
        self._busy = np.frombuffer(self.busy, np.bool_)
        self.cruise.extend(bytes(cap - old))
        self._cruise = np.frombuffer(self.cruise, np.bool_)
        self.streams.extend([None] * (cap - old))
        self._free.extend(range(cap - 1, old - 1, -1))
        self._cap = cap

    def _grow_hist(self, h: int) -> None:
        """A longer history ring: each row's last windows move to their new ``index % h``."""
        old = self.hist
        idx = np.arange(self._cap)
        n = self.state[:, _N].astype(np.int64)
        for name in ("lv_hist", "ts_hist"):
            src = getattr(self, name)
            a = np.zeros((self._cap, h), np.float64)
            for j in range(1, old + 1):
                i = np.maximum(n - j, 0)
                a[idx, i % h] = src[idx, i % old]
            setattr(self, name, a)
        self.hist = h

    def open(self, stream: VadStream, params: VadParams, preroll: int, resume: int) -> int:
        """A row for ``stream``; its state starts fresh."""
        if preroll > self.hist:
            self._grow_hist(preroll)
        if self._released and not self.queue:  # no queued window can name them any more
            self._free.extend(self._released)
            self._released.clear()
        if not self._free:
            self._alloc(2 * self._cap)
        row = self._free.pop()
        streams, released = self.streams, self._released

        def collected(ref: weakref.ref[VadStream], row: int = row) -> None:
            # dropped without close(); a closed stream's row may already serve another
            if streams[row] is ref:
                streams[row] = None
                released.append(row)

        self.streams[row] = weakref.ref(stream, collected)
        st = self.state[row]
        st[:] = 0.0
        st[_FLOOR] = np.nan
        st[_BLK_MIN] = np.inf
        st[_UNTIL] = _NEVER
        st[_PROBE] = max(2, params.windows(params.probe_ms))
        st[_RESUME] = resume
        st[_GATE_ON] = params.gate
        st[_MARGIN] = params.gate_margin_db
        st[_HOLD] = params.gate_hold_db
        st[_MIN_DB] = params.gate_min_dbfs
        st[_RISE] = params.floor_rise_db_s * self.w / stream.rate
        st[_HANG] = params.windows(params.hangover_ms)
        self.busy[row] = 0
        self.cruise[row] = 0
        return row

    def release(self, row: int) -> None:
        """The stream closed: its queued windows are ignored; the row is reused after a step."""
        if self.streams[row] is not None:
            self.streams[row] = None
            self._released.append(row)

    def windows(self, row: int) -> int:
        """Windows gated so far for ``row``."""
        return int(self.state[row, _N])

    def noise_floor(self, row: int) -> float:
        return float(self.state[row, _FLOOR])

    def set_skip_base(self, row: int, skipped: int) -> None:
        self.state[row, _SKIP_BASE] = skipped

    # --- the step ---------------------------------------------------------------------------

    def step(self) -> None:
        """Gate every queued window (in order per stream); interesting ones go to their stream."""
        queue = self.queue
        m = len(queue)
        if not m:
            return
        self.queue = []
        rows_t, ts_t, parts, raws, pos = zip(*queue, strict=True)
        rows: I64 = np.array(rows_t, np.int64)
        ts: F64 = np.array(ts_t, np.float64)
        data = b"".join(parts)
        w = self.w
        # int16 squares summed in float64 are exact: nothing depends on how windows are batched
        x = np.frombuffer(data, np.int16).astype(np.float64).reshape(m, BLOCKS, w // BLOCKS)
        be: F64 = np.einsum("ijk,ijk->ij", x, x)  # energy of each 8 ms block
        level: F64 = 10.0 * np.log10(be.sum(axis=1) / w + _LOG_EPS) - _DBFS0
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        new = srt[1:] != srt[:-1]
        if bool(new.all()):
            self._round(raws, pos, np.arange(m), rows, ts, level, be)
        else:
            # the k-th window of each stream in round k
            starts = np.flatnonzero(np.r_[True, new])
            group = np.cumsum(np.r_[0, new])
            rank = np.empty(m, np.int64)
            rank[order] = np.arange(m) - starts[group]
            for k in range(int(rank.max()) + 1):
                sel = np.flatnonzero(rank == k)
                self._round(raws, pos, sel, rows[sel], ts[sel], level[sel], be[sel])
        if self._released:
            self._free.extend(self._released)
            self._released.clear()

    def _round(
        self,
        raws: tuple[bytes, ...],
        pos: tuple[int, ...],
        sel: I64,
        rows: I64,
        ts: F64,
        level: F64,
        be: F64,
    ) -> None:
        """One window of each of ``rows`` (distinct), vectorised."""
        st = self.state[rows]  # a copy, written back at the end
        n = st[:, _N].astype(np.int64)
        st[:, _N] += 1
        floor = st[:, _FLOOR]
        first = np.isnan(floor)
        if first.any():
            floor = np.where(first, level, floor)
        gate_db = np.maximum(floor + st[:, _MARGIN], st[:, _MIN_DB])
        passed = level >= gate_db
        flip = passed != st[:, _LOUD].astype(np.bool_)
        st[:, _LOUD] = passed
        # the noise floor: falls fast, rises at most ``rise`` per window while the gate is shut
        rise = np.minimum(level - floor, st[:, _RISE])
        new = np.where(
            level < floor, floor + 0.3 * (level - floor), np.where(passed, floor, floor + rise)
        )
        # minimum statistics: the quietest window of each block; noise that stays loud for
        # seconds lifts the floor
        bmin = np.minimum(st[:, _BLK_MIN], level)
        bn = st[:, _BLK_N] + 1
        full = bn == MIN_BLOCK
        if full.any():
            at = np.flatnonzero(full)
            fr = rows[at]
            wi = st[at, _MINS_I].astype(np.int64)
            self.mins[fr, wi] = bmin[at]
            st[at, _MINS_I] = (wi + 1) % MIN_BLOCKS
            cnt = np.minimum(st[at, _MINS_N] + 1, MIN_BLOCKS)
            st[at, _MINS_N] = cnt
            bmin[at] = np.inf
            bn[at] = 0
            lift = cnt == MIN_BLOCKS
            if lift.any():
                j = at[lift]
                new[j] = np.maximum(new[j], self.mins[fr[lift]].min(axis=1) - 1.0)
        st[:, _BLK_MIN] = bmin
        st[:, _BLK_N] = bn
        st[:, _FLOOR] = new
        # hysteresis: opened by a loud window, kept open by anything clearly above the floor
        active = passed | ((st[:, _ACTIVE] != 0) & (level >= floor + st[:, _HOLD]))
        st[:, _ACTIVE] = active
        run = np.where(active, st[:, _RUN] + 1, 0)
        st[:, _RUN] = run
        until = np.where(active, n + st[:, _HANG], st[:, _UNTIL])
        st[:, _UNTIL] = until
        in_gate = (n <= until) | (st[:, _GATE_ON] == 0)
        was_open = st[:, _WAS_OPEN] != 0
        st[:, _WAS_OPEN] = in_gate
        k = n % self.hist
        self.lv_hist[rows, k] = level
        self.ts_hist[rows, k] = ts
        prev = st[:, _BE : _BE + BLOCKS].copy()
        st[:, _BE : _BE + BLOCKS] = be
        hot_mask = in_gate | flip | self._busy[rows]
        cruise = self._cruise[rows]
        cruise_n = st[:, _CRUISE_N]
        if self.reference:
            hot_mask[:] = True
        elif cruise.any():
            # a cruising stream's loud window, in the same open stretch, that is not a probe
            fast = (
                cruise
                & in_gate
                & was_open
                & passed
                & ~flip
                & (run > st[:, _RESUME])
                & (st[:, _SKIP_BASE] + cruise_n + 1 < st[:, _PROBE])
            )
            if fast.any():
                cruise_n += fast
                hot_mask &= ~fast
        hot = np.flatnonzero(hot_mask)
        cruised = cruise_n[hot].astype(np.int64)
        st[hot, _CRUISE_N] = 0
        self.state[rows] = st
        if not hot.size:
            return
        # the 8 ms blocks at or above the gate's level, for the energy edges: the first and
        # the last loud block of this window (-1: none) and the last of the previous one
        thr = (10.0 ** ((gate_db[hot] + _DBFS0) / 10.0) * (self.w // BLOCKS))[:, None]
        hits = be[hot] >= thr
        anyhit = hits.any(axis=1)
        first_hit = np.where(anyhit, hits.argmax(axis=1), -1)
        last_hit = np.where(anyhit, BLOCKS - 1 - hits[:, ::-1].argmax(axis=1), -1)
        phits = prev[hot] >= thr
        prev_last = np.where(phits.any(axis=1), BLOCKS - 1 - phits[:, ::-1].argmax(axis=1), -1)
        streams = self.streams
        for r, j, i, t, lv, p, ig, ar, f, fh, lh, pl, cn in zip(
            rows[hot].tolist(),
            sel[hot].tolist(),
            n[hot].tolist(),
            ts[hot].tolist(),
            level[hot].tolist(),
            passed[hot].tolist(),
            in_gate[hot].tolist(),
            run[hot].astype(np.int64).tolist(),
            flip[hot].tolist(),
            first_hit.tolist(),
            last_hit.tolist(),
            prev_last.tolist(),
            cruised.tolist(),
            strict=True,
        ):
            ref = streams[r]
            stream = ref() if ref is not None else None
            if stream is not None:
                stream._step(i, raws[j], pos[j], t, lv, p, ig, ar, f, fh, lh, pl, cn)
