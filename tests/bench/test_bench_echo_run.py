"""``harken bench echo`` end to end: a level in process, and the CLI against a server subprocess."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from harken.bench import echo
from harken.bench.callers import echo_script
from harken.server import config as config_mod
from harken.server.worker import Worker

RECORD_KEYS = {
    "system",
    "scenario",
    "calls",
    "throughput_pct",
    "rtt_p50_ms",
    "rtt_p99_ms",
    "rtt_p999_ms",
    "server_cpu_pct",
    "rss_kb_per_call",
}


async def test_a_level_and_the_idle_phase_in_process() -> None:
    """run_level / run_idle against an in-process worker (the process tree is this process)."""
    data = {"server": {"port": 0, "media_port": 0}, "agent": {"kind": "echo"}}
    cfg = config_mod._build(config_mod.Config, data, "c")
    worker = Worker(config_mod.validate(cfg))
    await worker.start()
    url = f"ws://127.0.0.1:{worker.media_port}/stream/twilio"
    parser = argparse.ArgumentParser()
    echo.add_arguments(parser)
    args = parser.parse_args(["--duration", "1.5", "--warmup", "0.3", "--grace", "0.3"])
    args.scenario_now = "echo"
    try:
        rec = await echo.run_level(url, os.getpid(), echo_script(), 3, args, echo.Progress(False))
        idle = await echo.run_idle(url, os.getpid(), echo_script(), 6, 100.0, settle=0.3)
    finally:
        worker.manager.draining = True
        await worker.close()
        if worker._media is not None:
            worker._media.close()
    assert RECORD_KEYS - {"system"} <= set(rec)
    assert rec["calls"] == 3 and rec["failed"] == 0 and rec["connected"] == 3
    # all the audio comes back, except frames the server dropped as stale live audio after a
    # stall of this shared machine (by design, and counted: seen once in a fresh-clone CI run,
    # 92% with a concurrent install running)
    dropped_pct = 100.0 * rec["server_dropped_frames"] / rec["frames_sent"]
    assert rec["throughput_pct"] + dropped_pct >= 99.0, rec
    assert rec["throughput_pct"] == 100.0 or rec["server_dropped_frames"] > 0, rec
    assert 0 <= rec["rtt_p50_ms"] < 250
    assert rec["server_cpu_pct"] > 0 and rec["server_rss_kb"] > 0
    assert rec["loadgen_cpu_pct"] > 0
    assert idle["idle_calls"] == 6 and idle["idle_failed"] == 0
    text = echo.report(
        {
            "scenarios": ["echo"],
            "systems": ["harken"],
            "records": [{"system": "harken", **rec}],
            "idle": [{"system": "harken", "scenario": "echo", **idle}],
        }
    )
    assert f"| harken | 3 | 0 | {rec['throughput_pct']:.2f}% |" in text


def test_cli_json_file(tmp_path: Path) -> None:
    out = tmp_path / "echo.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harken.cli",
            "bench",
            "echo",
            "--calls",
            "2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--grace",
            "0.3",
            "--idle-calls",
            "0",
            "--no-pin",
            "--quiet",
            "--bench-dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["calls"] for r in data["records"]] == [2]
    assert set(data["records"][0]) >= RECORD_KEYS
    assert data["records"][0]["server_exit"] == 0  # the server drained and stopped on SIGTERM
    assert "| harken | 2 |" in proc.stdout  # the report is printed too


def test_saved_runs_merge_into_one_report() -> None:
    a = {
        "command": "harken bench echo --systems harken",
        "started": "2026-01-02 10:00:00",
        "systems": ["harken"],
        "scenarios": ["echo"],
        "records": [{"system": "harken", "calls": 5}],
        "idle": [{"system": "harken"}],
        "settings": {"duration_s": 20},
    }
    b = {
        "command": "harken bench echo --systems pipecat",
        "started": "2026-01-02 09:00:00",
        "systems": ["pipecat"],
        "scenarios": ["echo"],
        "records": [{"system": "pipecat", "calls": 5}],
        "idle": [],
    }
    merged = echo.merge_results([a, b])
    assert merged["systems"] == ["harken", "pipecat"] and merged["scenarios"] == ["echo"]
    assert [r["system"] for r in merged["records"]] == ["harken", "pipecat"]
    assert merged["idle"] == [{"system": "harken"}]
    assert merged["started"] == "2026-01-02 09:00:00" and " + " in merged["command"]
    assert merged["settings"] == {"duration_s": 20}
    assert echo.merge_results([a]) == a
