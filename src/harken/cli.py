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
    bench = sub.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Run one of harken's benchmarks. Numbers are recorded in docs/performance.md.",
    )
    benches = bench.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, (module_name, summary) in BENCHES.items():
        p = benches.add_parser(name, help=summary, description=summary)
        p.add_argument("--json", action="store_true", help="print one JSON object with the figures")
        p.set_defaults(_bench_module=module_name)
        importlib.import_module(module_name).add_arguments(p)


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the agent server",
        description="Run the agent server. With no config it runs the embedded default agent "
        "(no API keys, no network).",
    )
    serve.add_argument("--config", "-c", metavar="FILE", help="agent config (YAML)")
    serve.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port to listen on (default 8080)")
    serve.add_argument(
        "--workers", type=int, default=None, help="worker processes sharing the port"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="harken",
        description="harken: real-time voice AI agents on the phone and in the browser.",
    )
    parser.add_argument("--version", action="version", version=f"harken {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_serve(sub)
    _add_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        module = importlib.import_module(args._bench_module)
        result = module.run(args)
        if args.json:
            sys.stdout.write(orjson.dumps(result).decode() + "\n")
        else:
            sys.stdout.write(module.report(result) + "\n")
        return 0
    if args.command == "serve":
        from harken.server.main import serve

        return serve(args)
    return 2  # pragma: no cover - argparse enforces a command


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
