"""The server under test: ``harken serve`` spawned on free ports, and its per-reply records.

:class:`SpawnedServer` starts ``python -m harken.cli serve`` as a subprocess on two free
localhost ports, in a fresh temporary directory (so its call records, ``harken-calls.db``, land
there), with the embedded default agent unless a config file is given. It is ready once
``GET /healthz`` on the media port answers 200 (the worker loads its models before it listens).
Stopping sends SIGTERM (the worker drains) and SIGKILL after a timeout.

The server's per-reply timings (speech end, endpoint, STT final, TTS first audio, first audio
out; see docs/observability.md) never travel over the media stream. When the simulator can read
the server's records database (a spawned server, or ``--records-db``), :func:`server_turns`
reads each call's replies, so the report can say which stage a latency went to.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from harken.bench._proc import wait_healthy
from harken.errors import HarkenError, TransportError

__all__ = ["ServerTurn", "SpawnedServer", "free_port", "server_turns"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class SpawnedServer:
    """A ``harken serve`` subprocess (see the module docstring)."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    http_port: int
    media_port: int
    _log: IO[bytes]

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.media_port}/stream/twilio"

    @property
    def records_db(self) -> Path:
        return self.workdir / "harken-calls.db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    @classmethod
    def start(
        cls, *, config: str | None = None, timeout_s: float = 120.0, extra: list[str] | None = None
    ) -> SpawnedServer:
        workdir = Path(tempfile.mkdtemp(prefix="harken-sim-"))
        http, media = free_port(), free_port()
        cmd = [sys.executable, "-m", "harken.cli", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(http), "--media-port", str(media)]
        if config:
            cmd += ["--config", str(Path(config).resolve())]
        cmd += extra or []
        log = open(workdir / "server.log", "wb")  # noqa: SIM115 - closed by stop()
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        server = cls(proc, workdir, http, media, log)
        try:
            server._wait_ready(timeout_s)
        except BaseException:
            server.stop(keep=True)
            raise
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        url = f"http://127.0.0.1:{self.media_port}/healthz"
        failure = wait_healthy(url, self.proc, timeout_s)
        if failure is not None:
            raise TransportError(f"harken serve {failure}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 20.0, *, keep: bool = False) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the work directory is removed unless
        ``keep`` (its log helps when start-up failed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        if not keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class ServerTurn:
    """One reply as the server recorded it; durations in ms (None: the stage did not run)."""

    kind: str
    user_text: str
    spoken: str
    interrupted: bool
    endpoint_rule: str | None
    endpoint_wait_ms: float | None  # VAD speech end -> end of turn decided
    stt_ms: float | None  # end of turn -> final transcript
    engine_ms: float | None  # final transcript -> first text to TTS
    tts_first_audio_ms: float | None  # TTS request -> first audio
    egress_ms: float | None  # first text to TTS -> first audio on the wire
    v2v_ms: float | None  # VAD speech end -> first audio on the wire
    at: float | None = None  # when the reply was triggered (epoch seconds)
    speech_end_at: float | None = None  # when the VAD decided the caller stopped (epoch)
    first_audio_at: float | None = None  # when the reply's first audio went out (epoch)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


def _diff(timings: dict[str, Any], a: str, b: str) -> float | None:
    x, y = timings.get(a), timings.get(b)
    if isinstance(x, int | float) and isinstance(y, int | float) and y >= x:
        return round(float(y) - float(x), 1)
    return None


def _at(started_at: float, offset_ms: Any) -> float | None:
    """An instant of the call's timeline (ms from its start) in epoch seconds."""
    return started_at + offset_ms / 1000.0 if isinstance(offset_ms, int | float) else None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


async def server_turns(db: Path | str, call_id: str) -> list[ServerTurn] | None:
    """The server's recorded replies of one call (None when the database or call is missing)."""
    from harken.records.sqlite import SqliteCallStore

    if not Path(db).is_file():
        return None
    store = SqliteCallStore(db, readonly=True)
    try:
        await store.open()
        detail = await store.get_call(call_id)
    except (HarkenError, OSError):
        return None
    finally:
        await store.close()
    if detail is None:
        return None
    out = []
    for t in detail.turns:
        tm: dict[str, Any] = dict(t.timings or {})
        rule = tm.get("endpoint_rule")
        out.append(
            ServerTurn(
                kind=t.kind,
                user_text=t.user_text,
                spoken=t.assistant_spoken,
                interrupted=t.interrupted,
                endpoint_rule=rule if isinstance(rule, str) else None,
                endpoint_wait_ms=_diff(tm, "speech_end", "endpoint"),
                stt_ms=_diff(tm, "endpoint", "stt_final"),
                engine_ms=_diff(tm, "trigger", "tts_request"),
                tts_first_audio_ms=_num(tm.get("tts_first_audio_ms")),
                egress_ms=_diff(tm, "tts_request", "first_audio_out"),
                v2v_ms=_num(tm.get("voice_to_voice_ms")),
                at=_at(detail.info.started_at, tm.get("trigger")),
                speech_end_at=_at(detail.info.started_at, tm.get("speech_end")),
                first_audio_at=_at(detail.info.started_at, tm.get("first_audio_out")),
            )
        )
    return out


def environment() -> dict[str, Any]:
    """What the figures depend on: CPUs and load average (the machine may be shared)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in load]}
