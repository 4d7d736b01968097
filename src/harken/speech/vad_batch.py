"""One Silero VAD session per process, batched across every call's windows.

Silero VAD (v5/v6 ONNX) is a small recurrent model with a batch dimension::

    input  [B, C + W] float32   C samples of context (the audio just before the window) + window
    state  [2, B, 128] float32  LSTM state, per stream
    sr     int64 scalar         8000 (W=256, C=32) or 16000 (W=512, C=64)
    ->  output [B, 1] speech probability,  stateN [2, B, 128]

Each call owns a :class:`VadSlot` (its LSTM state). A call submits *jobs*: one or more
consecutive windows (more than one when its gate opens and it sends the windows before the onset
too). The :class:`SileroBatcher` collects what was submitted since its last run, takes at most
``max_steps`` (default 1) windows per call, packs them by sample rate into one ``[B, C+W]``
input per step (with several steps, jobs are sorted longest first so each step's rows are a
prefix) and runs them in one worker thread.
onnxruntime releases the GIL while it runs, so the event loop keeps moving audio; results come
back on the loop (``call_soon_threadsafe``) a few ms later, and the audio itself was never held.

Overload: if runs are slower than real time, jobs wait. A slot holding more than
``max_backlog`` waiting windows drops its oldest ones (they resolve as NaN: the caller decides
what a dropped window means) and a run takes at most ``max_batch`` windows per step; the rest
wait for the next run. Both are counted (:class:`BatchStats`). A slot closed while its windows
are in a run has its results discarded (counted), never delivered.

Runs are serialised (one in flight per batcher), so a slot's state is updated before its next
window is packed. The batcher can also be pumped synchronously (:meth:`SileroBatcher.pump`),
which the benchmark uses to replay many calls faster than real time with the same batch shapes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from harken.errors import ConfigError
from harken.speech.models import OrtSession, silero_session
from harken.speech.vad_gate import GateBank

log = logging.getLogger("harken.speech.vad")

__all__ = [
    "CONTEXT",
    "WINDOW",
    "BatchStats",
    "SileroBatcher",
    "VadSlot",
    "default_batcher",
    "vad_executor",
]

#: samples per model window and context, by sample rate
WINDOW: Final = {8000: 256, 16000: 512}
CONTEXT: Final = {8000: 32, 16000: 64}

F32Array = npt.NDArray[np.float32]
#: windows as an array: int16 samples ``[k, C + W]``
I16Array = npt.NDArray[np.int16]
_SCALE: Final = np.float32(1.0 / 32768.0)
#: ``deliver(first_index, probabilities)``: one float per window; NaN marks a window dropped
#: under overload
Deliver = Callable[[int, list[float]], None]
#: waiting windows: (first index, k rows of C + W int16 samples as bytes, k, reset)
_Waiting = tuple[int, bytes, int, bool]


class VadSlot:
    """One call's place in the batcher: its LSTM state and where its results go."""

    __slots__ = ("backlog", "closed", "deliver", "queued", "rate", "row", "state", "waiting")

    def __init__(self, rate: int, deliver: Deliver) -> None:
        self.rate = rate
        self.deliver = deliver
        self.state: F32Array = np.zeros((2, 128), np.float32)
        self.closed = False
        self.queued = False  # present in the batcher's ready list
        self.waiting: list[_Waiting] = []
        self.row = 2 * (WINDOW[rate] + CONTEXT[rate])  # bytes per window
        self.backlog = 0  # windows waiting

    def reset_state(self) -> None:
        self.state = np.zeros((2, 128), np.float32)


@dataclass
class BatchStats:
    """Counters of one batcher (all since creation)."""

    runs: int = 0
    steps: int = 0
    windows: int = 0
    max_batch_seen: int = 0
    dropped: int = 0  # windows dropped because a slot's backlog overflowed
    deferred: int = 0  # windows left for a later run because a step was full
    discarded: int = 0  # windows whose call closed before the result came back
    busy_s: float = 0.0  # wall time spent inside session.run
    cpu_s: float = 0.0  # CPU time of the running thread inside session.run
    batch_sizes: list[int] = field(default_factory=list)

    @property
    def mean_batch(self) -> float:
        return self.windows / self.steps if self.steps else 0.0


_EMPTY: Final[F32Array] = np.zeros((2, 128), np.float32)
_Job = tuple[VadSlot, int, bytes, int, F32Array]  # slot, first index, k windows, k, state


