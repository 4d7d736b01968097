"""Reports of the echo bench: tables, the docs section, sweep levels and stop rules."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import pytest

from harken.bench import _report, echo


def _rec(system: str, calls: int, p99: float | None, thr: float = 100.0, **kw: Any) -> dict:
    rec = {
        "system": system,
        "scenario": "echo",
        "calls": calls,
        "connected": calls,
        "failed": 0,
        "throughput_pct": thr,
        "rtt_p50_ms": 1.0,
        "rtt_p90_ms": 2.0,
        "rtt_p99_ms": p99,
        "rtt_p999_ms": 9.0,
        "rtt_max_ms": 12.5,
        "late_sends": 0,
        "late_pct": 0.0,
        "server_cpu_pct": 40.0,
        "rss_kb_per_call": 21.5,
        "loadgen_cpu_pct": 30.0,
        "loadgen_saturated": False,
        "load_avg_start": 0.2,
        "load_avg_end": 0.3,
        "holds": p99 is not None and p99 <= 20 and thr >= 99,
    }
    rec.update(kw)
    return rec


def _result(records: list[dict], idle: list[dict] | None = None) -> dict:
    return {
        "command": "harken bench echo --baseline pipecat",
        "started": "2026-01-01 00:00:00",
        "cpu_count": 2,
        "pinning": "server on core 0, load generator on core 1",
        "scenarios": ["echo"],
        "systems": ["harken", "pipecat"],
        "settings": {"ramp_rate": 100, "warmup_s": 5, "duration_s": 20, "goal_p99_ms": 20},
        "records": records,
        "idle": idle or [],
    }


def test_markdown_tables_and_summary() -> None:
    recs = [
        _rec("harken", 100, 3.0),
        _rec("harken", 500, 15.0),
        _rec("pipecat", 50, 35.0),
        _rec("pipecat", 75, 900.0, thr=80.0, loadgen_saturated=True),
    ]
    idle = [
        {
            "system": "harken",
            "scenario": "echo",
            "idle_calls": 300,
            "idle_rss_kb_per_call": 11.2,
            "idle_server_rss_kb": 70000,
            "idle_server_cpu_pct": 0.5,
        }
    ]
    text = _report.markdown(_result(recs, idle))
    assert "harken holds 500; pipecat holds no level." in text
    assert "| harken | 500 | 0 | 100.00% | 1.0 | 2.0 | 15.0 | 9.0 | 12.5 | 0 (0.00%) |" in text
    assert "30.0% **behind**" in text
    assert "| harken | echo | 300 | 11.2 KB |" in text
    assert "loaded machine" not in text  # load 0.2-0.3


def test_loaded_machine_is_said_plainly() -> None:
    text = _report.markdown(_result([_rec("harken", 50, 3.0, load_avg_end=2.4)]))
    assert "**Measured on a loaded machine**" in text
    assert "0.20-2.40" in text


def test_holds_picks_the_largest_level_that_held() -> None:
    recs = [_rec("harken", 100, 3.0), _rec("harken", 200, 30.0), _rec("harken", 150, 10.0)]
    assert _report.holds(recs, "harken", "echo") == 150
    assert _report.holds(recs, "pipecat", "echo") is None


def test_replace_section_touches_only_its_section() -> None:
    doc = "# Performance\n\nintro\n\n## Pipeline\n\nfigures\n\n## Other\n\nmore\n"
    once = _report.replace_section(doc, "first body")
    assert once.endswith(f"{_report.SECTION}\n\nfirst body\n")
    twice = _report.replace_section(once, "second body")
    assert "first body" not in twice and "second body" in twice
    assert twice.count(_report.SECTION) == 1
    assert "## Pipeline\n\nfigures" in twice and "## Other\n\nmore" in twice
    # a section in the middle keeps what follows it
    middle = doc.replace("## Other", f"{_report.SECTION}\n\nold\n\n## Other")
    replaced = _report.replace_section(middle, "new")
    assert "old" not in replaced
    assert f"{_report.SECTION}\n\nnew\n\n## Other\n\nmore\n" in replaced


def test_write_docs_writes_the_section_and_a_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "performance.md").write_text("# Performance\n\n## Pipeline\n\nx\n")
    recs = [_rec("harken", 50, 3.0), _rec("harken", 100, 4.0), _rec("pipecat", 50, 40.0)]
    written = _report.write_docs(_result(recs), tmp_path)
    png = tmp_path / "img" / "echo-load-echo.png"
    assert png in written and png.read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "performance.md").read_text()
    assert "## Pipeline\n\nx" in text
    assert "![echo: latency and throughput vs calls](img/echo-load-echo.png)" in text


def _args(**kw: Any) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    echo.add_arguments(parser)
    args = parser.parse_args([])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_levels_list_and_sweep() -> None:
    assert echo._levels(_args(calls="50,100,200")) == [50, 100, 200]
    sweep = echo._levels(_args(sweep=True, sweep_start=50, sweep_factor=1.25, sweep_max=200))
    assert sweep[0] == 50 and sweep[-1] <= 200
    assert all(b > a for a, b in itertools.pairwise(sweep))
    assert all(level % 5 == 0 for level in sweep)


def test_sweep_stop_rules() -> None:
    args = _args(stop_throughput=99.0, stop_p99_ms=50.0)
    assert not echo._stop(_rec("harken", 100, 20.0), args)
    assert echo._stop(_rec("harken", 100, 51.0), args)
    assert echo._stop(_rec("harken", 100, 5.0, thr=98.9), args)
    assert echo._stop(_rec("harken", 100, 5.0, failed=1), args)
    assert echo._stop(_rec("harken", 100, None), args)
    assert echo._stop(_rec("harken", 100, 5.0, loadgen_saturated=True), args)


def test_a_scenario_not_re_run_keeps_its_tables(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    old_section = (
        f"{_report.SECTION}\n\nCommand: `x`. Run started 2026-01-02 03:04:05; 2 cores.\n\n"
        "### `echo`\n\nold echo table\n\n### `vad`\n\nharken holds 50.\n\n| vad table |\n\n"
        "Idle calls (started, no media; ...):\n\n"
        "| system | scenario | idle calls | RSS per idle call | server RSS | server CPU |\n"
        "|---|---|---:|---:|---:|---:|\n"
        "| harken | echo | 300 | 14.0 KB | 1 KB | 0.0% |\n"
        "| harken | vad | 300 | 15.3 KB | 2 KB | 0.0% |\n\n"
        "## Next section\n\nkept\n"
    )
    (docs / "performance.md").write_text("# Performance\n\n" + old_section)
    result = {"scenarios": ["echo"], "systems": ["harken"], "records": [], "idle": []}
    _report.write_docs(result, docs)
    text = (docs / "performance.md").read_text()
    assert "old echo table" not in text
    assert "### `vad`\n\n(Not re-run: from the run started 2026-01-02 03:04:05.)" in text
    assert "| vad table |" in text and "| harken | vad | 300 | 15.3 KB" in text
    assert "| harken | echo | 300 | 14.0 KB" not in text
    assert text.endswith("## Next section\n\nkept\n")
