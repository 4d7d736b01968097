"""``harken bench echo``: carrier-shaped load on the real server, against pipecat.

Each level starts a fresh server (pinned to the server core), opens N Twilio Media Streams calls
at ``--ramp-rate`` per second from the lean load generator (:mod:`harken.bench.loadgen`, pinned
to the other core), lets them run ``--warmup`` seconds, measures ``--duration`` seconds, and hangs
up. Scenarios:

* ``echo``: the server plays the caller's audio back (transport + codec + pipeline);
* ``vad``: the same with VAD and turn detection on every call; at each detected turn end the
  agent answers with a pre-synthesised reply in place of the echo (harken's ``bench_vad``
  agent; pipecat with ``VADProcessor(SileroVADAnalyzer())``). Reply latency is measured from
  the end of each caller utterance to the first reply audio received.

Per level: calls connected/failed, throughput (echoed audio bytes / expected), round trip per
echoed chunk by byte-count matching (p50/p90/p99/p99.9/max), late sends, server CPU % (of one
core) and RSS of the whole server process tree, RSS per call, and the generator's own CPU.
``--sweep`` escalates N (``--sweep-start`` x ``--sweep-factor``...) and, as with a ``--calls``
list, a system's run stops after the first level where it broke: a failed call, throughput <
``--stop-throughput`` %, p99 > ``--stop-p99-ms``, or the generator behind schedule
(``--keep-going`` runs every listed level anyway).
An idle phase first measures RSS per idle call (calls started, no media) as a slope.

``--baseline pipecat`` runs every level against pipecat 1.14 too, with the same load and pinning.
``--report`` writes the tables and charts into docs/performance.md and docs/img/.
One command reproduces the published figures::

    harken bench echo --scenario echo,vad --baseline pipecat --report --json .bench/echo.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from harken.bench import _report
from harken.bench._measure import summarize
from harken.bench._proc import (
    InstructionCounter,
    cpu_percent,
    load_average,
    pin_self,
    sample_self,
    sample_tree,
    self_cpu_percent,
    self_split_percent,
    set_realtime,
    steal_percent,
    steal_ticks,
    usable_cores,
)
from harken.bench._servers import Server
from harken.bench._servers import start as start_server
from harken.bench.callers import echo_script, vad_script
from harken.bench.loadgen import CallerScript, LoadGen, Totals
from harken.server.worker import loop_factory

SCENARIOS = ("echo", "vad")
GENERATOR_SATURATED_PCT = 85.0  # generator CPU (of its core) at which it counts as saturated
GENERATOR_LATE_PCT = 1.0  # ... or this share of its media sends late

Record = dict[str, Any]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("--scenario", default="echo", help="echo, vad, or both: echo,vad (echo)")
    p.add_argument(
        "--calls", default="50,100,200,400,500", help="comma-separated levels (50,100,200,400,500)"
    )
    p.add_argument("--sweep", action="store_true", help="escalate calls until a stop condition")
    p.add_argument(
        "--keep-going",
        action="store_true",
        help="run every listed level even after a system broke (default: stop that system)",
    )
    p.add_argument("--sweep-start", type=int, default=50, help="first sweep level (50)")
    p.add_argument("--sweep-factor", type=float, default=1.25, help="level growth (1.25)")
    p.add_argument("--sweep-max", type=int, default=2000, help="last sweep level (2000)")
    p.add_argument("--stop-throughput", type=float, default=99.0, help="sweep stop: %% (99)")
    p.add_argument("--stop-p99-ms", type=float, default=50.0, help="sweep stop: RTT p99 (50 ms)")
    p.add_argument("--goal-p99-ms", type=float, default=20.0, help="'holds' p99 bound (20 ms)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per level (20)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds after the ramp, unmeasured")
    p.add_argument("--ramp-rate", type=float, default=100.0, help="calls opened per second (100)")
    p.add_argument("--grace", type=float, default=1.0, help="seconds to collect late echoes (1)")
    p.add_argument("--late-ms", type=float, default=5.0, help="a send this late counts (5 ms)")
    p.add_argument(
        "--baseline", choices=("none", "pipecat"), default="none", help="also run pipecat 1.14"
    )
    p.add_argument("--systems", default="", help="override: comma list of harken,pipecat")
    p.add_argument("--idle-calls", type=int, default=300, help="idle calls for RSS (0: skip)")
    p.add_argument("--server-core", type=int, default=0, help="CPU the server is pinned to (0)")
    p.add_argument("--loadgen-core", type=int, default=1, help="CPU of the load generator (1)")
    p.add_argument("--no-pin", action="store_true", help="do not pin server or generator")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="run server and generator under SCHED_FIFO (root): other processes on the machine"
        " cannot preempt them on their cores",
    )
    p.add_argument("--bench-dir", default=".bench", help="venvs, caches, logs (.bench)")
    p.add_argument("--report", action="store_true", help="update docs/performance.md + docs/img")
    p.add_argument("--docs-dir", default="docs", help="where --report writes (docs)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--from-json",
        metavar="FILE",
        help="measure nothing: re-render the report (and --report docs) from saved --json files"
        " (comma-separated: merged)",
    )


# --------------------------------------------------------------------------------------------
# progress


class Progress:
    """One status line on stderr, redrawn in place on a terminal, else a line per phase."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.label = ""
        self._last_phase = ""
        self._last = 0.0

    def show(self, phase: str, frac: float, tot: Totals, extra: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.tty and now - self._last < 0.2 and frac < 1.0:
            return
        if not self.tty and phase == self._last_phase:
            return
        self._last, self._last_phase = now, phase
        width = 24
        full = min(width, int(frac * width))
        bar = "#" * full + "-" * (width - full)
        live = tot.connected - tot.dropped
        line = (
            f"{self.label} {phase:<8} [{bar}] {100 * frac:5.1f}%  calls {live}"
            f" failed {tot.connect_failed + tot.dropped} late {tot.late_sends} {extra}"
        )
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + line)
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def done(self, text: str) -> None:
        if not self.enabled:
            return
        sys.stderr.write(("\r\x1b[2K" if self.tty else "") + text + "\n")
        sys.stderr.flush()


