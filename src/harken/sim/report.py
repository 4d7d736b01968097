"""Figures, tables and charts from simulated calls.

:func:`summarise` turns calls into the per-suite figures (``v2v_p50_ms``, ``v2v_p95_ms``,
``bargein_stop_p95_ms``, ``false_cutoff_pct``, ``dead_air_count``, ...); :func:`call_json` keeps
each call's detail; :func:`markdown` renders the tables; :func:`charts` draws PNGs with
matplotlib's Agg backend (the latency distribution, latency against concurrency in load mode,
and the server's stages when its records were readable). Percentiles interpolate linearly
between the measured values; with few samples p95 is close to the maximum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import numpy as np

from harken.sim.runner import CallResult

__all__ = ["GOALS", "call_json", "charts", "markdown", "summarise"]

GOALS: Final = {
    "v2v_p50_ms": 500.0,
    "v2v_p95_ms": 800.0,
    "bargein_stop_p95_ms": 200.0,
    "false_cutoff_pct": 2.0,
    "dead_air_count": 0.0,
}
"""Issue #10's goals for one call on the offline CPU stack (each figure at most this)."""

STALL_MS: Final = 100.0
"""A call whose caller sent a frame this much late (ms) shared a starved CPU: its times are
suspect (arrivals are stamped late, and playback is scheduled from those stamps)."""

_SILENCE_MS: Final = 2000  # the server's default agent.turn.silence_ms

_STAGES: Final = (
    ("endpoint_wait_ms", "endpoint wait (VAD stop -> end of turn)"),
    ("stt_ms", "STT final (end of turn -> transcript)"),
    ("engine_ms", "agent (transcript -> TTS request)"),
    ("tts_first_audio_ms", "TTS first audio"),
    ("egress_ms", "TTS request -> first audio on the wire"),
    ("v2v_ms", "server v2v (VAD stop -> first audio out)"),
)


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(calls: Sequence[CallResult]) -> dict[str, Any]:
    """The per-suite figures of a set of calls (see the module docstring)."""
    turns = [t for c in calls for t in c.metrics.turns]
    speech = [t for t in turns if t.kind in ("say", "barge_in")]
    v2v = [t.latency_ms for t in speech if t.latency_ms is not None]
    dtmf = [t.latency_ms for t in turns if t.kind == "dtmf" and t.latency_ms is not None]
    cutoffs = [t for t in speech if t.false_cutoff]

    vad_lag = [t.vad_lag_ms for t in speech if t.vad_lag_ms is not None]

    def by_rule(rule: str) -> list[float]:
        return [
            t.latency_ms for t in speech if t.latency_ms is not None and t.endpoint_rule == rule
        ]

    first = [t.first_audio_ms for t in speech if t.first_audio_ms is not None]
    lead = [
        t.latency_ms - t.first_audio_ms
        for t in speech
        if t.latency_ms is not None and t.first_audio_ms is not None
    ]
    barges = [b for c in calls for b in c.metrics.barge_ins]
    hit = [b for b in barges if b.applicable]
    stop = [b.stop_played_ms for b in hit if b.stop_played_ms is not None]
    held = [b.held_ms for b in hit if b.held_ms is not None]
    arrival = [b.stop_arrival_ms for b in hit if b.stop_arrival_ms is not None]
    clear = [b.clear_ms for b in hit if b.clear_ms is not None]
    backs = [b for c in calls for b in c.metrics.backchannels]
    heard = [b for b in backs if b.applicable]
    gaps = [b.gap_ms for b in heard if b.gap_ms is not None]
    out: dict[str, Any] = {
        "calls": len(calls),
        "passed": sum(c.status == "pass" for c in calls),
        "failed": sum(c.status != "pass" for c in calls),
        "errors": sum(c.status == "error" for c in calls),
        "turns": len(speech),
        "v2v_n": len(v2v),
        "v2v_p50_ms": _pct(v2v, 50),
        "v2v_p95_ms": _pct(v2v, 95),
        "v2v_max_ms": max(v2v, default=None),
        "v2v_model_p50_ms": _pct(by_rule("model"), 50),
        "v2v_model_p95_ms": _pct(by_rule("model"), 95),
        "v2v_model_n": len(by_rule("model")),
        "v2v_silence_p50_ms": _pct(by_rule("silence"), 50),
        "v2v_silence_n": len(by_rule("silence")),
        "dead_air_silence_rule": sum(t.dead_air and t.endpoint_rule == "silence" for t in turns),
        "vad_lag_p50_ms": _pct(vad_lag, 50),
        "vad_lag_p95_ms": _pct(vad_lag, 95),
        "first_audio_p50_ms": _pct(first, 50),
        "lead_silence_p50_ms": _pct(lead, 50),
        "dtmf_n": len(dtmf),
        "dtmf_p50_ms": _pct(dtmf, 50),
        "bargein_n": len(hit),
        "bargein_missed": sum(not b.interrupted for b in hit),
        "bargein_agent_silent": len(barges) - len(hit),
        "bargein_held_p50_ms": _pct(held, 50),
        "bargein_held_p95_ms": _pct(held, 95),
        "bargein_stop_p50_ms": _pct(stop, 50),
        "bargein_stop_p95_ms": _pct(stop, 95),
        "bargein_arrival_p95_ms": _pct(arrival, 95),
        "bargein_clear_p50_ms": _pct(clear, 50),
        "bargein_clear_p95_ms": _pct(clear, 95),
        "false_cutoff_count": len(cutoffs),
        "false_cutoff_in_pause": sum(t.cutoff_in_pause for t in cutoffs),
        "false_cutoff_pct": round(100.0 * len(cutoffs) / len(speech), 1) if speech else None,
        "dead_air_count": sum(t.dead_air for t in turns),
        "no_reply_count": sum(t.no_reply for t in turns if t.kind != "say" or t.latency_ms is None),
        "talked_over_count": sum(t.talked_over for t in turns),
        "backchannel_n": len(heard),
        "backchannel_wrong": sum(b.wrong for b in heard),
        "backchannel_wrong_pct": (
            round(100.0 * sum(b.wrong for b in heard) / len(heard), 1) if heard else None
        ),
        "backchannel_gap_p50_ms": _pct(gaps, 50),
        "late_sends": sum(c.late_sends for c in calls),
        "max_late_ms": max((c.max_late_ms for c in calls), default=0.0),
        "calls_with_stalls": sum(c.max_late_ms > STALL_MS for c in calls),
    }
    server = [t for c in calls for t in (c.server or []) if t.kind == "turn"]
    if server:
        stages = {}
        for key, _ in _STAGES:
            values = [v for t in server if (v := getattr(t, key)) is not None]
            stages[key] = {"p50": _pct(values, 50), "p95": _pct(values, 95), "n": len(values)}
        out["server_stages_ms"] = stages
        rules: dict[str, int] = {}
        for t in server:
            rules[t.endpoint_rule or "none"] = rules.get(t.endpoint_rule or "none", 0) + 1
        out["server_endpoint_rules"] = rules
        # the end of turn fired inside the caller's pause, the reply was cancelled unheard
        out["server_split_turns"] = sum(t.interrupted and t.v2v_ms is None for t in server)
    return out