class SileroBatcher:
    """Batches Silero windows of many calls into one ONNX run per tick.

    ``tick_s`` (one window, 32 ms) is how long the first window waits for others before a run
    starts (a run also waits for the previous one to finish); at each tick the gate banks
    (:class:`~harken.speech.vad_gate.GateBank`, one per rate) gate every window queued since
    the last one, then the model runs. A 16 ms tick gave batches of ~30 at 200 calls once the
    loop had little Python left to do (the model costs more per window in small batches); 32
    ms gives ~50, for decisions up to 16 ms later. A run is ``max_steps`` model calls (default one):
    a call with several windows waiting (its gate just opened) sends the first ``max_steps``
    now and the rest in the next runs, so every run is one full batch rather than a full one
    followed by small ones. With at most ``few`` streams open (a handful of calls: batching
    saves nothing) there is no wait at all: a window runs as soon as it is ready, so a
    conversation's VAD decisions are not delayed by the tick. ``session`` defaults to the
    process-wide Silero
    session; ``executor`` to the process-wide VAD thread. A ``manual`` batcher never schedules
    itself: whoever owns it calls :meth:`pump` (benchmarks replaying calls faster than real time).
    """

    def __init__(
        self,
        session: OrtSession | None = None,
        *,
        tick_s: float = 0.032,
        few: int = 8,
        max_batch: int = 512,
        max_steps: int = 1,
        max_backlog: int = 24,
        executor: ThreadPoolExecutor | None = None,
        keep_batch_sizes: bool = False,
        manual: bool = False,
    ) -> None:
        if max_batch < 1 or max_backlog < 1 or max_steps < 1 or tick_s < 0:
            raise ConfigError("max_batch, max_backlog and max_steps must be >= 1, tick_s >= 0")
        self._session = session
        self.tick_s = tick_s
        self.few = few
        self.open_streams = 0
        self.max_batch = max_batch
        self.max_steps = max_steps
        self.max_backlog = max_backlog
        self._executor = executor
        self._keep_sizes = keep_batch_sizes
        self.manual = manual
        self.stats = BatchStats()
        self._ready: list[VadSlot] = []
        self._in_flight = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: asyncio.Future[None] | None = None
        self._banks: dict[int, GateBank] = {}

    @property
    def session(self) -> OrtSession:
        if self._session is None:
            self._session = silero_session()
        return self._session

    # --- calls ------------------------------------------------------------------------------

    def gate_bank(self, rate: int) -> GateBank:
        """The energy gate of every stream at ``rate``, stepped at each tick before the run."""
        bank = self._banks.get(rate)
        if bank is None:
            if rate not in WINDOW:
                raise ConfigError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate}")
            bank = self._banks[rate] = GateBank(WINDOW[rate], self._wake)
        return bank

    def _wake(self) -> None:
        """Windows were queued for the gate: make sure a tick comes."""
        if self._timer is None and not self._in_flight and not self.manual:
            self._schedule()

    def _gate(self) -> None:
        for bank in self._banks.values():
            if bank.queue:
                bank.step()

    def _gated(self) -> bool:
        """Windows are queued for the gate."""
        return any(bank.queue for bank in self._banks.values())

    def open(self, rate: int, deliver: Deliver) -> VadSlot:
        """A slot for one call's stream at ``rate`` (8000 or 16000)."""
        if rate not in WINDOW:
            raise ConfigError(f"Silero VAD runs at 8000 or 16000 Hz, not {rate}")
        self.open_streams += 1
        return VadSlot(rate, deliver)

    def close(self, slot: VadSlot) -> None:
        """The call is over: forget its waiting windows, discard results still in flight."""
        if not slot.closed:
            self.open_streams -= 1
        slot.closed = True
        slot.waiting.clear()
        slot.backlog = 0

    def submit(
        self, slot: VadSlot, first_index: int, windows: I16Array, *, reset: bool = False
    ) -> None:
        """Queue ``windows`` (int16 ``[k, C+W]``, consecutive, from window ``first_index``).

        ``reset`` zeroes the slot's LSTM state before the first of them (a fresh onset after a
        long gap). Called on the event loop (or the pumping thread); never blocks.
        """
        k = windows.shape[0]
        data = np.ascontiguousarray(windows, np.int16).tobytes()
        self.submit_bytes(slot, first_index, data, k, reset=reset)

    def submit_bytes(
        self, slot: VadSlot, first_index: int, data: bytes, k: int, *, reset: bool = False
    ) -> None:
        """:meth:`submit` with the ``k`` windows as int16 bytes (``k * (C + W)`` samples)."""
        if slot.closed:
            return
        waiting = slot.waiting
        waiting.append((first_index, data, k, reset))
        slot.backlog += k
        if len(waiting) == 1:
            if not slot.queued:
                slot.queued = True
                self._ready.append(slot)
                if self._timer is None and not self._in_flight and not self.manual:
                    self._schedule()
            return
        while slot.backlog > self.max_backlog and len(waiting) > 1:
            idx, _, old, _ = waiting.pop(0)
            slot.backlog -= old
            self.stats.dropped += old
            slot.deliver(idx, [math.nan] * old)
        if not slot.queued:
            slot.queued = True
            self._ready.append(slot)
        self._schedule()

    # --- running ----------------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._in_flight or self._timer is not None or self.manual:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # pumped synchronously (bench, tests)
        self._loop = loop
        tick = self.tick_s if self.open_streams > self.few else 0.0
        self._timer = loop.call_later(tick, self._start)

    def _collect(self) -> list[_Job]:
        """Take the waiting windows (on the loop): at most ``max_steps`` per slot and
        ``max_batch`` slots per run; the rest wait for the next run."""
        jobs: list[_Job] = []
        ready, self._ready = self._ready, []
        budget = self.max_batch
        steps = self.max_steps
        for slot in ready:
            slot.queued = False
            waiting = slot.waiting
            if slot.closed or not waiting:
                continue
            if budget <= 0:
                self.stats.deferred += slot.backlog
                slot.queued = True
                self._ready.append(slot)
                continue
            budget -= 1
            first, data, k, reset = waiting[0]
            row = slot.row
            if k > steps:
                waiting[0] = (first + steps, data[steps * row :], k - steps, False)
                data = data[: steps * row]
                k = steps
            else:
                waiting.pop(0)
                # consecutive jobs of one slot are merged, up to max_steps windows
                while waiting and k < steps and waiting[0][0] == first + k:
                    nxt, more, more_k, more_reset = waiting[0]
                    if more_reset:
                        break
                    take = min(steps - k, more_k)
                    data += more[: take * row]
                    k += take
                    if take < more_k:
                        waiting[0] = (nxt + take, more[take * row :], more_k - take, False)
                    else:
                        waiting.pop(0)
            if waiting:
                slot.queued = True
                self._ready.append(slot)
            slot.backlog -= k
            if reset:
                slot.reset_state()
            jobs.append((slot, first, data, k, slot.state))
        return jobs

    def _start(self) -> None:
        self._timer = None
        if self._in_flight:
            return
        self._gate()
        jobs = self._collect()
        if not jobs:
            self._set_idle()
            return
        self._in_flight = True
        loop = self._loop
        assert loop is not None
        executor = self._executor or vad_executor()
        executor.submit(self._work, jobs, loop)

    def _work(self, jobs: list[_Job], loop: asyncio.AbstractEventLoop) -> None:
        """Worker thread: run the model, then hand the results back to the loop."""
        try:
            results: object = self._run(jobs)
        except Exception as exc:  # noqa: BLE001 - reported on the loop, never lost
            results = exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(self._finish, jobs, results)

    def _finish(self, jobs: list[_Job], results: object) -> None:
        self._in_flight = False
        if isinstance(results, BaseException):
            for slot, first, _, k, _ in jobs:  # the model failed: those windows are lost
                if not slot.closed:
                    slot.deliver(first, [math.nan] * k)
            log.error("Silero VAD batch failed: %r", results)
            self._schedule_next()
            return
        self._deliver(jobs, results)  # type: ignore[arg-type]
        self._schedule_next()

    def _schedule_next(self) -> None:
        if self._ready or self._gated():
            self._schedule()
        else:
            self._set_idle()

    def _run(self, jobs: list[_Job]) -> list[tuple[list[float], F32Array]]:
        """Pack, run and unpack (worker thread or pump). Returns (probs [k], state) per job."""
        out: list[tuple[list[float], F32Array]] = [([], _EMPTY)] * len(jobs)
        by_rate: dict[int, list[int]] = {}
        for i, job in enumerate(jobs):
            by_rate.setdefault(job[0].rate, []).append(i)
        session = self.session
        stats = self.stats
        for rate, idxs in by_rate.items():
            sr = np.array(rate, dtype=np.int64)
            width = WINDOW[rate] + CONTEXT[rate]
            n = len(idxs)
            steps = max(jobs[i][3] for i in idxs)
            if steps == 1:  # the common case: one window per call
                state = np.stack([jobs[i][4] for i in idxs], axis=1)  # [2, n, 128]
                pcm = b"".join([jobs[i][2] for i in idxs])
                x = np.frombuffer(pcm, np.int16).reshape(n, width) * _SCALE
                t0, c0 = time.perf_counter(), time.thread_time()
                o, st = session.run(None, {"input": x, "state": state, "sr": sr})
                stats.busy_s += time.perf_counter() - t0
                stats.cpu_s += time.thread_time() - c0
                self._count(n)
                probs = o[:, 0].tolist()
                states = list(st.transpose(1, 0, 2))  # one [2, 128] view per row
                for r, i in enumerate(idxs):
                    out[i] = (probs[r : r + 1], states[r])
                continue
            idxs.sort(key=lambda i: -jobs[i][3])  # each step's rows are a prefix
            state = np.stack([jobs[i][4] for i in idxs], axis=1)
            row = 2 * width
            probs_m = np.empty((n, steps), np.float32)
            active = n
            for s in range(steps):
                while active and jobs[idxs[active - 1]][3] <= s:
                    active -= 1
                pcm = b"".join([jobs[idxs[r]][2][s * row : (s + 1) * row] for r in range(active)])
                x = np.frombuffer(pcm, np.int16).reshape(active, width) * _SCALE
                t0, c0 = time.perf_counter(), time.thread_time()
                o, st = session.run(None, {"input": x, "state": state[:, :active], "sr": sr})
                stats.busy_s += time.perf_counter() - t0
                stats.cpu_s += time.thread_time() - c0
                probs_m[:active, s] = o[:, 0]
                state[:, :active] = st
                self._count(active)
            rows = probs_m.tolist()
            for r, i in enumerate(idxs):
                out[i] = (rows[r][: jobs[i][3]], state[:, r].copy())
        self.stats.runs += 1
        return out

    def _count(self, n: int) -> None:
        stats = self.stats
        stats.steps += 1
        stats.windows += n
        if n > stats.max_batch_seen:
            stats.max_batch_seen = n
        if self._keep_sizes:
            stats.batch_sizes.append(n)

    def _deliver(self, jobs: list[_Job], results: list[tuple[list[float], F32Array]]) -> None:
        for (slot, first, _, k, _), (probs, state) in zip(jobs, results, strict=True):
            if slot.closed:
                self.stats.discarded += k
                continue
            slot.state = state
            slot.deliver(first, probs)

    def pump(self, *, once: bool = False) -> int:
        """Run what is waiting now, on this thread, and deliver; returns windows run.

        For replaying calls faster than real time (bench) and for synchronous tests; ``once``
        does a single run, as one tick of the live batcher would. Must not be mixed with a
        loop-driven run in flight.
        """
        if self._in_flight:
            raise RuntimeError("a batch is in flight on the event loop")
        self._gate()
        total = 0
        while self._ready:
            if once and total:
                break
            jobs = self._collect()
            if not jobs:
                break
            self._deliver(jobs, self._run(jobs))
            total += sum(j[3] for j in jobs)
        return total

    # --- waiting (tests, shutdown) ----------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._in_flight or self._timer is not None or bool(self._ready) or self._gated()

    async def drain(self) -> None:
        """Wait until nothing is waiting or in flight (a manual batcher is pumped here)."""
        if self.manual:
            self.pump()
            return
        while self.busy:
            if self._idle is None or self._idle.done():
                self._idle = asyncio.get_running_loop().create_future()
            if not self._in_flight and self._timer is None:
                self._schedule()
            await self._idle

    def _set_idle(self) -> None:
        idle = self._idle
        if idle is not None and not idle.done() and not self.busy:
            idle.set_result(None)


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()
_BATCHERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SileroBatcher] = (
    weakref.WeakKeyDictionary()
)
_STRONG: dict[int, tuple[asyncio.AbstractEventLoop, SileroBatcher]] = {}


def vad_executor() -> ThreadPoolExecutor:
    """The process-wide VAD worker thread (one: runs are serialised anyway)."""
    global _EXECUTOR
    if _EXECUTOR is None:
        with _EXECUTOR_LOCK:
            if _EXECUTOR is None:
                _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="harken-vad")
    return _EXECUTOR


def default_batcher() -> SileroBatcher:
    """The batcher of the running event loop (one loop per worker process in production)."""
    loop = asyncio.get_running_loop()
    try:
        batcher = _BATCHERS.get(loop)
        if batcher is None:
            batcher = _BATCHERS[loop] = SileroBatcher()
    except TypeError:  # a loop that cannot be weakly referenced
        held = _STRONG.get(id(loop))
        if held is None or held[0] is not loop:
            held = _STRONG[id(loop)] = (loop, SileroBatcher())
        batcher = held[1]
    return batcher
