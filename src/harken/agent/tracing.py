"""Optional OpenTelemetry spans per call and per turn (off by default; the ``otel`` extra).

With ``observability.otel.enabled: true`` every call becomes a ``harken.call`` span and each
agent reply a child ``harken.turn`` span, from the caller's speech end (or the reply's trigger)
to playback resolved, with the timeline as span events (``endpoint``, ``stt_final``,
``llm_first_token``, ``tts_request``, ``first_audio_out``, ``bargein``) and the texts, latencies
and rules as attributes. Spans are built from the engine's recorded instants, after the fact, so
nothing is traced on the hot path. The exporter is ``otlp`` (HTTP, to ``endpoint``) or
``console``; :func:`init_tracing` installs it once per process.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from harken.conversation.record import ReplyRecord
from harken.errors import ConfigError

__all__ = ["CallTracer", "init_tracing"]

log = logging.getLogger("harken.tracing")

_EVENTS = (
    ("endpoint", "t_endpoint"),
    ("stt_final", "t_trigger"),
    ("llm_first_token", "t_first_piece"),
    ("tts_request", "t_first_text"),
    ("first_audio_out", "t_first_audio"),
    ("bargein_onset", "t_bargein_onset"),
    ("bargein_stopped", "t_bargein_stopped"),
)


def init_tracing(exporter: str = "otlp", endpoint: str = "", service: str = "harken") -> Any:
    """Install a tracer provider with a batch exporter; returns the tracer."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )
    except ImportError as exc:
        raise ConfigError(
            "observability.otel needs the 'otel' extra (pip install 'harken[otel]')"
        ) from exc
    span_exporter: SpanExporter
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter(endpoint=endpoint) if endpoint else OTLPSpanExporter()
    else:
        raise ConfigError(f"observability.otel.exporter {exporter!r}: choose otlp or console")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    return trace.get_tracer("harken")


class CallTracer:
    """The spans of one call. ``tracer`` is an OpenTelemetry tracer."""

    __slots__ = ("_call", "_ctx", "offset_ns", "tracer")

    def __init__(self, tracer: Any, call_id: str, attributes: dict[str, Any]) -> None:
        from opentelemetry import trace

        self.tracer = tracer
        # perf_counter seconds -> epoch nanoseconds (the engine's instants are perf_counter)
        self.offset_ns = time.time_ns() - int(time.perf_counter() * 1e9)
        self._call = tracer.start_span(
            "harken.call", attributes={"harken.call_id": call_id, **_flat(attributes)}
        )
        self._ctx = trace.set_span_in_context(self._call)

    def _ns(self, t: float) -> int:
        return self.offset_ns + int(t * 1e9)

    def turn(self, record: ReplyRecord, index: int) -> None:
        start = record.t_speech_end if record.t_speech_end is not None else record.t_trigger
        end = record.t_played or record.t_first_audio or record.t_first_text or record.t_trigger
        span = self.tracer.start_span(
            "harken.turn",
            context=self._ctx,
            start_time=self._ns(start),
            attributes=_flat(
                {
                    "harken.turn.index": index,
                    "harken.turn.kind": record.kind,
                    "harken.turn.user_text": record.user_text,
                    "harken.turn.spoken": record.spoken,
                    "harken.turn.heard": record.heard or "",
                    "harken.turn.interrupted": record.interrupted,
                    "harken.turn.endpoint_rule": record.endpoint_rule,
                    "harken.turn.playback_strategy": record.playback_strategy,
                    "harken.turn.voice_to_voice_ms": record.voice_to_voice_ms,
                    "harken.turn.engine_ms": record.engine_ms,
                    "harken.turn.tts_first_audio_ms": record.tts_first_audio_ms,
                }
            ),
        )
        for name, attr in _EVENTS:
            t = getattr(record, attr)
            if t is not None:
                span.add_event(name, timestamp=self._ns(t))
        span.end(end_time=self._ns(max(end, start)))

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self._call.add_event(kind, attributes=_flat(data))

    def end(self, reason: str) -> None:
        self._call.set_attribute("harken.call.outcome", reason)
        self._call.end()


def _flat(values: dict[str, Any]) -> dict[str, Any]:
    """Attribute values OpenTelemetry accepts (scalars); None dropped, others stringified."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = value if isinstance(value, str | bool | int | float) else str(value)
    return out