def call_json(call: CallResult) -> dict[str, Any]:
    """One call's detail for ``--json`` (times relative to the call's start, in ms)."""

    def rel(t: float) -> float:
        return round((t - call.t0) * 1000.0, 1)

    return {
        "scenario": call.scenario,
        "call_sid": call.call_sid,
        "status": call.status,
        "duration_s": call.duration_s,
        "agent_hung_up": call.agent_hung_up,
        "failures": call.failures,
        "issues": call.issues,
        "error": call.error,
        "acts": [
            {
                "step": a.step,
                "kind": a.kind,
                "text": a.text,
                "onset_ms": rel(a.onset),
                "end_ms": rel(a.end),
            }
            for a in call.acts
        ],
        "turns": [asdict(t) for t in call.metrics.turns],
        "barge_ins": [asdict(b) for b in call.metrics.barge_ins],
        "backchannels": [asdict(b) for b in call.metrics.backchannels],
        "clears_ms": [rel(c) for c in call.audio.clears],
        # the agent's voiced audio as the caller heard it (the spans the measures start from)
        "agent_voiced_ms": [[rel(v.start), rel(v.end)] for v in call.audio.voiced],
        "agent": [
            {"start_ms": rel(r.span.start), "end_ms": rel(r.span.end), "text": r.text}
            for r in call.replies
        ],
        "server": None if call.server is None else [t.as_dict() for t in call.server],
        "late_sends": call.late_sends,
        "max_late_ms": call.max_late_ms,
    }


def _f(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}{unit}" if abs(value) >= 10 else f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _scenario_row(c: CallResult) -> str:
    lat = [t.latency_ms for t in c.metrics.turns if t.kind != "dtmf" and t.latency_ms is not None]
    stops = [b.stop_played_ms for b in c.metrics.barge_ins if b.stop_played_ms is not None]
    cut = sum(t.false_cutoff for t in c.metrics.turns)
    dead = sum(t.dead_air for t in c.metrics.turns)
    wrong = sum(b.wrong for b in c.metrics.backchannels)
    note = "; ".join(c.failures[:2] + ([c.error] if c.error else []) + c.issues[:1])
    note = note.replace("|", "/")[:140]
    return (
        f"| {c.scenario} | {c.status} | {c.duration_s:.0f} | {len(lat)} | "
        f"{_f(_pct(lat, 50))} | {_f(max(lat, default=None))} | {_f(max(stops, default=None))} | "
        f"{cut} | {dead} | {wrong} | {note} |"
    )


