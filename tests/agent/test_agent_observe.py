"""The call observer: turn histograms, call records and OpenTelemetry spans from engine hooks."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from harken.agent.observe import CallObserver
from harken.conversation.record import ReplyRecord
from harken.server import metrics


class FakeRecorder:
    def __init__(self) -> None:
        self.items: list[tuple[str, Any]] = []

    def start(self, info: Any) -> bool:
        self.items.append(("start", info))
        return True

    def turn(self, rec: Any) -> bool:
        self.items.append(("turn", rec))
        return True

    def event(self, ev: Any) -> bool:
        self.items.append(("event", ev))
        return True

    def end(self, end: Any) -> bool:
        self.items.append(("end", end))
        return True


def record(t0: float) -> ReplyRecord:
    return ReplyRecord(
        "turn",
        "a table for four",
        t_trigger=t0 + 1.30,
        t_first_text=t0 + 1.301,
        t_first_audio=t0 + 1.45,
        spoken="Great, for four.",
        heard="Great,",
        interrupted=True,
        t_speech_end=t0 + 1.0,
        t_endpoint=t0 + 1.2,
        endpoint_rule="model",
        t_first_piece=t0 + 1.3005,
        t_played=t0 + 2.0,
        playback_strategy="interrupted",
        t_bargein_onset=t0 + 1.8,
        t_bargein_stopped=t0 + 1.96,
    )


def count(stage: str) -> float:
    for family in metrics.TURN_SECONDS.collect():
        for sample in family.samples:
            if sample.name.endswith("_count") and sample.labels.get("stage") == stage:
                return sample.value
    return 0.0


def test_observer_feeds_histograms_records_and_spans() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = FakeRecorder()
    obs = CallObserver(
        recorder,  # type: ignore[arg-type]
        "CA1",
        agent="flow:test",
        info={"from": "+1555", "to": "+1666", "x": "y"},
        tracer=provider.get_tracer("t"),
    )
    before = {s: count(s) for s in ("endpoint_wait", "voice_to_voice", "engine")}
    obs.call_started(100.0, {"carrier": "twilio"})
    obs.reply_done(record(100.0))
    obs.event("barge_in", {"stop_ms": 160.0})
    obs.call_ended("hangup")
    for stage, n in before.items():
        assert count(stage) == n + 1, stage

    kinds = [k for k, _ in recorder.items]
    assert kinds == ["start", "turn", "event", "end"]
    info = recorder.items[0][1]
    assert (info.carrier, info.from_number, info.metadata) == ("twilio", "+1555", {"x": "y"})
    turn = recorder.items[1][1]
    assert turn.index == 0 and turn.interrupted and turn.assistant_heard == "Great,"
    t = turn.timings
    assert t["speech_end"] == 1000.0 and t["endpoint"] == 1200.0 and t["endpoint_rule"] == "model"
    assert t["voice_to_voice_ms"] == 450.0 and t["bargein_stop_ms"] == 160.0

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"harken.call", "harken.turn"}
    call, turn_span = spans["harken.call"], spans["harken.turn"]
    assert turn_span.parent is not None and turn_span.parent.span_id == call.context.span_id
    names = [e.name for e in turn_span.events]
    assert names[:3] == ["endpoint", "stt_final", "llm_first_token"] and "bargein_onset" in names
    assert turn_span.end_time - turn_span.start_time == 1_000_000_000  # speech end -> played
    assert turn_span.attributes["harken.turn.heard"] == "Great,"
    assert call.attributes["harken.call.outcome"] == "hangup"
