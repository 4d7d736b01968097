"""The conversation agent: what ``agent.kind: conversation`` (the embedded default) runs per call.

Per process (built once by :class:`ConversationAgent` from the config, models loaded by
:meth:`ConversationAgent.warm_up` before the worker takes calls):

* the flow (``agent.flow``: a built-in name such as ``restaurant`` or a YAML path), compiled once;
* the tool box: ``end_call``, ``transfer_call`` and the demo tools the flow uses;
* an :class:`~harken.llm.LLMClient` when ``agent.llm.base_url`` is set — then the LLM agent
  answers, with the same tools, and the flow's greeting and persona;
* the STT engine (Whisper ``tiny.en`` by default) and the TTS engine (Piper when installed,
  else espeak-ng), shared by all calls.

Per call::

    VadStage -> SttService(pass_audio) -> TurnStage -> ConversationEngine -> TtsService

(then the transport's output stage). The turn stage sits after STT so it hears the audio *and*
sees the transcripts (its text veto).
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harken.agent.observe import CallObserver
from harken.conversation import (
    BargeInParams,
    ConversationEngine,
    EngineSettings,
    FlowBrain,
    ToolBox,
    ToolContext,
    builtin_tools,
)
from harken.conversation.tools import Tool
from harken.errors import ConfigError
from harken.pipeline import Stage
from harken.protocols.events import StreamStarted
from harken.server.config import AgentConfig

if TYPE_CHECKING:
    from harken.agent.flow import FlowAgent
    from harken.llm import LLMClient
    from harken.records import CallRecorder
    from harken.speech.stt.base import StreamingSttEngine, SttEngine
    from harken.speech.tts.base import TtsEngine

__all__ = ["ConversationAgent", "demo_toolbox", "load_flow"]

log = logging.getLogger("harken.agent")

_DEFAULT_PERSONA = (
    "You are the friendly phone agent of {name}. Keep every answer short and natural for "
    "speech: one or two sentences, no lists, no markdown. Use the tools to act; say goodbye and "
    "call end_call when the caller is done."
)


def load_flow(spec: str) -> FlowAgent:
    """A built-in flow by name, or a flow YAML file by path."""
    from harken.agent.flow import FlowAgent

    if spec.endswith((".yaml", ".yml")) or os.sep in spec:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"agent.flow: no flow file at {spec}")
        return FlowAgent.from_yaml(path)
    return FlowAgent.builtin(spec)


def demo_toolbox(transfer_targets: list[str]) -> ToolBox:
    """The built-in call controls plus the demo flow's tools (booking a table)."""
    from harken.agent.flow import demo_tools

    box = ToolBox(builtin_tools(transfer_targets))
    for schema in demo_tools.TOOL_SCHEMAS:
        fn = schema["function"]
        box.add(
            Tool(fn["name"], fn["description"], fn["parameters"], getattr(demo_tools, fn["name"]))
        )
    return box


class ConversationAgent:
    """Per-process agent: builds each call's stages (see the module docstring)."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.flow = load_flow(config.flow)
        self.tools = demo_toolbox(list(config.transfer_targets))
        missing = sorted(self.flow.tool_names - self.tools.names())
        if missing:
            raise ConfigError(f"agent.flow uses tools that do not exist: {missing}")
        self.llm: LLMClient | None = _llm_client(config) if config.llm.base_url else None
        #: set by the worker once its call-record store is open (None: no records)
        self.recorder: CallRecorder | None = None
        #: set by the worker when observability.otel is enabled (an OpenTelemetry tracer)
        self.tracer: Any = None
        #: set by the worker from records.wav_dir: a stereo recording per call there
        self.wav_dir = ""
        self.stt: SttEngine | StreamingSttEngine = _stt_engine(config)
        self.tts: TtsEngine = _tts_engine(config)
        self.settings = EngineSettings(
            greeting=config.greeting,
            barge_in=BargeInParams(
                enabled=config.barge_in.enabled,
                interrupt_min_s=config.barge_in.min_ms / 1000,
                interrupt_min_words=config.barge_in.min_words,
            ),
            idle_s=config.idle.after_s,
            idle_prompts=config.idle.prompts,
            idle_goodbye=config.idle.goodbye,
            max_duration_s=config.max_duration_s,
            preemptive=config.preemptive,
        )
        from harken.speech.tts.cache import CachedEngine

        if isinstance(self.tts, CachedEngine) and self.llm is None:
            # the flow's fixed lines are known: render their clauses before the first call (a
            # first clause runs to 6 words: "There's free parking behind the restaurant")
            self.tts.max_chars = max(self.tts.max_chars, 64)
            self.tts.phrases += fixed_clauses(
                self.flow.fixed_lines(), self.tts.max_chars, self.settings.first_clause_words
            )

    async def warm_up(self) -> None:
        """Load every model once, before the worker takes its first call."""
        from harken.speech import warm_up as speech_warm_up

        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, lambda: speech_warm_up(turn=self.config.turn.model))
        if self.config.turn.model:
            from harken.speech.turn import default_turn_pool

            default_turn_pool().max_busy = self.config.turn.max_cpu
        await self.stt.warm_up()
        await self.tts.warm_up()

    def brain(self, ctx: ToolContext, observer: CallObserver | None = None) -> Any:
        if self.llm is None:
            return FlowBrain.for_call(self.flow, self.tools, ctx)
        from harken.conversation.llm_brain import LLMBrain

        c = self.config.llm
        greeting = c.greeting or self.flow.session().start().say[0]
        prompt = c.system_prompt or _DEFAULT_PERSONA.format(name=self.flow.name)

        def failed(exc: BaseException) -> None:
            if observer is not None:
                observer.event("error", {"provider": "llm", "error": str(exc)[:300]})

        return LLMBrain(
            self.llm, self.tools, ctx, system_prompt=prompt, greeting=greeting, on_error=failed
        )

    def __call__(self, info: StreamStarted, rate_in: int, rate_out: int) -> list[Stage]:
        from harken.speech.stt.service import SttService
        from harken.speech.tts.service import TtsService
        from harken.speech.turn import TurnParams, TurnStage
        from harken.speech.vad import VadStage
        from harken.speech.vad_segment import VadParams

        c = self.config
        ctx = ToolContext(call_id=info.call_id or info.stream_id or "")
        vad = VadStage(
            VadParams(
                threshold=c.vad.threshold,
                start_ms=c.vad.start_ms,
                stop_ms=c.vad.stop_ms,
                min_volume_dbfs=c.vad.min_volume_dbfs,
            )
        )
        stt = SttService(self.stt, pass_audio=True)
        numbers = {"from": info.from_number or "", "to": info.to_number or ""}
        observer = CallObserver(
            self.recorder,
            ctx.call_id,
            agent="llm" if self.llm is not None else f"flow:{self.flow.name}",
            info={**numbers, **info.custom_parameters},
            tracer=self.tracer,
        )
        brain = self.brain(ctx, observer)
        turn = TurnStage(
            TurnParams(
                model=c.turn.model,
                threshold=c.turn.threshold,
                text=c.turn.text,
                silence_s=c.turn.silence_ms / 1000,
                unsure_s=c.turn.unsure_ms / 1000,
                opener_s=c.turn.opener_ms / 1000,
                fallback_s=c.turn.fallback_ms / 1000,
                wait_text_s=c.turn.wait_text_ms / 1000,
                min_dbfs=c.vad.min_volume_dbfs,
                entry=c.turn.entry,
                partial_s=c.turn.partial_ms / 1000,
                pace_max_s=c.turn.pace_max_ms / 1000,
            ),
            entry=getattr(brain, "text_entry", None),
        )
        tts = TtsService(self.tts, sample_rate=rate_out)

        def tts_delay(uid: int) -> float | None:
            rec = tts.record(uid)
            return None if rec is None else rec.first_audio_s

        engine = ConversationEngine(
            brain,
            self.settings,
            heard=tts.heard_text,
            tts_delay=tts_delay,
            hooks=observer,
        )
        stages: list[Stage] = [vad, stt, turn, engine, tts]
        if self.wav_dir:
            from harken.agent.recording import RecordingTap

            stages.insert(0, RecordingTap(self.wav_dir, ctx.call_id))
        return stages


def _llm_client(config: AgentConfig) -> LLMClient:
    from harken.llm import LLMClient

    c = config.llm
    key = c.api_key or os.environ.get("HARKEN_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY", "")
    return LLMClient(
        c.base_url,
        c.model,
        key,
        first_token_timeout_s=c.first_token_timeout_s,
        max_retries=c.max_retries,
        temperature=c.temperature,
        max_tokens=c.max_tokens,
    )


def _stt_engine(config: AgentConfig) -> SttEngine | StreamingSttEngine:
    c = config.stt
    if c.engine == "whisper":
        from harken.speech.stt.whisper import WhisperEngine

        return WhisperEngine()
    if c.engine == "sphinx":
        from harken.speech.stt.sphinx import SphinxEngine

        return SphinxEngine()
    if c.engine == "deepgram":
        from harken.speech.stt.deepgram import DeepgramEngine

        return DeepgramEngine(c.api_key or None, url=c.base_url or None)
    from harken.speech.stt.openai import OpenAITranscriptionEngine

    return OpenAITranscriptionEngine(
        c.api_key or None, base_url=c.base_url or None, model=c.model or "whisper-1"
    )


def _tts_engine(config: AgentConfig) -> TtsEngine:
    from harken.speech.tts import create_engine

    c = config.tts
    options: dict[str, Any] = {}
    if c.engine in ("openai", "cartesia"):
        options = {k: v for k, v in (("api_key", c.api_key), ("base_url", c.base_url)) if v}
        if c.model:
            options["model"] = c.model
        if c.voice:
            options["voice"] = c.voice
    return create_engine(c.engine, cache=True, **options)


def fixed_clauses(lines: list[str], max_chars: int, first_words: int) -> tuple[str, ...]:
    """The clauses the engine's chunker cuts ``lines`` into (each line as a reply of its own:
    every reply starts with one of them), those short enough for the TTS phrase cache."""
    from harken.conversation.chunker import ClauseChunker

    out: list[str] = []
    for line in lines:
        chunker = ClauseChunker(first_max_words=first_words)
        out += [c for c in (*chunker.push(line), *chunker.flush()) if len(c) <= max_chars]
    return tuple(dict.fromkeys(out))
