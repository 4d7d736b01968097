"""The servers under test, as pinned subprocesses: harken itself and the pipecat baseline.

* harken: ``python -m harken.cli serve`` on free ports (the ``bench_vad`` agent for the ``vad``
  scenario, through a generated config file and ``HARKEN_BENCH_REPLY``);
* pipecat: :mod:`harken.bench.pipecat_server` run by the interpreter of ``.bench/pipecat-venv``,
  created on first use with ``pip install "pipecat-ai[websocket,silero]==1.14.0" uvicorn``
  (which pulls no torch: Silero runs on onnxruntime).

Both are started with a ``preexec_fn`` that pins them to the server core (and, with
``realtime``, runs them under SCHED_FIFO so other processes cannot preempt them), log to
``.bench/logs/``, and are ready once ``GET /healthz`` answers 200.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from harken.bench._proc import pin_preexec, wait_healthy

PIPECAT_REQUIREMENT = "pipecat-ai[websocket,silero]==1.14.0"
PIPECAT_EXTRA = ("uvicorn",)
SYSTEMS = ("harken", "pipecat")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """One running server process (and its descendants)."""

    system: str
    proc: subprocess.Popen[bytes]
    ws_url: str
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (harken drains; its live calls are gone by now), then SIGKILL if needed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _spawn(
    system: str,
    cmd: list[str],
    env: dict[str, str],
    bench_dir: Path,
    core: int | None,
    health_url: str,
    ws_url: str,
    tag: str,
    timeout: float,
    realtime: bool = False,
) -> Server:
    logs = bench_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{tag}.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Server.stop
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        preexec_fn=pin_preexec({core} if core is not None else None, realtime),
    )
    server = Server(system, proc, ws_url, log_path, log)
    try:
        failure = wait_healthy(health_url, proc, timeout, poll_s=0.1)
        if failure is not None:
            raise RuntimeError(f"server {failure}")
    except (RuntimeError, KeyboardInterrupt):
        server.stop(5)
        raise RuntimeError(f"{system} server failed to start; log:\n{server.log_tail()}") from None
    return server


def start_harken(
    bench_dir: Path,
    *,
    scenario: str,
    max_calls: int,
    core: int | None,
    reply_pcm: Path | None,
    tag: str,
    realtime: bool = False,
) -> Server:
    http, media = free_port(), free_port()
    env = dict(os.environ)
    cmd = [
        sys.executable,
        "-m",
        "harken.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(http),
        "--media-port",
        str(media),
        "--max-calls",
        str(max_calls),
    ]
    loop = os.environ.get("HARKEN_BENCH_LOOP")  # compare event loops: auto|uvloop|asyncio
    if loop:
        cmd += ["--loop", loop]
    if scenario == "echo":
        cmd += ["--agent", "echo"]
    if scenario == "vad":
        config = bench_dir / "harken-bench-vad.yaml"
        config.write_text("agent:\n  kind: bench_vad\n")
        cmd += ["--config", str(config)]
        if reply_pcm is not None:
            env["HARKEN_BENCH_REPLY"] = str(reply_pcm)
    return _spawn(
        "harken",
        cmd,
        env,
        bench_dir,
        core,
        f"http://127.0.0.1:{media}/healthz",
        f"ws://127.0.0.1:{media}/stream/twilio",
        tag,
        timeout=60,
        realtime=realtime,
    )


def pipecat_python(bench_dir: Path) -> Path:
    return bench_dir / "pipecat-venv" / "bin" / "python"


def ensure_pipecat(bench_dir: Path, log: IO[str] = sys.stderr) -> Path:
    """Create ``.bench/pipecat-venv`` with pipecat 1.14 (once); return its interpreter."""
    python = pipecat_python(bench_dir)
    marker = bench_dir / "pipecat-venv" / ".harken-bench-ok"
    if python.exists() and marker.exists():
        return python
    log.write(f"creating {python.parent.parent} with {PIPECAT_REQUIREMENT} (once)...\n")
    log.flush()
    venv = python.parent.parent
    if not python.exists():
        subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*pip, PIPECAT_REQUIREMENT, *PIPECAT_EXTRA], check=True)
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
        check=True,
        capture_output=True,
        text=True,
    )
    if probe.stdout.strip() != "True":  # pragma: no cover - pipecat 1.14 pulls no torch
        log.write("warning: torch got installed into the pipecat venv\n")
    marker.write_text(PIPECAT_REQUIREMENT + "\n")
    return python


def _base_python() -> str:
    """The interpreter to build the baseline venv from (the one under harken's venv)."""
    base = getattr(sys, "_base_executable", None) or sys.executable
    return str(base)


def start_pipecat(
    bench_dir: Path,
    *,
    scenario: str,
    core: int | None,
    reply_pcm: Path | None,
    tag: str,
    realtime: bool = False,
) -> Server:
    python = ensure_pipecat(bench_dir)
    port = free_port()
    script = Path(__file__).with_name("pipecat_server.py")
    cmd = [str(python), str(script), "--port", str(port), "--scenario", scenario]
    if scenario == "vad" and reply_pcm is not None:
        cmd += ["--reply", str(reply_pcm)]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return _spawn(
        "pipecat",
        cmd,
        env,
        bench_dir,
        core,
        f"http://127.0.0.1:{port}/healthz",
        f"ws://127.0.0.1:{port}/ws",
        tag,
        timeout=120,
        realtime=realtime,
    )


def start(
    system: str,
    bench_dir: Path,
    *,
    scenario: str,
    max_calls: int,
    core: int | None,
    reply_pcm: Path | None,
    tag: str,
    realtime: bool = False,
) -> Server:
    if system == "harken":
        return start_harken(
            bench_dir,
            scenario=scenario,
            max_calls=max_calls,
            core=core,
            reply_pcm=reply_pcm,
            tag=tag,
            realtime=realtime,
        )
    if system == "pipecat":
        return start_pipecat(
            bench_dir, scenario=scenario, core=core, reply_pcm=reply_pcm, tag=tag, realtime=realtime
        )
    raise ValueError(f"unknown system {system!r}; choose from {SYSTEMS}")
