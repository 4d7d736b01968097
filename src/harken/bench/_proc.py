"""CPU time and memory of a process tree, from /proc (Linux), and CPU pinning.

The server under test is measured as a *tree*: the process and every descendant (a supervisor's
workers, a baseline's uvicorn worker), found through ``/proc/PID/task/*/children`` recursively.
CPU is user + system time from ``/proc/PID/stat`` (clock ticks); memory is resident set size
from ``/proc/PID/status`` (``VmRSS``). The load generator measures itself with
:func:`time.process_time` and :func:`resource.getrusage`.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import resource
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PROC = Path("/proc")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and all its live descendants (depth first)."""
    out: list[int] = []
    stack = [pid]
    while stack:
        p = stack.pop()
        task_dir = _PROC / str(p) / "task"
        try:
            tids = os.listdir(task_dir)
        except OSError:
            continue  # gone
        out.append(p)
        for tid in tids:
            try:
                text = (task_dir / tid / "children").read_text()
            except OSError:
                continue
            stack.extend(int(c) for c in text.split())
    return out


def _cpu_ticks(pid: int) -> int:
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def _rss_kb(pid: int) -> int:
    try:
        with open(_PROC / str(pid) / "status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass(frozen=True, slots=True)
class TreeSample:
    """One reading of a process tree: wall time, CPU seconds of all its processes, RSS."""

    wall: float
    cpu_s: float
    rss_kb: int
    processes: int


def sample_tree(pid: int) -> TreeSample:
    pids = tree_pids(pid)
    ticks = sum(_cpu_ticks(p) for p in pids)
    rss = sum(_rss_kb(p) for p in pids)
    return TreeSample(time.monotonic(), ticks / _TICK, rss, len(pids))


def cpu_percent(a: TreeSample, b: TreeSample) -> float:
    """CPU use between two samples, in percent of one core."""
    wall = b.wall - a.wall
    return 100.0 * (b.cpu_s - a.cpu_s) / wall if wall > 0 else 0.0


@dataclass(frozen=True, slots=True)
class SelfSample:
    wall: float
    cpu_s: float
    user_s: float
    sys_s: float
    max_rss_kb: int


def sample_self() -> SelfSample:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return SelfSample(time.monotonic(), time.process_time(), ru.ru_utime, ru.ru_stime, ru.ru_maxrss)


def self_cpu_percent(a: SelfSample, b: SelfSample) -> float:
    wall = b.wall - a.wall
    return 100.0 * (b.cpu_s - a.cpu_s) / wall if wall > 0 else 0.0


def self_split_percent(a: SelfSample, b: SelfSample) -> tuple[float, float]:
    """(user, system) CPU between two samples, percent of one core."""
    wall = b.wall - a.wall
    if wall <= 0:
        return 0.0, 0.0
    return 100.0 * (b.user_s - a.user_s) / wall, 100.0 * (b.sys_s - a.sys_s) / wall


def wait_healthy(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float, poll_s: float = 0.2
) -> str | None:
    """Poll ``url`` until it answers 200 (None), or say why not: ``proc`` exited first, or
    ``timeout_s`` passed. The bench and the caller simulator wait for their servers so."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} before it was ready"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return None
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(poll_s)
    return f"not ready after {timeout_s:g} s ({url})"


def load_average() -> tuple[float, float, float]:
    try:
        return os.getloadavg()
    except OSError:  # pragma: no cover - not on Linux
        return (0.0, 0.0, 0.0)


def usable_cores() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin_self(cores: set[int]) -> None:
    """Pin this process (all its threads created later) to ``cores``; no-op if unavailable."""
    with contextlib.suppress(OSError, AttributeError):  # not on Linux / no such core
        os.sched_setaffinity(0, cores)


#: SCHED_FIFO priority for ``--realtime``: the lowest real-time one, above every normal process.
REALTIME_PRIORITY = 1


def set_realtime(priority: int = REALTIME_PRIORITY) -> bool:
    """Run this process (threads it creates later inherit it) under SCHED_FIFO, so that other
    processes on its core cannot preempt it; False if not permitted (needs root or
    CAP_SYS_NICE). Linux keeps 5% of each core for normal processes
    (``kernel.sched_rt_runtime_us``), so a runaway benchmark cannot lock a machine up."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError):
        return False
    return True


def is_realtime(pid: int = 0) -> bool:
    try:
        return os.sched_getscheduler(pid) == os.SCHED_FIFO
    except (OSError, AttributeError):
        return False


def pin_preexec(cores: set[int] | None, realtime: bool = False) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` pinning the child to ``cores`` (and, with
    ``realtime``, running it under SCHED_FIFO when permitted)."""
    if not cores and not realtime:
        return None

    def pin() -> None:
        if cores:
            os.sched_setaffinity(0, cores)
        if realtime:
            set_realtime()

    return pin


def steal_ticks() -> tuple[int, int]:
    """(all CPU ticks, ticks stolen by the hypervisor) of the machine, from ``/proc/stat``.

    Steal is the time a virtual machine's CPUs were ready but the host ran something else: load
    that no process list shows, and that makes every instruction slower on a shared host."""
    try:
        with open(_PROC / "stat") as f:
            fields = f.readline().split()[1:]
    except OSError:
        return 0, 0
    ticks = [int(x) for x in fields[:8]]
    return sum(ticks), ticks[7] if len(ticks) > 7 else 0


def steal_percent(a: tuple[int, int], b: tuple[int, int]) -> float:
    total = b[0] - a[0]
    return 100.0 * (b[1] - a[1]) / total if total > 0 else 0.0


class InstructionCounter:
    """Instructions a process tree retires during a window, in user and kernel mode, from the
    kernel's hardware counters (``perf_event_open``, one pair per thread). Unlike CPU time they
    do not depend on what else runs on the machine (other processes, a busy host slowing every
    instruction), so they compare two versions of a server measured at different times.
    ``tree``: the process and its descendants (a server); else the process alone (the
    generator, whose children are the servers). Counts None where the counters cannot be
    opened (not Linux, no permission, no PMU).

    Open the counter before the load starts and read it at :meth:`start` and :meth:`stop`: on
    this virtual machine, switching a counter on (``perf stat`` attaching, or enabling its
    events) freezes the CPUs for ~150 ms, which inside the window made every call's media late,
    then sent in a burst. The counters run from their opening; only the two reads fall in the
    window (threads started after the opening are not counted, as with ``perf stat -p``)."""

    def __init__(self, pid: int, tree: bool = True) -> None:
        self._fds: list[tuple[int, int]] = []  # (user, kernel) per thread
        self._base: tuple[int, int] | None = None
        for p in tree_pids(pid) if tree else [pid]:
            try:
                tids = [int(t) for t in os.listdir(_PROC / str(p) / "task")]
            except OSError:
                continue
            for tid in tids:
                user, kernel = _open_counter(tid, user=True), _open_counter(tid, user=False)
                if user >= 0 and kernel >= 0:
                    self._fds.append((user, kernel))
                else:
                    for fd in (user, kernel):
                        if fd >= 0:
                            os.close(fd)

    def _read(self) -> tuple[int, int] | None:
        if not self._fds:
            return None
        user = kernel = 0
        try:
            for u, k in self._fds:
                user += int.from_bytes(os.read(u, 8), "little")
                kernel += int.from_bytes(os.read(k, 8), "little")
        except OSError:
            return None
        return user, kernel

    def start(self) -> None:
        """The window opens."""
        self._base = self._read()

    def stop(self) -> tuple[int | None, int | None]:
        """(user, kernel) instructions since :meth:`start`; closes the counters."""
        end, base = self._read(), self._base
        for pair in self._fds:
            for fd in pair:
                os.close(fd)
        self._fds = []
        if end is None or base is None:
            return None, None
        return end[0] - base[0], end[1] - base[1]


_PERF_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}


@functools.cache
def _perf_event_open() -> Callable[..., int] | None:
    """libc's ``syscall`` bound to ``perf_event_open``'s number here; None where unknown."""
    nr = _SYS_PERF_EVENT_OPEN.get(os.uname().machine)
    if nr is None:
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except OSError:
        return None
    return functools.partial(syscall, nr)


def _open_counter(tid: int, *, user: bool) -> int:
    """A running instructions counter of thread ``tid`` (user or kernel mode); -1 if refused."""
    perf_event_open = _perf_event_open()
    if perf_event_open is None:
        return -1
    attr = bytearray(_PERF_ATTR_SIZE)
    # type PERF_TYPE_HARDWARE (0), size, config PERF_COUNT_HW_INSTRUCTIONS (1)
    struct.pack_into("<IIQ", attr, 0, 0, _PERF_ATTR_SIZE, 1)
    # flags: exclude_kernel (bit 5) or exclude_user (bit 4), and exclude_hv (bit 6)
    struct.pack_into("<Q", attr, 40, (1 << 5 if user else 1 << 4) | 1 << 6)
    buf = (ctypes.c_char * _PERF_ATTR_SIZE).from_buffer(attr)
    return int(perf_event_open(buf, tid, -1, -1, 0))
