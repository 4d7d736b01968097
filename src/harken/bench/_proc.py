"""CPU time and memory of a process tree, from /proc (Linux), and CPU pinning.

The server under test is measured as a *tree*: the process and every descendant (a supervisor's
workers, a baseline's uvicorn worker), found through ``/proc/PID/task/*/children`` recursively.
CPU is user + system time from ``/proc/PID/stat`` (clock ticks); memory is resident set size
from ``/proc/PID/status`` (``VmRSS``). The load generator measures itself with
:func:`time.process_time` and :func:`resource.getrusage`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
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


def pin_preexec(cores: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen` pinning the child to ``cores``."""
    if not cores:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cores)

    return pin
