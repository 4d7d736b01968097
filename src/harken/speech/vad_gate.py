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

#: a queued window: (row, the stream's input bytes, sample index of the window in them, ts)
Item = tuple[int, bytes, int, float]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
B8 = npt.NDArray[np.bool_]


class GateBank:
    """Energy-gate state of every stream at one rate (one row each), stepped all at once.

    ``wake`` is called when the first window is queued after a step (the batcher schedules its
    tick). Used on the event loop thread only (or the thread that pumps a manual batcher).
    """

    n: I64  # windows gated so far, per row
    floor: F64  # adaptive noise floor (dBFS; NaN before the first window)
    blk_min: F64  # the quietest window of the current minimum-statistics block
    blk_n: I64
    mins: F64  # [rows, MIN_BLOCKS] the last blocks' minima (a ring)
    mins_i: I64
    mins_n: I64
    loud: B8  # the last window passed the gate
    active: B8
    active_run: I64
    open_until: I64  # the gate is open up to this window (hangover)
    prev_be: F64  # [rows, BLOCKS] energy of the last window's 8 ms blocks
    gate_on: B8
    margin: F64
    hold: F64
    min_db: F64
    rise: F64
    hang: I64
    lv_hist: F64  # [rows, hist] level and media time of the last ``hist`` windows
    ts_hist: F64

    _FIELDS: Final = (
        ("n", 0, np.int64, ()),
        ("floor", np.nan, np.float64, ()),
        ("blk_min", np.inf, np.float64, ()),
        ("blk_n", 0, np.int64, ()),
        ("mins", np.inf, np.float64, (MIN_BLOCKS,)),
        ("mins_i", 0, np.int64, ()),
        ("mins_n", 0, np.int64, ()),
        ("loud", False, np.bool_, ()),
        ("active", False, np.bool_, ()),
        ("active_run", 0, np.int64, ()),
        ("open_until", _NEVER, np.int64, ()),
        ("prev_be", 0.0, np.float64, (BLOCKS,)),
        ("gate_on", True, np.bool_, ()),
        ("margin", 0.0, np.float64, ()),
        ("hold", 0.0, np.float64, ()),
        ("min_db", 0.0, np.float64, ()),
        ("rise", 0.0, np.float64, ()),
        ("hang", 0, np.int64, ()),
    )

    def __init__(self, window: int, wake: Callable[[], None]) -> None:
        self.w = window
        self.wake = wake
        self.items: list[Item] = []
        self.streams: list[VadStream | None] = []
        self._free: list[int] = []
        self._released: list[int] = []
        self.hist = 1  # windows of level/time history kept per row (the largest pre-roll)
        self._cap = 0
        #: per row: the stream's Python must see every window (written by the stream; a
        #: bytearray so that a write from Python is cheap; ``_busy`` is a numpy view of it)
        self.busy = bytearray()
        self._busy: B8 = np.zeros(0, np.bool_)
        self._alloc(64)

    # --- rows -------------------------------------------------------------------------------

    def _alloc(self, cap: int) -> None:
        old = self._cap
        for name, fill, dtype, shape in self._FIELDS:
            a = np.full((cap, *shape), fill, dtype)
            if old:
                a[:old] = getattr(self, name)
            setattr(self, name, a)
        for name in ("lv_hist", "ts_hist"):
            a = np.zeros((cap, self.hist), np.float64)
            if old:
                a[:old] = getattr(self, name)
            setattr(self, name, a)
        del self._busy  # release the buffer before the bytearray grows
        self.busy.extend(bytes(cap - old))
        self._busy = np.frombuffer(self.busy, np.bool_)
        self.streams.extend([None] * (cap - old))
        self._free.extend(range(cap - 1, old - 1, -1))
        self._cap = cap

    def _grow_hist(self, h: int) -> None:
        """A longer history ring: each row's last windows move to their new ``index % h``."""
        old = self.hist
        idx = np.arange(self._cap)
        for name in ("lv_hist", "ts_hist"):
            src = getattr(self, name)
            a = np.zeros((self._cap, h), np.float64)
            for j in range(1, old + 1):
                i = np.maximum(self.n - j, 0)
                a[idx, i % h] = src[idx, i % old]
            setattr(self, name, a)
        self.hist = h

    def open(self, stream: VadStream, params: VadParams, preroll: int) -> int:
        """A row for ``stream``; its state starts fresh."""
        if preroll > self.hist:
            self._grow_hist(preroll)
        if not self._free:
            self._alloc(2 * self._cap)
        row = self._free.pop()
        self.streams[row] = stream
        self.n[row] = 0
        self.floor[row] = np.nan
        self.blk_min[row] = np.inf
        self.blk_n[row] = 0
        self.mins_i[row] = 0
        self.mins_n[row] = 0
        self.loud[row] = False
        self.active[row] = False
        self.active_run[row] = 0
        self.open_until[row] = _NEVER
        self.prev_be[row] = 0.0
        self.busy[row] = 0
        self.gate_on[row] = params.gate
        self.margin[row] = params.gate_margin_db
        self.hold[row] = params.gate_hold_db
        self.min_db[row] = params.gate_min_dbfs
        self.rise[row] = params.floor_rise_db_s * self.w / stream.rate
        self.hang[row] = params.windows(params.hangover_ms)
        return row

    def release(self, row: int) -> None:
        """The stream closed: its queued windows are ignored; the row is reused after a step."""
        if self.streams[row] is not None:
            self.streams[row] = None
            self._released.append(row)

    # --- the step ---------------------------------------------------------------------------

    def step(self) -> None:
        """Gate every queued window (in order per stream); interesting ones go to their stream."""
        items = self.items
        if not items:
            return
        self.items = []
        m = len(items)
        w = self.w
        rows: I64 = np.fromiter((it[0] for it in items), np.int64, m)
        ts: F64 = np.fromiter((it[3] for it in items), np.float64, m)
        data = b"".join([raw[p << 1 : (p + w) << 1] for _, raw, p, _ in items])
        # int16 squares summed in float64 are exact: nothing depends on how windows are batched
        x = np.frombuffer(data, np.int16).astype(np.float64).reshape(m, BLOCKS, w // BLOCKS)
        be: F64 = np.einsum("ijk,ijk->ij", x, x)  # energy of each 8 ms block
        level: F64 = 10.0 * np.log10(be.sum(axis=1) / w + _LOG_EPS) - _DBFS0
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        new = srt[1:] != srt[:-1]
        if bool(new.all()):
            self._round(items, np.arange(m), rows, ts, level, be)
        else:
            # the k-th window of each stream in round k
            starts = np.flatnonzero(np.r_[True, new])
            group = np.cumsum(np.r_[0, new])
            rank = np.empty(m, np.int64)
            rank[order] = np.arange(m) - starts[group]
            for k in range(int(rank.max()) + 1):
                sel = np.flatnonzero(rank == k)
                self._round(items, sel, rows[sel], ts[sel], level[sel], be[sel])
        if self._released:
            self._free.extend(self._released)
            self._released.clear()

    def _round(self, items: list[Item], sel: I64, rows: I64, ts: F64, level: F64, be: F64) -> None:
        """One window of each of ``rows`` (distinct), vectorised."""
        n = self.n[rows]
        self.n[rows] = n + 1
        floor = self.floor[rows]
        first = np.isnan(floor)
        if first.any():
            floor = np.where(first, level, floor)
        gate_db = np.maximum(floor + self.margin[rows], self.min_db[rows])
        passed = level >= gate_db
        flip = passed != self.loud[rows]
        self.loud[rows] = passed
        # the noise floor: falls fast, rises at most ``rise`` per window while the gate is shut
        rise = np.minimum(level - floor, self.rise[rows])
        new = np.where(
            level < floor, floor + 0.3 * (level - floor), np.where(passed, floor, floor + rise)
        )
        # minimum statistics: the quietest window of each block; noise that stays loud for
        # seconds lifts the floor
        bmin = np.minimum(self.blk_min[rows], level)
        bn = self.blk_n[rows] + 1
        full = bn == MIN_BLOCK
        if full.any():
            at = np.flatnonzero(full)
            fr = rows[at]
            wi = self.mins_i[fr]
            self.mins[fr, wi] = bmin[at]
            self.mins_i[fr] = (wi + 1) % MIN_BLOCKS
            cnt = np.minimum(self.mins_n[fr] + 1, MIN_BLOCKS)
            self.mins_n[fr] = cnt
            bmin[at] = np.inf
            bn[at] = 0
            lift = cnt == MIN_BLOCKS
            if lift.any():
                j = at[lift]
                new[j] = np.maximum(new[j], self.mins[fr[lift]].min(axis=1) - 1.0)
        self.blk_min[rows] = bmin
        self.blk_n[rows] = bn
        self.floor[rows] = new
        # hysteresis: opened by a loud window, kept open by anything clearly above the floor
        active = passed | (self.active[rows] & (level >= floor + self.hold[rows]))
        self.active[rows] = active
        run = np.where(active, self.active_run[rows] + 1, 0)
        self.active_run[rows] = run
        until = np.where(active, n + self.hang[rows], self.open_until[rows])
        self.open_until[rows] = until
        in_gate = (n <= until) | ~self.gate_on[rows]
        k = n % self.hist
        self.lv_hist[rows, k] = level
        self.ts_hist[rows, k] = ts
        prev = self.prev_be[rows]
        self.prev_be[rows] = be
        hot = np.flatnonzero(in_gate | flip | self._busy[rows])
        if not hot.size:
            return
        # the 8 ms blocks at or above the gate's level, for the energy edges: the first and
        # the last loud block of this window (-1: none) and the last of the previous one
        thr = (10.0 ** ((gate_db[hot] + _DBFS0) / 10.0) * (self.w // BLOCKS))[:, None]
        hits = be[hot] >= thr
        rev = hits[:, ::-1]
        anyhit = hits.any(axis=1)
        first_hit = np.where(anyhit, hits.argmax(axis=1), -1)
        last_hit = np.where(anyhit, BLOCKS - 1 - rev.argmax(axis=1), -1)
        phits = prev[hot] >= thr
        prev_last = np.where(phits.any(axis=1), BLOCKS - 1 - phits[:, ::-1].argmax(axis=1), -1)
        streams = self.streams
        for r, j, i, t, lv, p, ig, ar, f, fh, lh, pl in zip(
            rows[hot].tolist(),
            sel[hot].tolist(),
            n[hot].tolist(),
            ts[hot].tolist(),
            level[hot].tolist(),
            passed[hot].tolist(),
            in_gate[hot].tolist(),
            run[hot].tolist(),
            flip[hot].tolist(),
            first_hit.tolist(),
            last_hit.tolist(),
            prev_last.tolist(),
            strict=True,
        ):
            stream = streams[r]
            if stream is not None:
                item = items[j]
                stream._step(i, item[1], item[2], t, lv, p, ig, ar, f, fh, lh, pl)
