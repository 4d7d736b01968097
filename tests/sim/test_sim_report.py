"""Suite figures, the markdown report and the charts, from synthetic calls."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harken.sim.listen import AgentAudio, Span
from harken.sim.measure import CallerAct, analyse
from harken.sim.report import call_json, charts, markdown, summarise
from harken.sim.runner import CallResult, match_server_turns
from harken.sim.server import ServerTurn


def call(name: str, latency: float, barge: bool = False) -> CallResult:
    acts = [CallerAct("say", 1, "hi", 1.0, 2.0)]
    voiced = [Span(2.0 + latency, 6.0)]
    clears = []
    if barge:
        acts.append(CallerAct("barge_in", 2, "stop", 3.0 + latency, 3.5 + latency))
        clears = [3.5 + latency]
        voiced = [Span(2.0 + latency, 3.2 + latency), Span(5.0 + latency, 6.0 + latency)]
    audio = AgentAudio(voiced=voiced, playing=list(voiced), clears=clears)
    c = CallResult(name, "CA" + name, t0=0.0, wall0=1000.0)
    c.acts, c.audio = acts, audio
    c.metrics = analyse(acts, audio, 10.0)
    rec = ServerTurn("turn", "hi", "hi!", False, "model", 400.0, 50.0, 0.3, 250.0, 255.0, 705.0)
    c.server = [replace(rec, at=1002.3, speech_end_at=1002.25)]  # the caller ended at 1002.0
    match_server_turns(c)
    return c


def test_summary_markdown_and_charts(tmp_path: Path) -> None:
    calls = [call("a", 0.4), call("b", 0.6, barge=True), call("c", 2.0)]
    calls[2].failures.append("step 1: dead air (2000.0)")
    s = summarise(calls)
    assert s["calls"] == 3 and s["passed"] == 2
    assert s["v2v_n"] == 4 and s["v2v_p50_ms"] is not None
    assert s["dead_air_count"] == 1
    assert s["bargein_n"] == 1 and s["bargein_stop_p95_ms"] == 200.0
    assert s["false_cutoff_pct"] == 0.0
    assert s["server_stages_ms"]["endpoint_wait_ms"]["p50"] == 400.0
    assert s["v2v_model_n"] == 3  # the first turn of each call matched its server record
    assert calls[0].metrics.turns[0].server_v2v_ms == 705.0
    assert calls[0].metrics.turns[0].vad_lag_ms == 250.0 and s["vad_lag_p50_ms"] == 250.0
    levels = [
        {"concurrency": n, "loadavg_start": [1.0], "loadavg_end": [1.5], "summary": s}
        for n in (1, 2)
    ]
    text = markdown(levels, [calls, calls])
    assert "| a | pass |" in text and "| c | fail |" in text
    assert "`v2v_p50_ms`" in text and "### Load" in text and "+0%" in text
    paths = charts(levels, [calls, calls], tmp_path)
    assert [p.name for p in paths] == [
        "quality-latency.png",
        "quality-load.png",
        "quality-stages.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)
    detail = call_json(calls[1])
    assert detail["barge_ins"][0]["clear_ms"] == 500.0 and detail["acts"][1]["kind"] == "barge_in"
