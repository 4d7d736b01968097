"""The ``harken`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import orjson

from harken import __version__
from harken.bench import BENCHES


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in BENCHES.items())
    bench = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Run one of harken's benchmarks. Numbers are recorded in "
        "docs/performance.md. `harken bench NAME --help` shows a bench's options.",
        epilog=f"benchmarks:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bench.add_argument("bench", metavar="NAME", choices=sorted(BENCHES), help="which benchmark")
    bench.add_argument("bench_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)


def _add_calls(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harken.records.cli import add_arguments

    calls = sub.add_parser(
        "calls",
        help="list recorded calls, or show one call's timeline",
        description="Read the durable call records (SQLite file or PostgreSQL).",
    )
    add_arguments(calls)


def _run_bench(name: str, argv: list[str]) -> int:
    module_name, summary = BENCHES[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"harken bench {name}", description=summary)
    parser.add_argument(
        "--json",
        nargs="?",
        const=True,
        default=False,
        metavar="FILE",
        help="print the figures as one JSON object; with FILE, write it there and print the report",
    )
    module.add_arguments(parser)
    args = parser.parse_args(argv)
    result = module.run(args)
    if isinstance(args.json, str):
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        sys.stdout.write(module.report(result) + "\n")
    elif args.json:
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
    else:
        sys.stdout.write(module.report(result) + "\n")
    return 0


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the agent server",
        description="Run the agent server. With no config it runs the embedded default agent "
        "(no API keys, no network).",
    )
    serve.add_argument("--config", "-c", metavar="FILE", help="agent config (YAML)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="HTTP port (default 8080)")
    serve.add_argument(
        "--media-port", type=int, default=None, help="port for carrier media WebSockets (8081)"
    )
    serve.add_argument(
        "--workers", type=int, default=None, help="worker processes sharing the ports (1)"
    )
    serve.add_argument(
        "--max-calls", type=int, default=None, help="calls per worker before refusing (500)"
    )
    serve.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default=None,
        help="event loop (default auto: uvloop when installed)",
    )
    serve.add_argument(
        "--agent",
        choices=("conversation", "echo", "bench_vad"),
        default=None,
        help="override agent.kind (default: the config's, else the conversation agent)",
    )


def _add_call(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from harken.sim.cli import add_arguments

    call = sub.add_parser(
        "call",
        help="simulated callers: play scripted calls and measure the conversation's seams",
        description="Dial a running harken over the Twilio protocol (or --spawn one), play "
        "YAML caller scenarios and report voice-to-voice latency, barge-in stop latency, false "
        "cut-offs, dead air and backchannels (docs/quality.md).",
    )
    add_arguments(call)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harken",
        description="harken: real-time voice AI agents on the phone and in the browser.",
    )
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(sub)
    _add_bench(sub)
    _add_calls(sub)
    _add_call(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return _run_bench(args.bench, args.bench_args)
    if args.command == "serve":
        from harken.server.main import serve

        return serve(args)
    if args.command == "call":
        from harken.sim.cli import run as run_call

        return run_call(args)
    if args.command == "calls":
        from harken.records.cli import run

        return run(args)
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
