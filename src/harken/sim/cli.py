"""``harken call``: simulated callers against a running harken, measured at the seams.

Dial a server (``--url ws://host:port/stream/twilio``) or start one (``--spawn``: ``harken
serve`` on free ports with the embedded default), play scenarios, print a markdown report.
``--concurrency 1,2,4`` runs each level in turn with that many calls at once (load mode);
``--json`` prints the figures as JSON (``--json FILE`` writes them and prints the report);
``--report FILE`` and ``--charts DIR`` keep the markdown and the PNG charts.

Before the measured calls, one warm-up call hears the greeting and hangs up (the first call of
a fresh process pays for lazy allocations); ``--no-warmup`` skips it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from harken.errors import HarkenError

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_mutually_exclusive_group()
    target.add_argument(
        "--url", help="the server's Twilio media stream, ws://HOST:PORT/stream/twilio"
    )
    target.add_argument(
        "--spawn", action="store_true", help="start `harken serve` (embedded default) on free ports"
    )
    parser.add_argument("--server-config", metavar="FILE", help="with --spawn: the server's config")
    parser.add_argument(
        "--records-db", metavar="PATH", help="the server's call-record SQLite file (with --url)"
    )
    parser.add_argument("--suite", default=None, help="default (every shipped scenario) or a tag")
    parser.add_argument(
        "--scenario",
        "-s",
        action="append",
        default=[],
        metavar="NAME|FILE",
        help="a shipped scenario's name or a YAML file (repeatable)",
    )
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument(
        "--concurrency",
        "-n",
        default="1",
        metavar="N[,N...]",
        help="calls at once; a list runs each level in turn (load mode)",
    )
    parser.add_argument(
        "--calls",
        type=int,
        default=None,
        help="calls per level (default: the scenarios once, at least N); scenarios repeat in turn",
    )
    parser.add_argument("--no-stt", action="store_true", help="skip Whisper checks of agent speech")
    parser.add_argument("--no-warmup", action="store_true", help="no warm-up call")
    parser.add_argument(
        "--json",
        nargs="?",
        const=True,
        default=False,
        metavar="FILE",
        help="print the figures as JSON; with FILE, write them there and print the report",
    )
    parser.add_argument("--report", metavar="FILE", help="also write the markdown report here")
    parser.add_argument("--charts", metavar="DIR", help="write PNG charts (quality-*.png) here")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def _levels(text: str) -> list[int]:
    try:
        levels = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise HarkenError(f"--concurrency: expected N or N,N,... (N >= 1), got {text!r}")
    return levels


def _select(args: argparse.Namespace) -> list[Any]:
    from harken.sim.script import builtin_scenarios, load_scenario

    shipped = builtin_scenarios()
    by_name = {s.name: s for s in shipped}
    chosen = []
    for ref in args.scenario:
        if ref in by_name:
            chosen.append(by_name[ref])
        elif Path(ref).is_file():
            chosen.append(load_scenario(Path(ref)))
        else:
            raise HarkenError(f"no scenario {ref!r}; shipped: {', '.join(by_name)}")
    if args.suite or not chosen:
        suite = args.suite or "default"
        picked = [s for s in shipped if suite == "default" or suite in s.tags]
        if not picked:
            raise HarkenError(f"no scenario in suite {suite!r}")
        chosen += picked
    return chosen


def run(args: argparse.Namespace) -> int:
    """Entry point of ``harken call``; returns the exit status: 0 when every call ran (failed
    checks are reported, not fatal), 1 when a call could not be made, 2 for a usage error."""
    try:
        if args.list:
            from harken.sim.script import builtin_scenarios

            for s in builtin_scenarios():
                sys.stdout.write(f"{s.name:<28} [{','.join(s.tags)}] {s.description}\n")
            return 0
        if not (args.url or args.spawn):
            raise HarkenError("give --url ws://HOST:PORT/stream/twilio or --spawn")
        result, report = asyncio.run(_main(args, _select(args), _levels(args.concurrency)))
    except HarkenError as exc:
        sys.stderr.write(f"harken call: {exc}\n")
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.stderr.write("harken call: interrupted\n")
        return 130
    if args.report:
        Path(args.report).write_text(report + "\n")
    if isinstance(args.json, str):
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.write(report + "\n")
    elif args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        sys.stdout.write(report + "\n")
    return 1 if any(lv["summary"]["errors"] for lv in result["levels"]) else 0


async def _main(
    args: argparse.Namespace, scenarios: list[Any], levels: list[int]
) -> tuple[dict[str, Any], str]:
    from harken.sim import report as rep
    from harken.sim import voices
    from harken.sim.listen import VOICED_DBFS
    from harken.sim.measure import BURST_GAP_S, DEAD_AIR_S
    from harken.sim.runner import CallResult, finish, run_call
    from harken.sim.server import SpawnedServer, environment
    from harken.sim.transcribe import Transcriber
    from harken.speech.tts.piper import piper_available

    def log(msg: str) -> None:
        if not args.quiet:
            sys.stderr.write(f"harken call: {msg}\n")
            sys.stderr.flush()

    started = time.strftime("%Y-%m-%d %H:%M:%S")
    task = asyncio.current_task()
    if task is not None:  # SIGTERM ends the run like Ctrl-C: a spawned server is stopped too
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    texts = sorted({t for s in scenarios for t in s.texts()})
    log(f"synthesising {len(texts)} caller phrases...")
    await asyncio.to_thread(voices.prepare, texts)
    server = None
    db: Path | None
    if args.spawn:
        log("starting harken serve...")
        server = await asyncio.to_thread(SpawnedServer.start, config=args.server_config)
        url, db = server.url, server.records_db
        log(f"server ready at {url} (pid {server.proc.pid})")
    else:
        url, db = args.url, (Path(args.records_db) if args.records_db else None)
    stt = None if args.no_stt else Transcriber()
    out_levels: list[dict[str, Any]] = []
    all_calls: list[list[CallResult]] = []
    try:
        if not args.no_warmup:
            from harken.sim.script import Scenario, WaitAgent

            warm = Scenario("warm-up", (WaitAgent(),), timeout_s=30)
            await run_call(warm, url)
        for n in levels:
            env0 = environment()
            total = args.calls or max(len(scenarios), n)
            queue = [scenarios[i % len(scenarios)] for i in range(total)]
            log(f"concurrency {n}: {total} calls (load average {env0['loadavg'][0]})")
            calls = await _run_level(queue, url, n, log)
            for call in calls:
                await finish(call, stt=stt, records_db=db)
                log(f"  {call.scenario}: {call.status} {'; '.join(call.failures[:3])}")
            env1 = environment()
            out_levels.append(
                {
                    "concurrency": n,
                    "loadavg_start": env0["loadavg"],
                    "loadavg_end": env1["loadavg"],
                    "summary": rep.summarise(calls),
                    "calls": [rep.call_json(c) for c in calls],
                }
            )
            all_calls.append(calls)
    finally:
        if server is not None:
            await asyncio.to_thread(server.stop)
    text = rep.markdown(out_levels, all_calls)
    if args.charts:
        for path in rep.charts(out_levels, all_calls, Path(args.charts)):
            log(f"wrote {path}")
    result: dict[str, Any] = {
        "tool": "harken call",
        "suite": args.suite or ("default" if not args.scenario else "custom"),
        "scenarios": [s.name for s in scenarios],
        "server": {"url": url, "spawned": bool(args.spawn), "records": db is not None},
        "environment": {"cpus": os.cpu_count(), "started": started},
        "caller_voice": "piper" if piper_available() else "espeak-ng",
        "thresholds": {
            "voiced_dbfs": VOICED_DBFS,
            "burst_gap_s": BURST_GAP_S,
            "dead_air_s": DEAD_AIR_S,
        },
        "goals": rep.GOALS,
        **out_levels[0]["summary"],
        "concurrency": out_levels[0]["concurrency"],
        "levels": out_levels,
    }
    return result, text


async def _run_level(queue: list[Any], url: str, n: int, log: Any) -> list[Any]:
    """``queue``'s scenarios, ``n`` calls at a time (starts staggered by 0.7 s)."""
    from harken.sim.runner import run_call

    results: list[Any] = [None] * len(queue)
    todo = list(enumerate(queue))

    async def worker(k: int) -> None:
        await asyncio.sleep(0.7 * k)
        while todo:
            i, scenario = todo.pop(0)
            results[i] = await run_call(scenario, url, concurrency=n)
            r = results[i]
            log(f"  [{i + 1}/{len(queue)}] {scenario.name}: {r.duration_s:.0f} s")

    await asyncio.gather(*(worker(k) for k in range(min(n, len(queue)))))
    return results
