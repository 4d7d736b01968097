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
    Histogram,
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
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0, 1.5,
                    2.0, 3.0, 5.0)  # fmt: skip
TURN_SECONDS = Histogram(
    "harken_turn_stage_seconds",
    "Per-turn latency by stage: endpoint_wait (speech end -> turn end), stt_final (turn end -> "
    "final transcript), llm_first_token (final -> the brain's first words), engine (final -> "
    "first TTS request), tts_first_audio (first clause -> synthesised audio), egress (TTS "
    "request -> first audio on the wire), voice_to_voice (speech end -> first audio on the wire)",
    ["stage"],
    buckets=_LATENCY_BUCKETS,
)
BARGE_IN_STOP = Histogram(
    "harken_bargein_stop_seconds",
    "Caller speech onset over the agent -> agent audio stopped (held or cleared)",
    buckets=_LATENCY_BUCKETS,
)
INTERRUPTIONS = Counter("harken_interruptions_total", "Agent replies cut off by the caller")
FALSE_INTERRUPTIONS = Counter(
    "harken_false_interruptions_total",
    "Caller speech over the agent that held its audio but was a backchannel (audio resumed)",
)
PROVIDER_ERRORS = Counter(
    "harken_provider_errors_total", "Failures of a model or remote provider", ["provider"]
)
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
