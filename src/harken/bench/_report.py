"""Reports of ``harken bench echo``: markdown tables, PNG charts, the docs section.

``--report`` replaces the section ``## Echo load (`harken bench echo`)`` of docs/performance.md
(from its heading to the next ``## `` heading; appended if missing) and writes
``docs/img/echo-load-<scenario>.png``. Nothing else in the file is touched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SECTION = "## Echo load (`harken bench echo`)"
Record = dict[str, Any]


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def level_line(rec: Record) -> str:
    """One line per finished level, for the progress output."""
    line = (
        f"thr {_fmt(rec['throughput_pct'])}%  rtt p50/p99/p99.9 {_fmt(rec['rtt_p50_ms'])}/"
        f"{_fmt(rec['rtt_p99_ms'])}/{_fmt(rec['rtt_p999_ms'])} ms  failed {rec['failed']}  "
        f"late {rec['late_sends']}  server {_fmt(rec['server_cpu_pct'])}% "
        f"({_per_call(rec)}/call, {_instr(rec, 'server')} instr/frame) "
        f"{_fmt(rec['rss_kb_per_call'])} KB/call  gen {_fmt(rec['loadgen_cpu_pct'])}% "
        f"({_instr(rec, 'loadgen')})  load, steal {_machine(rec)}"
    )
    if rec.get("scenario") == "vad":
        line += (
            f"  reply p50/p99 {_fmt(rec.get('reply_p50_ms'), 0)}/"
            f"{_fmt(rec.get('reply_p99_ms'), 0)} ms ({rec.get('replied_turns')}/"
            f"{rec.get('turns')} turns)"
        )
    return line


def _late(r: Record) -> str:
    pct = r.get("late_pct")
    if isinstance(pct, float | int):
        return f"{r['late_sends']} ({pct:.2f}%)"
    return str(r["late_sends"])


def _per_call(r: Record) -> str:
    """Server CPU per live call (percent of a core), the figure that scales to a level."""
    live = r["calls"] - r["failed"]
    cpu = r.get("server_cpu_pct")
    return f"{cpu / live:.3f}%" if live > 0 and isinstance(cpu, float | int) else "-"


def _instr(r: Record, who: str) -> str:
    """Thousands of instructions per media frame, user + kernel (``-`` without perf)."""
    user, kernel = r.get(f"{who}_kinstr_per_frame_user"), r.get(f"{who}_kinstr_per_frame_kernel")
    if user is None:
        return "-"
    return f"{user:.0f}k+{kernel:.0f}k" if kernel is not None else f"{user:.0f}k"


def _machine(r: Record) -> str:
    steal = r.get("steal_pct")
    load = f"{r['load_avg_start']}-{r['load_avg_end']}"
    return f"{load}, {steal:.0f}%" if isinstance(steal, float | int) else load


def _table(records: Sequence[Record], vad: bool) -> list[str]:
    head = (
        "| system | calls | failed | throughput | RTT p50 | p90 | p99 | p99.9 | max | late sends "
        "| server CPU | CPU/call | server instr/frame | RSS/call | generator CPU "
        "| generator instr/frame | load avg, steal |"
    )
    sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    if vad:
        head += " reply p50 | reply p99 | turns answered | early replies |"
        sep += "---:|---:|---:|---:|"
    out = [head, sep]
    for r in records:
        gen = _fmt(r["loadgen_cpu_pct"]) + "%" + (" **behind**" if r["loadgen_saturated"] else "")
        row = (
            f"| {r['system']} | {r['calls']} | {r['failed']} | {_fmt(r['throughput_pct'], 2)}% "
            f"| {_fmt(r['rtt_p50_ms'])} | {_fmt(r['rtt_p90_ms'])} | {_fmt(r['rtt_p99_ms'])} "
            f"| {_fmt(r['rtt_p999_ms'])} | {_fmt(r['rtt_max_ms'])} | {_late(r)} "
            f"| {_fmt(r['server_cpu_pct'])}% | {_per_call(r)} | {_instr(r, 'server')} "
            f"| {_fmt(r['rss_kb_per_call'])} KB | {gen} | {_instr(r, 'loadgen')} "
            f"| {_machine(r)} |"
        )
        if vad:
            row += (
                f" {_fmt(r.get('reply_p50_ms'), 0)} | {_fmt(r.get('reply_p99_ms'), 0)} "
                f"| {r.get('replied_turns')}/{r.get('turns')} | {r.get('early_replies', '-')} |"
            )
        out.append(row)
    return out


def holds(records: Sequence[Record], system: str, scenario: str) -> int | None:
    """The largest level of ``system`` that held (no failure, throughput and p99 within bounds)."""
    ok = [
        r["calls"]
        for r in records
        if r["system"] == system and r["scenario"] == scenario and r.get("holds")
    ]
    return max(ok) if ok else None


def markdown(result: dict[str, Any], images: dict[str, str] | None = None) -> str:
    records: list[Record] = list(result.get("records", []))
    idle: list[Record] = list(result.get("idle", []))
    settings = result.get("settings", {})
    loads = [r["load_avg_start"] for r in records] + [r["load_avg_end"] for r in records]
    lines = [
        f"Command: `{result.get('command', 'harken bench echo').strip()}`. Run started "
        f"{result.get('started')}; {result.get('cpu_count')} usable cores, "
        f"{result.get('pinning')}. Each level: a fresh server, calls opened at "
        f"{settings.get('ramp_rate')}/s, {settings.get('warmup_s')} s warm-up (not measured), "
        f"{settings.get('duration_s')} s measured. RTT is per echoed chunk by byte-count "
        "matching (realigned by content after frames the server dropped), in ms; CPU is "
        "percent of one core, instr/frame thousands of instructions per media frame (user + "
        "kernel, hardware counters); RSS/call is the server tree's RSS growth "
        "over its idle reading divided by the live calls. Late sends: media sent more than "
        f"{settings.get('late_ms', 5)} ms after its slot; a generator marked **behind** used "
        ">= 85% of its core or sent over 1% late, so that level measures the generator (or the "
        "machine), not the server. 'holds' = no failed call, throughput >= 99% and RTT p99 <= "
        f"{settings.get('goal_p99_ms')} ms, with the generator on schedule.",
        "",
    ]
    steals = [r["steal_pct"] for r in records if isinstance(r.get("steal_pct"), float | int)]
    if (loads and max(loads) > 0.5) or (steals and max(steals) > 5):
        stolen = (
            f", and the hypervisor took {min(steals):.0f}-{max(steals):.0f}% of the machine's "
            "CPU time (steal: the host is shared too, which also slows every instruction)"
            if steals
            else ""
        )
        lines += [
            f"**Measured on a loaded machine**: the 1-minute load average ran {min(loads):.2f}-"
            f"{max(loads):.2f} during the levels (other sessions were using the same 2 cores)"
            f"{stolen}, so the CPU and latency figures are pessimistic and noisy; the "
            "instructions per frame (hardware counters, user+kernel) do not depend on that load.",
            "",
        ]
    for scenario in result.get("scenarios", []):
        order = list(result.get("systems", []))
        recs = sorted(
            (r for r in records if r["scenario"] == scenario),
            key=lambda r: (order.index(r["system"]) if r["system"] in order else 99, r["calls"]),
        )
        if not recs:
            continue
        lines.append(f"### `{scenario}`")
        lines.append("")
        summary = []
        for system in result.get("systems", []):
            n = holds(records, system, scenario)
            summary.append(f"{system} holds {n if n is not None else 'no level'}")
        lines.append("; ".join(summary) + ".")
        lines.append("")
        lines += _table(recs, scenario == "vad")
        lines.append("")
        if images and scenario in images:
            lines += [f"![{scenario}: latency and throughput vs calls]({images[scenario]})", ""]
    if idle:
        lines += [
            "Idle calls (started, no media; RSS per call is the slope between a third of them "
            "and all of them):",
            "",
            "| system | scenario | idle calls | RSS per idle call | server RSS | server CPU |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for r in idle:
            lines.append(
                f"| {r['system']} | {r['scenario']} | {r['idle_calls']} "
                f"| {_fmt(r['idle_rss_kb_per_call'])} KB | {r['idle_server_rss_kb']} KB "
                f"| {_fmt(r['idle_server_cpu_pct'])}% |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def chart(result: dict[str, Any], scenario: str, path: Path) -> bool:
    """RTT p50/p99/p99.9 and throughput vs calls, every system; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    records = [r for r in result.get("records", []) if r["scenario"] == scenario]
    if not records:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"harken": "tab:blue", "pipecat": "tab:orange"}
    styles = (
        ("rtt_p50_ms", "p50", ":"),
        ("rtt_p99_ms", "p99", "-"),
        ("rtt_p999_ms", "p99.9", "--"),
    )
    for system in result.get("systems", []):
        recs = sorted((r for r in records if r["system"] == system), key=lambda r: r["calls"])
        if not recs:
            continue
        xs = [r["calls"] for r in recs]
        behind = [r for r in recs if r.get("loadgen_saturated")]
        for key, label, style in styles:
            ys = [r[key] if r[key] is not None else float("nan") for r in recs]
            ax1.plot(
                xs, ys, style, marker="o", ms=3, color=colors.get(system), label=f"{system} {label}"
            )
            if behind:  # red rings: the generator was behind, the point measures it too
                ax1.plot(
                    [r["calls"] for r in behind],
                    [r[key] if r[key] is not None else float("nan") for r in behind],
                    "o",
                    ms=9,
                    mfc="none",
                    color="red",
                )
        ax2.plot(
            xs,
            [r["throughput_pct"] for r in recs],
            "-",
            marker="o",
            ms=3,
            color=colors.get(system),
            label=system,
        )
    goal = result.get("settings", {}).get("goal_p99_ms")
    if goal:
        ax1.axhline(goal, color="grey", lw=0.8, ls="-.", label=f"{goal} ms")
    ax1.set_yscale("log")
    ax1.set_xlabel("concurrent calls")
    ax1.set_ylabel("round trip per echoed chunk (ms)")
    ax1.set_title(f"{scenario}: round trip (red ring: generator behind)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)
    ax2.set_xlabel("concurrent calls")
    ax2.set_ylabel("echoed / expected audio (%)")
    ax2.set_title(f"{scenario}: throughput")
    ax2.set_ylim(0, 105)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def replace_section(text: str, body: str) -> str:
    """``text`` with the SECTION heading's section replaced by ``body`` (appended if absent)."""
    block = f"{SECTION}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        return pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    return text.rstrip() + "\n\n" + block


_SUBSECTION = re.compile(r"^### `([^`]+)`\n.*?(?=^### |^Idle calls|\Z)", re.S | re.M)
_IDLE_ROW = re.compile(r"^\| [^|]+ \| ([^|]+) \| \d+ \|.*$", re.M)


def keep_other_scenarios(old_section: str, body: str, scenarios: Sequence[str]) -> str:
    """``body`` plus what ``old_section`` reported for scenarios this run did not measure: their
    tables (marked as from the earlier run) and their idle-call rows, kept verbatim."""
    when = re.search(r"Run started (\S+ [0-9:]+)", old_section)
    earlier = when.group(1) if when else "an earlier run"
    kept = [
        m.group(0).rstrip()
        for m in _SUBSECTION.finditer(old_section)
        if m.group(1) not in scenarios
    ]
    idle_rows = [
        m.group(0)
        for m in _IDLE_ROW.finditer(old_section.split("Idle calls", 1)[-1])
        if m.group(1).strip() not in scenarios
    ]
    if not kept and not idle_rows:
        return body
    parts = body.rstrip().split("\nIdle calls", 1)
    out = parts[0].rstrip() + "\n"
    for block in kept:
        head, _, rest = block.partition("\n")
        out += f"\n{head}\n\n(Not re-run: from the run started {earlier}.)\n{rest.rstrip()}\n"
    if len(parts) > 1:
        out += "\nIdle calls" + parts[1].rstrip() + "\n"
        out += "".join(row + "\n" for row in idle_rows)
    elif idle_rows:
        out += "\nIdle calls (from the run started " + earlier + "):\n\n"
        out += "| system | scenario | idle calls | RSS per idle call | server RSS | server CPU |\n"
        out += "|---|---|---:|---:|---:|---:|\n" + "".join(row + "\n" for row in idle_rows)
    return out


def write_docs(result: dict[str, Any], docs_dir: Path) -> list[Path]:
    """Write the charts and the docs section; a scenario this run did not measure keeps what
    the section said about it (another scenario can be re-run alone)."""
    written: list[Path] = []
    images: dict[str, str] = {}
    for scenario in result.get("scenarios", []):
        path = docs_dir / "img" / f"echo-load-{scenario}.png"
        if chart(result, scenario, path):
            images[scenario] = f"img/{path.name}"
            written.append(path)
    perf = docs_dir / "performance.md"
    text = perf.read_text() if perf.exists() else "# Performance\n"
    body = markdown(result, images)
    old = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", text, re.S | re.M)
    if old is not None:
        body = keep_other_scenarios(old.group(0), body, list(result.get("scenarios", [])))
    perf.write_text(replace_section(text, body))
    written.append(perf)
    return written
