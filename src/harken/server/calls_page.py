"""The call-records pages of the web UI: ``/calls`` lists calls, ``/calls/{id}`` shows one.

A call's page has its metadata, a **timeline chart** per turn (inline SVG, no script: one bar
per stage — endpoint wait, STT, engine, TTS and egress, playback — on a shared millisecond axis
from the caller's speech end) and the **transcript**: the caller's words, and the agent's words
with the part the caller never heard (cut off by a barge-in) struck through. ``/api/calls`` and
``/api/calls/{id}`` answer the same as JSON. Pages read from the worker's call-record store.
"""

from __future__ import annotations

import html
import time
from typing import Any, Final

from aiohttp import web

from harken.records.model import CallDetail, TurnRecord, to_jsonable
from harken.records.store import CallStore

__all__ = ["STORE_KEY", "add_routes"]

STORE_KEY: Final = web.AppKey("calls_store", CallStore)

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:62rem;color:#1d2330;
padding:0 1rem}
h1{font-size:1.4rem}table{border-collapse:collapse;width:100%}
td,th{padding:.35rem .6rem;border-bottom:1px solid #e3e6ec;text-align:left}
th{font-weight:600;color:#5a6272}a{color:#2456d3;text-decoration:none}
.turn{border:1px solid #e3e6ec;border-radius:8px;padding:.8rem 1rem;margin:1rem 0}
.who{font-weight:600;color:#5a6272;margin-right:.4rem}.cut{color:#b0b6c2;text-decoration:line-through}
.meta{color:#5a6272;font-size:.9rem}.tag{background:#fde8e8;color:#a32020;border-radius:4px;
padding:0 .35rem;font-size:.8rem;margin-left:.4rem}
"""

#: (label, start key, end key, colour) of the chart's bars, keys of TurnRecord.timings
_BARS = (
    ("endpoint wait", "speech_end", "endpoint", "#8fb3ff"),
    ("STT final", "endpoint", "stt_final", "#6fcf97"),
    ("engine + LLM", "trigger", "tts_request", "#f2c94c"),
    ("TTS + egress", "tts_request", "first_audio_out", "#f2994a"),
    ("playback", "first_audio_out", "playback_done", "#bdbdbd"),
)


def add_routes(app: web.Application, store: CallStore) -> None:
    app[STORE_KEY] = store
    app.add_routes(
        [
            web.get("/calls", calls_list),
            web.get("/calls/{call_id}", call_page),
            web.get("/api/calls", api_calls),
            web.get("/api/calls/{call_id}", api_call),
        ]
    )


def _page(title: str, body: str) -> web.Response:
    text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )
    return web.Response(text=text, content_type="text/html")


def _when(epoch: float | None) -> str:
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


async def calls_list(request: web.Request) -> web.Response:
    limit = min(500, max(1, int(request.query.get("limit", "50"))))
    calls = await request.app[STORE_KEY].list_calls(limit)
    rows = "".join(
        f"<tr><td><a href='/calls/{html.escape(c.call_id)}'>{html.escape(c.call_id)}</a></td>"
        f"<td>{_when(c.started_at)}</td><td>{html.escape(c.carrier)}</td>"
        f"<td>{'' if c.duration_s is None else f'{c.duration_s:.0f} s'}</td><td>{c.turns}</td>"
        f"<td>{html.escape(c.outcome or 'live')}</td></tr>"
        for c in calls
    )
    head = "<tr><th>call</th><th>started</th><th>carrier</th><th>duration</th><th>turns</th>"
    body = f"<h1>Calls</h1><table>{head}<th>outcome</th></tr>{rows}</table>"
    return _page("harken calls", body)


async def _detail(request: web.Request) -> CallDetail:
    detail = await request.app[STORE_KEY].get_call(request.match_info["call_id"])
    if detail is None:
        raise web.HTTPNotFound(text="no such call")
    return detail


async def call_page(request: web.Request) -> web.Response:
    d = await _detail(request)
    info = d.info
    outcome = d.end.outcome if d.end is not None else "live"
    meta = (
        f"<p class='meta'>{html.escape(info.carrier)} · started {_when(info.started_at)} · "
        f"{html.escape(outcome)} · agent {html.escape(info.agent)}"
        f"{' · from ' + html.escape(info.from_number) if info.from_number else ''}</p>"
    )
    turns = "".join(_turn(t) for t in d.turns)
    events = "".join(
        f"<li>{_when(e.at)} {html.escape(e.kind)} {html.escape(str(e.data) if e.data else '')}</li>"
        for e in d.events
    )
    body = (
        f"<p><a href='/calls'>← calls</a></p><h1>Call {html.escape(info.call_id)}</h1>{meta}"
        f"{turns}<h2>Events</h2><ul>{events or '<li>none</li>'}</ul>"
    )
    return _page(f"call {info.call_id}", body)


def _turn(t: TurnRecord) -> str:
    spoken, heard = t.assistant_spoken, t.assistant_heard
    if t.interrupted and heard is not None and spoken.startswith(heard):
        agent = f"{html.escape(heard)}<span class='cut'>{html.escape(spoken[len(heard) :])}</span>"
    else:
        agent = html.escape(spoken)
    tag = "<span class='tag'>interrupted</span>" if t.interrupted else ""
    user = (
        f"<div><span class='who'>caller</span>{html.escape(t.user_text)}</div>"
        if t.user_text
        else ""
    )
    v2v = t.timings.get("voice_to_voice_ms")
    rule = t.timings.get("endpoint_rule")
    facts = " · ".join(
        x
        for x in (
            f"#{t.index} {t.kind}",
            f"voice-to-voice {v2v:.0f} ms" if isinstance(v2v, int | float) else "",
            f"endpoint by {rule}" if rule else "",
            f"playback by {t.timings.get('playback_strategy')}"
            if t.timings.get("playback_strategy")
            else "",
        )
        if x
    )
    return (
        f"<div class='turn'><div class='meta'>{html.escape(facts)}</div>{user}"
        f"<div><span class='who'>agent</span>{agent}{tag}</div>{_chart(t.timings)}</div>"
    )


def _chart(timings: dict[str, Any], width: int = 640) -> str:
    """One row per stage on a ms axis from the turn's first known instant."""
    bars = [
        (label, timings.get(a), timings.get(b), colour)
        for label, a, b, colour in _BARS
        if isinstance(timings.get(a), int | float) and isinstance(timings.get(b), int | float)
    ]
    if not bars:
        return ""
    start = min(float(a) for _, a, _, _ in bars)  # type: ignore[arg-type]
    end = max(float(b) for _, _, b, _ in bars)  # type: ignore[arg-type]
    span = max(end - start, 1.0)
    left, row = 110, 18
    scale = (width - left - 70) / span
    parts = []
    for i, (label, a, b, colour) in enumerate(bars):
        x = left + (float(a) - start) * scale  # type: ignore[arg-type]
        w = max(2.0, (float(b) - float(a)) * scale)  # type: ignore[arg-type]
        y = 4 + i * row
        parts.append(
            f"<text x='0' y='{y + 12}' font-size='11' fill='#5a6272'>{label}</text>"
            f"<rect x='{x:.1f}' y='{y}' width='{w:.1f}' height='13' rx='2' fill='{colour}'/>"
            f"<text x='{x + w + 4:.1f}' y='{y + 11}' font-size='10' fill='#5a6272'>"
            f"{float(b) - float(a):.0f} ms</text>"  # type: ignore[arg-type]
        )
    height = 8 + len(bars) * row
    return f"<svg width='{width}' height='{height}' role='img'>{''.join(parts)}</svg>"


async def api_calls(request: web.Request) -> web.Response:
    limit = min(500, max(1, int(request.query.get("limit", "50"))))
    calls = await request.app[STORE_KEY].list_calls(limit)
    return web.json_response([to_jsonable(c) for c in calls])


async def api_call(request: web.Request) -> web.Response:
    return web.json_response(to_jsonable(await _detail(request)))