def markdown(
    levels: Sequence[dict[str, Any]], calls_by_level: Sequence[Sequence[CallResult]]
) -> str:
    """The report: per scenario and overall at the lowest concurrency, goals, load, stages."""
    lines: list[str] = []
    first, calls = levels[0], calls_by_level[0]
    s = first["summary"]
    lines += [
        f"### Scenarios (concurrency {first['concurrency']})",
        "",
        "| scenario | result | s | turns | v2v p50 ms | v2v max ms | barge-in stop ms | "
        "false cut-offs | dead air | backchannel wrong | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *(_scenario_row(c) for c in calls),
        f"| **all** | {s['passed']}/{s['calls']} pass | | {s['turns']} | {_f(s['v2v_p50_ms'])} | "
        f"{_f(s['v2v_max_ms'])} | {_f(s['bargein_stop_p95_ms'])} (p95) | "
        f"{s['false_cutoff_count']} | {s['dead_air_count']} | {s['backchannel_wrong']} | |",
        "",
        "### Overall against the goals",
        "",
        "| figure | measured | goal | met |",
        "|---|---|---|---|",
    ]
    for key, goal in GOALS.items():
        value = s.get(key)
        met = "-" if value is None else ("yes" if value <= goal else "no")
        lines.append(f"| `{key}` | {_f(value)} | <= {_f(goal)} | {met} |")
    lines += [
        "",
        f"v2v over {s['v2v_n']} answered speech turns (first agent audio arriving p50 "
        f"{_f(s['first_audio_p50_ms'])} ms, then p50 {_f(s['lead_silence_p50_ms'])} ms of silence "
        f"at the start of the TTS audio); DTMF answers p50 {_f(s['dtmf_p50_ms'])} ms "
        f"({s['dtmf_n']}). Barge-ins: {s['bargein_n']} over agent speech, {s['bargein_missed']} "
        f"missed; the agent first went quiet p50/p95 {_f(s['bargein_held_p50_ms'])}/"
        f"{_f(s['bargein_held_p95_ms'])} ms after the caller's onset and stopped for good p50/p95 "
        f"{_f(s['bargein_stop_p50_ms'])}/{_f(s['bargein_stop_p95_ms'])} ms; audio stopped "
        f"arriving p95 {_f(s['bargein_arrival_p95_ms'])} ms; clear p50/p95 "
        f"{_f(s['bargein_clear_p50_ms'])}/{_f(s['bargein_clear_p95_ms'])} ms. False cut-offs "
        f"{s['false_cutoff_count']} ({s['false_cutoff_in_pause']} inside a scripted pause) of "
        f"{s['turns']} speech turns. Backchannels: {s['backchannel_wrong']} of "
        f"{s['backchannel_n']} treated as interruptions; where the agent carried on, the held "
        f"playback left a gap of p50 {_f(s['backchannel_gap_p50_ms'])} ms in its speech. Late "
        f"caller sends (> 5 ms): {s['late_sends']}, worst {_f(s['max_late_ms'])} ms; calls "
        f"stalled over {STALL_MS:.0f} ms: {s['calls_with_stalls']}.",
    ]
    stages = s.get("server_stages_ms")
    if stages:
        lines += ["", "### Server stages (its call records)", "", "| stage | p50 ms | p95 ms | n |"]
        lines.append("|---|---|---|---|")
        for key, label in _STAGES:
            st = stages[key]
            lines.append(f"| {label} | {_f(st['p50'])} | {_f(st['p95'])} | {st['n']} |")
        lines.append(
            f"\nThe caller's end to the server's VAD stop decision (hang-over): p50/p95 "
            f"{_f(s['vad_lag_p50_ms'])}/{_f(s['vad_lag_p95_ms'])} ms."
        )
        lines.append(
            f"\nBy end-of-turn rule, caller-measured: the turn model v2v p50/p95 "
            f"{_f(s['v2v_model_p50_ms'])}/{_f(s['v2v_model_p95_ms'])} ms "
            f"({s['v2v_model_n']} turns), "
            f"the {_SILENCE_MS} ms silence backstop p50 {_f(s['v2v_silence_p50_ms'])} ms "
            f"({s['v2v_silence_n']} turns); dead air from the backstop: "
            f"{s['dead_air_silence_rule']} of {s['dead_air_count']}."
        )
        lines.append(
            f"\nEnd-of-turn rules: {s.get('server_endpoint_rules')}; replies cancelled unheard "
            f"because the caller went on (end of turn inside a pause): {s['server_split_turns']}."
        )
    if len(levels) > 1:
        lines += [
            "",
            "### Load",
            "",
            "| concurrency | calls | v2v p50 ms | p95 ms | turn-model turns: v2v p50 ms | growth | "
            "barge-in stop p95 ms | dead air | false cut-offs | stalled calls | load avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        base = levels[0]["summary"].get("v2v_model_p50_ms")
        for lv in levels:
            x = lv["summary"]
            model = x.get("v2v_model_p50_ms")
            growth = "-" if not (base and model) else f"{100.0 * (model / base - 1):+.0f}%"
            lines.append(
                f"| {lv['concurrency']} | {x['calls']} | {_f(x['v2v_p50_ms'])} | "
                f"{_f(x['v2v_p95_ms'])} | {_f(model)} ({x.get('v2v_model_n', 0)}) | {growth} | "
                f"{_f(x['bargein_stop_p95_ms'])} | {x['dead_air_count']} | "
                f"{x['false_cutoff_count']} | {x['calls_with_stalls']} | "
                f"{lv['loadavg_start'][0]:.2f}-{lv['loadavg_end'][0]:.2f} |"
            )
    return "\n".join(lines)


def charts(
    levels: Sequence[dict[str, Any]], calls_by_level: Sequence[Sequence[CallResult]], out: Path
) -> list[Path]:
    """PNG charts into ``out``: ``quality-latency.png``, ``quality-load.png`` (more than one
    concurrency), ``quality-stages.png`` (server records available). Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    calls = calls_by_level[0]
    v2v = [
        t.latency_ms for c in calls for t in c.metrics.turns if t.kind != "dtmf" and t.latency_ms
    ]
    stop = [
        b.stop_played_ms for c in calls for b in c.metrics.barge_ins if b.stop_played_ms is not None
    ]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    if v2v:
        a.hist(v2v, bins=min(30, max(5, len(v2v) // 2)), color="#4477aa")
    a.axvline(GOALS["v2v_p50_ms"], color="green", ls="--", label="goal p50 500 ms")
    a.axvline(GOALS["v2v_p95_ms"], color="red", ls="--", label="goal p95 800 ms")
    a.set(title=f"voice-to-voice, {len(v2v)} turns", xlabel="ms", ylabel="turns")
    a.legend(fontsize=8)
    if stop:
        b.hist(stop, bins=min(20, max(5, len(stop))), color="#aa7744")
    b.axvline(GOALS["bargein_stop_p95_ms"], color="red", ls="--", label="goal p95 200 ms")
    b.set(title=f"barge-in: onset -> agent stops playing, {len(stop)}", xlabel="ms")
    b.legend(fontsize=8)
    fig.suptitle(f"harken call, concurrency {levels[0]['concurrency']}")
    fig.tight_layout()
    paths.append(out / "quality-latency.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    if len(levels) > 1:
        n = [lv["concurrency"] for lv in levels]
        fig, ax = plt.subplots(figsize=(6, 3.8))
        series = (
            ("v2v_p50_ms", "v2v p50, all turns"),
            ("v2v_p95_ms", "v2v p95, all turns"),
            ("v2v_model_p50_ms", "v2v p50, turn-model turns"),
        )
        for key, label in series:
            ax.plot(n, [lv["summary"].get(key) or np.nan for lv in levels], marker="o", label=label)
        ax.plot(
            n,
            [lv["summary"]["bargein_stop_p95_ms"] or np.nan for lv in levels],
            marker="s",
            label="barge-in stop p95",
        )
        ax.set(xlabel="concurrent calls", ylabel="ms", title="latency against concurrency")
        ax.set_xticks(n)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / "quality-load.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    summary = levels[0]["summary"]
    stages = summary.get("server_stages_ms")
    if stages:
        parts = ("endpoint_wait_ms", "stt_ms", "engine_ms", "egress_ms")
        names = ("end-of-turn wait", "STT final", "agent", "TTS -> wire")
        fig, ax = plt.subplots(figsize=(8, 3.4))
        for row, q in enumerate(("p50", "p95")):
            lag = summary.get(f"vad_lag_{q}_ms") or 0.0
            ax.barh([row], [lag], color="C4", label=None if row else "VAD stop (hang-over)")
            left = lag
            for i, key in enumerate(parts):
                width = stages[key][q] or 0.0
                stage_label = None if row else names[i]
                ax.barh([row], [width], left=left, color=f"C{i}", label=stage_label)
                left += width
            rest = (summary[f"v2v_{q}_ms"] or 0.0) - left
            if rest > 0:
                rest_label = None if row else "rest: TTS lead-in silence, wire, playback"
                ax.barh([row], [rest], left=left, color="0.7", label=rest_label)
        ax.set(yticks=[0, 1], yticklabels=["p50", "p95"], xlabel="ms")
        ax.set_title(
            "caller-heard v2v: where the time goes (percentile of each stage, stacked)",
            fontsize=10,
        )
        ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.3))
        fig.tight_layout()
        paths.append(out / "quality-stages.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths
