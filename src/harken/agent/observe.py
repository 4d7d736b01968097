"""One call's observer: the engine's hooks turned into Prometheus metrics and call records.

:class:`CallObserver` implements :class:`~harken.conversation.record.EngineHooks`. Per reply it
observes the per-stage latency histograms (``harken_turn_stage_seconds{stage=...}``,
``harken_bargein_stop_seconds``) and hands a :class:`~harken.records.TurnRecord` (both texts, the
timeline in ms from the call's start, the tools) to the process's
:class:`~harken.records.CallRecorder`, which writes it from its own thread as the call goes on
(so a crash loses at most the last moment). Everything here is a few dictionary operations and
a queue put: it runs on the event loop.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from harken.conversation.record import ReplyRecord
from harken.server import metrics

if TYPE_CHECKING:
    from harken.agent.tracing import CallTracer
    from harken.records import CallRecorder

__all__ = ["CallObserver"]

#: (histogram stage, start field, end field) of ReplyRecord
_STAGES = (
    ("endpoint_wait", "t_speech_end", "t_endpoint"),
    ("stt_final", "t_endpoint", "t_trigger"),
    ("llm_first_token", "t_trigger", "t_first_piece"),
    ("engine", "t_trigger", "t_first_text"),
    ("egress", "t_first_text", "t_first_audio"),
    ("voice_to_voice", "t_speech_end", "t_first_audio"),
)


class CallObserver:
    """Metrics and records of one call (see the module docstring)."""

    __slots__ = (
        "agent",
        "call_id",
        "carrier",
        "info",
        "recorder",
        "spans",
        "t0",
        "tracer",
        "turns",
        "wall0",
    )

    def __init__(
        self,
        recorder: CallRecorder | None,
        call_id: str,
        *,
        carrier: str = "",
        agent: str = "",
        info: dict[str, Any] | None = None,
        tracer: Any = None,
    ) -> None:
        self.recorder = recorder
        self.tracer = tracer  # an OpenTelemetry tracer (observability.otel), or None
        self.spans: CallTracer | None = None
        self.call_id = call_id
        self.carrier = carrier
        self.agent = agent
        self.info = info or {}
        self.t0 = 0.0
        self.wall0 = 0.0
        self.turns = 0

    def call_started(self, t0: float, metadata: dict[str, Any]) -> None:
        self.t0 = t0
        self.wall0 = time.time()
        self.carrier = self.carrier or str(metadata.get("carrier", ""))
        if self.tracer is not None:
            from harken.agent.tracing import CallTracer

            attributes = {"harken.carrier": self.carrier, "harken.agent": self.agent}
            self.spans = CallTracer(self.tracer, self.call_id, attributes)
        if self.recorder is not None:
            from harken.records import CallInfo

            self.recorder.start(
                CallInfo(
                    self.call_id,
                    self.carrier,
                    self.wall0,
                    from_number=str(self.info.get("from", "")),
                    to_number=str(self.info.get("to", "")),
                    agent=self.agent,
                    metadata={k: v for k, v in self.info.items() if k not in ("from", "to")},
                )
            )

    def reply_done(self, record: ReplyRecord) -> None:
        if record.kind == "turn":
            for stage, start, end in _STAGES:
                a, b = getattr(record, start), getattr(record, end)
                if a is not None and b is not None and b >= a:
                    metrics.TURN_SECONDS.labels(stage).observe(b - a)
        if record.tts_first_audio_ms is not None:
            metrics.TURN_SECONDS.labels("tts_first_audio").observe(record.tts_first_audio_ms / 1000)
        if record.t_bargein_onset is not None and record.t_bargein_stopped is not None:
            metrics.BARGE_IN_STOP.observe(
                max(0.0, record.t_bargein_stopped - record.t_bargein_onset)
            )
        if record.interrupted:
            metrics.INTERRUPTIONS.inc()
        self.turns += 1
        if self.spans is not None:
            self.spans.turn(record, self.turns - 1)
        if self.recorder is None:
            return
        from harken.records import TurnRecord

        self.recorder.turn(
            TurnRecord(
                self.call_id,
                self.turns - 1,
                record.kind,  # type: ignore[arg-type]
                user_text=record.user_text,
                assistant_spoken=record.spoken,
                assistant_heard=record.heard,
                interrupted=record.interrupted,
                timings=record.timeline_ms(self.t0),
                tools=[
                    {"name": t.name, "call_id": t.call_id, "result": t.result, "error": t.error}
                    for t in record.tools
                ],
            )
        )

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind == "backchannel" and data.get("held"):
            metrics.FALSE_INTERRUPTIONS.inc()
        elif kind == "error":
            metrics.PROVIDER_ERRORS.labels(str(data.get("provider", "unknown"))).inc()
        if self.spans is not None:
            self.spans.event(kind, data)
        if self.recorder is not None:
            from harken.records import CallEvent

            self.recorder.event(CallEvent(self.call_id, time.time(), kind, dict(data)))

    def call_ended(self, reason: str) -> None:
        if self.spans is not None:
            self.spans.end(reason)
        if self.recorder is not None:
            from harken.records import CallEnd

            now = time.time()
            self.recorder.end(CallEnd(self.call_id, now, reason, now - self.wall0))