async def _wait(seconds: float, phase: str, tot: Totals, progress: Progress) -> None:
    t0 = time.monotonic()
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        extra = ""
        if tot.rtts and phase == "measure":
            recent = tot.rtts[-2000:]
            extra = f"rtt p99~{sorted(recent)[int(len(recent) * 0.99)] * 1000:.1f} ms"
        progress.show(phase, (now - t0) / seconds if seconds else 1.0, tot, extra)
        await asyncio.sleep(min(0.25, end - now))
    progress.show(phase, 1.0, tot)


# --------------------------------------------------------------------------------------------
# one level


async def _primer(url: str, script: CallerScript, timeout: float = 20.0) -> None:
    """One call first, so one-time lazy costs (imports, model sessions: the VAD on the first
    audio, the turn model on the first turn) are paid before the idle RSS reading. With a
    ``vad`` script the call lasts until the first reply came back (or ``timeout``)."""
    gen = LoadGen(url, script)
    await gen.ramp(1, 10.0)
    await asyncio.sleep(1.0)
    deadline = time.monotonic() + timeout
    while script.reply and gen.totals.replies == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    await gen.hang_up_all()
    await asyncio.sleep(0.3)


async def run_level(
    url: str,
    pid: int,
    script: CallerScript,
    calls: int,
    args: argparse.Namespace,
    progress: Progress,
) -> Record:
    """One level against the server at ``url`` whose process tree is ``pid``."""
    await _primer(url, script)
    idle = sample_tree(pid)
    load0 = load_average()
    # Counters are switched on before any call: that freezes this VM's CPUs for ~150 ms, and
    # with calls live the server would then drop the stale audio of the burst that follows,
    # which byte-count matching cannot see in a non-verbatim echo (vad: every later round trip
    # read ~160 ms too long).
    server_instr, own_instr = InstructionCounter(pid), InstructionCounter(os.getpid(), tree=False)
    gen = LoadGen(url, script, late_s=args.late_ms / 1000)
    tot = gen.totals
    await gen.ramp(calls, args.ramp_rate, progress=progress.show)
    gc.collect()  # in the warm-up: no full collection in the window
    await _wait(args.warmup, "warm-up", tot, progress)
    server_instr.start()
    own_instr.start()
    a, sa, steal_a = sample_tree(pid), sample_self(), steal_ticks()
    tot.w0 = time.monotonic()
    tot.w1 = tot.w0 + args.duration
    await _wait(args.duration, "measure", tot, progress)
    b, sb, steal_b = sample_tree(pid), sample_self(), steal_ticks()
    server_ins, own_ins = server_instr.stop(), own_instr.stop()
    live = gen.live
    await _wait(args.grace, "grace", tot, progress)
    await gen.hang_up_all()
    load1 = load_average()
    expected = tot.window_frames * 160
    rec: Record = {
        "scenario": args.scenario_now,
        "calls": calls,
        "connected": tot.connected,
        "failed": tot.connect_failed + (tot.connected - live),
        "dropped": tot.dropped,
        "throughput_pct": round(100.0 * tot.echoed_bytes / expected, 2) if expected else 0.0,
        "frames_sent": tot.window_frames,
        "rtt_samples": len(tot.rtts),
    }
    rec.update(summarize(tot.rtts, "rtt"))
    rec.update(
        {
            "late_sends": tot.late_sends,
            "late_pct": round(100.0 * tot.late_sends / tot.window_frames, 3)
            if tot.window_frames
            else 0.0,
            "max_late_ms": round(tot.max_late_s * 1000, 2),
            "server_cpu_pct": round(cpu_percent(a, b), 1),
            "server_rss_kb": b.rss_kb,
            "server_idle_rss_kb": idle.rss_kb,
            "rss_kb_per_call": round((b.rss_kb - idle.rss_kb) / live, 1) if live else None,
            "server_processes": b.processes,
            "loadgen_cpu_pct": round(self_cpu_percent(sa, sb), 1),
            "loadgen_user_pct": round(self_split_percent(sa, sb)[0], 1),
            "loadgen_sys_pct": round(self_split_percent(sa, sb)[1], 1),
            "marks_echoed": tot.marks_echoed,
            "clears": tot.clears,
            "bad_messages": tot.bad_messages,
            "unmatched_bytes": tot.unmatched_bytes,
            "server_dropped_frames": tot.skipped_frames,
            "load_avg_start": round(load0[0], 2),
            "load_avg_end": round(load1[0], 2),
            "steal_pct": round(steal_percent(steal_a, steal_b), 1),
            # instructions per media frame sent in the window (its echo and the marks included);
            # None without perf. Immune to the machine's load, unlike the CPU figures.
            "server_kinstr_per_frame_user": _per_frame(server_ins[0], tot.window_frames),
            "server_kinstr_per_frame_kernel": _per_frame(server_ins[1], tot.window_frames),
            "loadgen_kinstr_per_frame_user": _per_frame(own_ins[0], tot.window_frames),
            "loadgen_kinstr_per_frame_kernel": _per_frame(own_ins[1], tot.window_frames),
            "duration_s": args.duration,
            "warmup_s": args.warmup,
        }
    )
    # the generator could not keep the carrier's schedule: out of CPU, or starved of it by other
    # processes on its core (late sends are the generator's own failure, never the server's)
    rec["loadgen_saturated"] = bool(
        rec["loadgen_cpu_pct"] >= GENERATOR_SATURATED_PCT or rec["late_pct"] > GENERATOR_LATE_PCT
    )
    if args.scenario_now == "vad":
        rec["turns"] = tot.turns
        rec["replied_turns"] = tot.replied_turns
        rec["early_replies"] = tot.early_replies
        rec["extra_replies"] = tot.extra_replies
        rec["replies"] = tot.replies
        rec["reply_samples"] = len(tot.reply_latencies)
        rec.update(summarize(tot.reply_latencies, "reply"))
    rec["holds"] = bool(
        rec["failed"] == 0
        and rec["throughput_pct"] >= args.stop_throughput
        and rec["rtt_p99_ms"] is not None
        and rec["rtt_p99_ms"] <= args.goal_p99_ms
        and not rec["loadgen_saturated"]
    )
    return rec


def _run(main: Coroutine[Any, Any, Record]) -> Record:
    """Run one level's generator on uvloop where installed, as the server does: less dispatch
    cost per socket event (at 400 calls the generator's user instructions per frame fell from
    ~51k to ~38k, its CPU by ~5 points of its core)."""
    with asyncio.Runner(loop_factory=loop_factory("auto")) as runner:
        return runner.run(main)


def _per_frame(count: int | None, frames: int) -> float | None:
    return round(count / frames / 1000, 1) if count is not None and frames else None


async def run_idle(
    url: str, pid: int, script: CallerScript, calls: int, rate: float, settle: float = 1.5
) -> Record:
    """RSS per idle call as a slope: a third of the calls, then all of them (started, no media)."""
    await _primer(url, script)
    gen = LoadGen(url, script)
    first = max(1, calls // 3)
    await gen.ramp(first, rate, media=False)
    await asyncio.sleep(settle)
    gc.collect()
    a = sample_tree(pid)
    n_a = gen.live
    gen2 = LoadGen(url, script)
    await gen2.ramp(calls - first, rate, media=False)
    await asyncio.sleep(settle)
    b = sample_tree(pid)
    n_b = n_a + gen2.live
    await asyncio.sleep(settle / 2)
    c = sample_tree(pid)
    await gen.hang_up_all()
    await gen2.hang_up_all()
    per_call = (b.rss_kb - a.rss_kb) / (n_b - n_a) if n_b > n_a else None
    return {
        "idle_calls": n_b,
        "idle_failed": calls - n_b,
        "idle_rss_kb_per_call": round(per_call, 1) if per_call is not None else None,
        "idle_server_rss_kb": b.rss_kb,
        "idle_server_cpu_pct": round(cpu_percent(b, c), 1),
    }


# --------------------------------------------------------------------------------------------
# the run


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Several saved runs as one (e.g. harken with ``--keep-going`` and the baseline without):
    records, idle phases, systems and scenarios joined; the rest from the first run."""
    merged = dict(results[0])
    for key in ("records", "idle"):
        merged[key] = [item for r in results for item in r.get(key, [])]
    for key in ("systems", "scenarios"):
        merged[key] = list(dict.fromkeys(x for r in results for x in r.get(key, [])))
    if len(results) > 1:
        merged["command"] = " + ".join(str(r.get("command", "")).strip() for r in results)
        merged["started"] = min(str(r.get("started", "")) for r in results)
    return merged


def _levels(args: argparse.Namespace) -> list[int]:
    if args.sweep:
        out: list[int] = []
        n = float(args.sweep_start)
        while round(n) <= args.sweep_max:
            level = round(n / 5) * 5 if n >= 20 else round(n)
            if not out or level > out[-1]:
                out.append(level)
            n *= args.sweep_factor
        return out
    return [int(x) for x in str(args.calls).split(",") if x.strip()]


def _stop(rec: Record, args: argparse.Namespace) -> bool:
    p99 = rec["rtt_p99_ms"]
    return bool(
        rec["throughput_pct"] < args.stop_throughput
        or p99 is None
        or p99 > args.stop_p99_ms
        or rec["failed"] > 0
        or rec["loadgen_saturated"]  # past here the generator, not the server, is measured
    )


def _pinning(args: argparse.Namespace) -> tuple[int | None, int | None, str]:
    cores = usable_cores()
    if args.no_pin:
        return None, None, "not pinned (--no-pin)"
    if args.server_core not in cores or args.loadgen_core not in cores:
        return (
            None,
            None,
            f"not pinned: cores {args.server_core}/{args.loadgen_core} not in {cores}",
        )
    if args.server_core == args.loadgen_core:
        return None, None, "not pinned: server and generator on the same core"
    return (
        args.server_core,
        args.loadgen_core,
        (f"server on core {args.server_core}, load generator on core {args.loadgen_core}"),
    )


def _scripts(scenarios: list[str], bench_dir: Path) -> tuple[dict[str, CallerScript], Path | None]:
    scripts: dict[str, CallerScript] = {}
    reply: Path | None = None
    for scenario in scenarios:
        if scenario == "echo":
            scripts["echo"] = echo_script()
        else:
            scripts["vad"], reply = vad_script(bench_dir)
    return scripts, reply


def run(args: argparse.Namespace) -> dict[str, object]:
    if args.from_json:
        saved = merge_results(
            [json.loads(Path(f).read_text()) for f in str(args.from_json).split(",") if f]
        )
        if args.report:
            written = _report.write_docs(saved, Path(args.docs_dir))
            saved["report_files"] = [str(p) for p in written]
        return saved
    scenarios = [s.strip() for s in str(args.scenario).split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}; choose from {SCENARIOS}")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()] or (
        ["harken", "pipecat"] if args.baseline == "pipecat" else ["harken"]
    )
    bench_dir = Path(args.bench_dir).resolve()
    bench_dir.mkdir(parents=True, exist_ok=True)
    cpu_count = len(usable_cores())
    server_core, gen_core, pinning = _pinning(args)
    if gen_core is not None:
        pin_self({gen_core})
    if args.realtime:
        if set_realtime():
            pinning += "; both under SCHED_FIFO (other processes cannot preempt them)"
        else:
            pinning += "; --realtime refused (needs root or CAP_SYS_NICE): normal scheduling"
            args.realtime = False
    scripts, reply = _scripts(scenarios, bench_dir)
    levels = _levels(args)
    progress = Progress(not args.quiet)
    records: list[Record] = []
    idle: list[Record] = []
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_start = load_average()
    for scenario in scenarios:
        args.scenario_now = scenario
        if args.idle_calls > 0:
            for system in systems:
                idle.append(
                    _idle_phase(
                        system, scenario, args, bench_dir, server_core, scripts, reply, progress
                    )
                )
        # levels outside, systems inside: both systems see the machine at nearly the same time
        running = list(systems)
        for calls in levels:
            for system in list(running):
                tag = f"{system}-{scenario}"
                progress.label = f"[{tag} {calls} calls]"
                server = _start(system, scenario, args, bench_dir, server_core, reply, tag, calls)
                try:
                    rec = _run(
                        run_level(
                            server.ws_url, server.pid, scripts[scenario], calls, args, progress
                        )
                    )
                finally:
                    code = server.stop()
                rec = {"system": system, **rec, "server_exit": code}
                records.append(rec)
                progress.done(f"{progress.label} " + _report.level_line(rec))
                if not args.keep_going and _stop(rec, args):
                    running.remove(system)  # it broke (or the generator fell behind): done
    result: dict[str, object] = {
        "bench": "echo",
        "started": started,
        "scenarios": scenarios,
        "systems": systems,
        "pinning": pinning,
        "cpu_count": cpu_count,
        "load_avg_start": [round(x, 2) for x in load_start],
        "load_avg_end": [round(x, 2) for x in load_average()],
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "ramp_rate": args.ramp_rate,
            "late_ms": args.late_ms,
            "goal_p99_ms": args.goal_p99_ms,
            "realtime": bool(getattr(args, "realtime", False)),
            "sweep": bool(args.sweep),
            "levels": levels,
        },
        "records": records,
        "idle": idle,
        "command": "harken bench echo " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else []),
    }
    if args.report:
        written = _report.write_docs(result, Path(args.docs_dir))
        result["report_files"] = [str(p) for p in written]
    return result


def _idle_phase(
    system: str,
    scenario: str,
    args: argparse.Namespace,
    bench_dir: Path,
    core: int | None,
    scripts: dict[str, CallerScript],
    reply: Path | None,
    progress: Progress,
) -> Record:
    tag = f"{system}-{scenario}"
    progress.label = f"[{tag} idle {args.idle_calls}]"
    server = _start(system, scenario, args, bench_dir, core, reply, tag, 0)
    try:
        rec = _run(
            run_idle(server.ws_url, server.pid, scripts[scenario], args.idle_calls, args.ramp_rate)
        )
    finally:
        server.stop()
    progress.done(f"{progress.label} {rec['idle_rss_kb_per_call']} KB RSS per idle call")
    return {"system": system, "scenario": scenario, **rec}


def _start(
    system: str,
    scenario: str,
    args: argparse.Namespace,
    bench_dir: Path,
    core: int | None,
    reply: Path | None,
    tag: str,
    calls: int,
) -> Server:
    max_calls = max(500, math.ceil(max(calls, args.idle_calls) * 1.2) + 10)
    return start_server(
        system,
        bench_dir,
        scenario=scenario,
        max_calls=max_calls,
        core=core,
        reply_pcm=reply,
        tag=f"{tag}-{calls}",
        realtime=bool(getattr(args, "realtime", False)),
    )


def report(result: dict[str, object]) -> str:
    return _report.markdown(result)
