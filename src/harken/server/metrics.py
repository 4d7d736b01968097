"""Prometheus metrics of a harken server.

With several workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by the supervisor before the workers
start, and ``/metrics`` aggregates every worker's values (prometheus_client's multiprocess mode).
Hot paths never touch a metric per frame: per-call counts are added when the call ends.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)

ACTIVE_CALLS = Gauge("harken_active_calls", "Calls in progress", multiprocess_mode="livesum")
CALLS = Counter("harken_calls_total", "Calls finished", ["carrier", "outcome"])
REFUSED = Counter("harken_calls_refused_total", "Media streams refused", ["reason"])
PROTOCOL_ERRORS = Counter(
    "harken_protocol_errors_total", "Malformed carrier messages (each ended its call)", ["carrier"]
)
PLAYBACK = Counter(
    "harken_playback_completions_total",
    "Agent utterances resolved, by what resolved them",
    ["strategy"],
)
DEADMAN = Counter(
    "harken_deadman_fires_total", "Utterances resolved by the deadman timer (signal never came)"
)
DROPPED_AUDIO = Counter(
    "harken_dropped_audio_frames_total",
    "Audio frames dropped: full lanes (drop-oldest) and stale live audio after a stall",
)
HANGUPS = Counter("harken_hangups_total", "Agent-initiated hang-ups", ["carrier", "result"])
TRANSFERS = Counter("harken_transfers_total", "Agent-initiated transfers", ["carrier", "result"])
SIGNATURE_FAILURES = Counter(
    "harken_webhook_signature_failures_total", "Webhooks refused for a bad signature"
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type (all workers' values when multiprocess)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
