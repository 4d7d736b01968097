"""Server configuration: one YAML file, validated into frozen dataclasses.

Every field has a default, so an empty file (or none) runs the embedded default agent. Secrets may
come from the environment: ``TWILIO_AUTH_TOKEN``, ``TWILIO_ACCOUNT_SID``, ``TELNYX_API_KEY``,
``PLIVO_AUTH_ID``, ``PLIVO_AUTH_TOKEN``, ``HARKEN_STREAM_SECRET``.

Example::

    server:
      host: 0.0.0.0
      port: 8080            # HTTP: webhooks, /healthz, /readyz, /metrics
      media_port: 8081      # carrier media WebSockets
      public_url: https://voice.example.com   # how carriers reach us (TwiML stream URL)
      workers: 4
      max_calls: 500        # per worker
      drain_timeout_s: 300
    security:
      stream_secret: s3cret # required as customParameter "token" on every media stream
    carriers:
      twilio: {auth_token: ..., account_sid: ...}
    agent:
      kind: echo            # the embedded default for now
    playback:
      lead_ms: 80
      mark_interval_ms: 100
      deadman_margin_ms: 1000
    sip:
      port: 5060            # direct SIP/RTP over UDP (0 = off, the default)
      public_ip: 203.0.113.7  # advertised in Contact and SDP when behind NAT
      rtp_port_min: 20000
      rtp_port_max: 20999
    webrtc:
      enabled: true         # browser calls: POST /webrtc/offer, the playground page at /
      ice_servers: [stun:stun.example.com:3478]   # none: host candidates only (LAN)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from harken import yamlconf
from harken.errors import ConfigError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    media_port: int = 8081
    public_url: str = ""
    workers: int = 1
    max_calls: int = 500
    drain_timeout_s: float = 300.0
    loop: Literal["auto", "uvloop", "asyncio"] = "auto"  # auto: uvloop when installed


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    stream_secret: str = ""


@dataclass(frozen=True, slots=True)
class TwilioConfig:
    account_sid: str = ""
    auth_token: str = ""
    api_base: str = "https://api.twilio.com"


@dataclass(frozen=True, slots=True)
class TelnyxConfig:
    api_key: str = ""
    api_base: str = "https://api.telnyx.com"


@dataclass(frozen=True, slots=True)
class PlivoConfig:
    auth_id: str = ""
    auth_token: str = ""
    api_base: str = "https://api.plivo.com"


@dataclass(frozen=True, slots=True)
class CarriersConfig:
    twilio: TwilioConfig = field(default_factory=TwilioConfig)
    telnyx: TelnyxConfig = field(default_factory=TelnyxConfig)
    plivo: PlivoConfig = field(default_factory=PlivoConfig)


@dataclass(frozen=True, slots=True)
class LLMConfig:
    """An OpenAI-compatible chat endpoint; ``base_url`` set switches to the LLM agent."""

    base_url: str = ""
    model: str = "gpt-4o-mini"
    api_key: str = ""  # or $HARKEN_LLM_API_KEY / $OPENAI_API_KEY
    system_prompt: str = ""  # "" = the flow's built-in persona prompt
    greeting: str = ""  # "" = the flow's greeting
    temperature: float = 0.6
    max_tokens: int = 300
    first_token_timeout_s: float = 8.0
    max_retries: int = 2


@dataclass(frozen=True, slots=True)
class SttConfig:
    engine: Literal["whisper", "sphinx", "deepgram", "openai"] = "whisper"
    base_url: str = ""
    api_key: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class TtsConfig:
    #: auto = Piper if installed, else espeak-ng
    engine: Literal["auto", "piper", "espeak", "openai", "cartesia"] = "auto"
    voice: str = ""
    base_url: str = ""
    api_key: str = ""
    model: str = ""


@dataclass(frozen=True, slots=True)
class VadConfig:
    threshold: float = 0.5
    start_ms: float = 160.0
    stop_ms: float = 200.0
    min_volume_dbfs: float = -45.0


@dataclass(frozen=True, slots=True)
class TurnConfig:
    model: bool = True  # Smart Turn v3.2 on each VAD stop
    threshold: float = 0.5
    text: Literal["off", "veto", "vote"] = "vote"  # see harken.speech.endpoint
    silence_ms: int = 2000  # the backstop (nothing says complete, or the words trail off)
    unsure_ms: int = 1000  # the words read complete, the model is unsure
    opener_ms: int = 600  # the turn is only "Okay." / "Sorry," / "No, wait": wait at least this
    fallback_ms: int = 700  # no model verdict in time (load): a plain silence timer
    entry: bool = True  # weigh the brain's word on the words so far (dialogue-aware endpointing)
    partial_ms: int = 1200  # the brain says the answer is not whole yet: wait at least this
    pace_max_ms: int = 1200  # a caller who pauses mid-turn: wait that pause, at most this (0 off)
    wait_text_ms: int = 1000  # wait up to this long after a stop for the transcript up to it
    max_cpu: float = 0.25  # the turn model's share of one core per process, at most


@dataclass(frozen=True, slots=True)
class BargeInConfig:
    enabled: bool = True
    min_ms: int = 500  # caller speech this long over the agent interrupts...
    min_words: int = 2  # ...or this many words that are not backchannels


@dataclass(frozen=True, slots=True)
class IdleConfig:
    after_s: float = 8.0  # caller silence before a prompt (0 = never)
    prompts: int = 2  # idle prompts before the agent says goodbye and hangs up
    goodbye: str = "It seems you've stepped away. Goodbye!"


@dataclass(frozen=True, slots=True)
class AgentConfig:
    kind: Literal["conversation", "echo", "bench_vad"] = "conversation"
    utterance_ms: int = 1000  # echo: audio is grouped into utterances of this length
    flow: str = "restaurant"  # a built-in flow's name, or the path of a flow YAML file
    greeting: bool = True
    preemptive: bool = False  # LLM agent: start on the stable partial when the caller stops
    max_duration_s: float = 900.0
    transfer_targets: list[str] = field(default_factory=list)
    llm: LLMConfig = field(default_factory=LLMConfig)
    stt: SttConfig = field(default_factory=SttConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    barge_in: BargeInConfig = field(default_factory=BargeInConfig)
    idle: IdleConfig = field(default_factory=IdleConfig)


@dataclass(frozen=True, slots=True)
class PlaybackConfig:
    lead_ms: int = 80
    mark_interval_ms: int = 100
    deadman_margin_ms: int = 1000
    silence_tail_ms: int = 200
    #: "" = the carrier's natural one (mark where supported, else silence)
    strategy: Literal["", "mark", "drained", "silence"] = ""


@dataclass(frozen=True, slots=True)
class RecordsConfig:
    """Durable call records of the conversation agent (see docs/observability.md)."""

    enabled: bool = True
    sqlite_path: str = "harken-calls.db"  # used unless postgres_dsn is set
    postgres_dsn: str = ""  # e.g. postgresql://user@host/db (the 'postgres' extra)
    wav_dir: str = ""  # set: a stereo WAV per call here (caller left, agent right)


@dataclass(frozen=True, slots=True)
class OtelConfig:
    """OpenTelemetry spans per call and turn (the 'otel' extra); off by default."""

    enabled: bool = False
    exporter: Literal["otlp", "console"] = "otlp"
    endpoint: str = ""  # "" = the OTLP default (http://localhost:4318/v1/traces or $OTEL_*)
    service: str = "harken"


@dataclass(frozen=True, slots=True)
class SipConfig:
    """Direct SIP/RTP calls over UDP (see docs/sip.md); ``port: 0`` turns SIP off."""

    port: int = 0  # e.g. 5060
    host: str = ""  # "" = server.host
    public_ip: str = ""  # advertised in Contact and SDP (NAT); "" = the bound address
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999


@dataclass(frozen=True, slots=True)
class WebRtcConfig:
    """Browser calls over WebRTC and the playground page (see docs/webrtc.md); off by default."""

    enabled: bool = False
    playground: bool = True  # serve the page at / and /playground
    ice_servers: list[str] = field(default_factory=list)  # e.g. stun:stun.example.com:3478
    sample_rate_in: int = 16000  # what the agent hears
    sample_rate_out: int = 48000  # what the agent speaks
    jitter_capacity: int = 8  # aiortc's receive jitter buffer (packets, a power of two)
    jitter_prefetch: int = 1  # frames it holds before decoding (aiortc's own default: 4)
    connect_timeout_s: float = 15.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    carriers: CarriersConfig = field(default_factory=CarriersConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    playback: PlaybackConfig = field(default_factory=PlaybackConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)
    otel: OtelConfig = field(default_factory=OtelConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)


AGENT_KINDS = ("conversation", "echo", "bench_vad")
STT_ENGINES = ("whisper", "sphinx", "deepgram", "openai")
TTS_ENGINES = ("auto", "piper", "espeak", "openai", "cartesia")


def _build(cls: type[T], data: Any, where: str) -> T:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(fields)}")
    values: dict[str, Any] = {}
    for name in fields:
        if name not in data:
            continue
        value = data[name]
        default = getattr(cls(), name)
        if dataclasses.is_dataclass(default):
            values[name] = _build(type(default), value, f"{where}.{name}")
            continue
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise ConfigError(
                f"{where}.{name}: expected {expected.__name__}, got {type(value).__name__}"
            )
        values[name] = value
    return cls(**values)


def _env_overrides(config: Config) -> Config:
    env = os.environ
    tw = config.carriers.twilio
    tw = dataclasses.replace(
        tw,
        auth_token=tw.auth_token or env.get("TWILIO_AUTH_TOKEN", ""),
        account_sid=tw.account_sid or env.get("TWILIO_ACCOUNT_SID", ""),
    )
    tx = config.carriers.telnyx
    tx = dataclasses.replace(tx, api_key=tx.api_key or env.get("TELNYX_API_KEY", ""))
    pl = config.carriers.plivo
    pl = dataclasses.replace(
        pl,
        auth_id=pl.auth_id or env.get("PLIVO_AUTH_ID", ""),
        auth_token=pl.auth_token or env.get("PLIVO_AUTH_TOKEN", ""),
    )
    sec = dataclasses.replace(
        config.security,
        stream_secret=config.security.stream_secret or env.get("HARKEN_STREAM_SECRET", ""),
    )
    return dataclasses.replace(
        config, carriers=CarriersConfig(twilio=tw, telnyx=tx, plivo=pl), security=sec
    )


class _Invalid(ConfigError):
    """A cross-field check failed at ``path`` (located in the file by :func:`load`)."""

    def __init__(self, path: tuple[str, ...], message: str) -> None:
        super().__init__(f"{'.'.join(path)}: {message}")
        self.path = path


def validate(config: Config) -> Config:
    """Checks no single field's type can express; raises ConfigError naming the field."""
    s = config.server
    if not 0 <= s.port <= 65535:
        raise _Invalid(("server", "port"), "must be 0-65535")
    if not 0 <= s.media_port <= 65535:
        raise _Invalid(("server", "media_port"), "must be 0-65535")
    if s.port and s.port == s.media_port:
        raise _Invalid(("server", "media_port"), "server.port and server.media_port must differ")
    if s.workers < 1 or s.max_calls < 1:
        raise _Invalid(("server",), "server.workers and server.max_calls must be at least 1")
    if s.loop not in ("auto", "uvloop", "asyncio"):
        raise _Invalid(("server", "loop"), "choose auto, uvloop or asyncio")
    a = config.agent
    if a.kind not in AGENT_KINDS:
        raise _Invalid(("agent", "kind"), f"{a.kind!r} unknown; choose from {AGENT_KINDS}")
    if a.stt.engine not in STT_ENGINES:
        raise _Invalid(("agent", "stt", "engine"), f"choose from {STT_ENGINES}")
    if a.tts.engine not in TTS_ENGINES:
        raise _Invalid(("agent", "tts", "engine"), f"choose from {TTS_ENGINES}")
    if a.turn.text not in ("off", "veto", "vote"):
        raise _Invalid(("agent", "turn", "text"), "choose off, veto or vote")
    t = a.turn
    waits = (
        "silence_ms",
        "unsure_ms",
        "opener_ms",
        "fallback_ms",
        "wait_text_ms",
        "partial_ms",
        "pace_max_ms",
    )
    for name in waits:
        if getattr(t, name) < 0:
            raise _Invalid(("agent", "turn", name), "must be >= 0")
    if t.silence_ms <= 0:
        raise _Invalid(("agent", "turn", "silence_ms"), "must be > 0")
    if not 0 < t.max_cpu <= 1:
        raise _Invalid(("agent", "turn", "max_cpu"), "a share of one core, in (0, 1]")
    if a.barge_in.min_ms < 0:
        raise _Invalid(("agent", "barge_in", "min_ms"), "must be >= 0")
    if a.barge_in.min_words < 1:
        raise _Invalid(("agent", "barge_in", "min_words"), "must be >= 1")
    if a.idle.after_s < 0 or a.idle.prompts < 0:
        raise _Invalid(("agent", "idle"), "after_s and prompts must be >= 0")
    if a.max_duration_s < 0:
        raise _Invalid(("agent", "max_duration_s"), "must be >= 0")
    if not all(isinstance(t, str) and t for t in a.transfer_targets):
        raise _Invalid(("agent", "transfer_targets"), "a list of non-empty strings")
    if a.llm.base_url and not a.llm.base_url.startswith(("http://", "https://")):
        raise _Invalid(("agent", "llm", "base_url"), f"must be an http(s) URL: {a.llm.base_url!r}")
    p = config.playback
    if p.lead_ms < 20 or p.lead_ms > 100:
        raise _Invalid(
            ("playback", "lead_ms"), "playback.lead_ms must be between 20 and 100 (1-5 frames)"
        )
    if p.strategy not in ("", "mark", "drained", "silence"):
        raise _Invalid(("playback", "strategy"), f"playback.strategy {p.strategy!r} unknown")
    sip = config.sip
    if not 0 <= sip.port <= 65535:
        raise _Invalid(("sip", "port"), "must be 0-65535 (0 = SIP off)")
    if not 1024 <= sip.rtp_port_min < sip.rtp_port_max <= 65535:
        raise _Invalid(("sip", "rtp_port_min"), "need 1024 <= min < rtp_port_max <= 65535")
    w = config.webrtc
    if w.sample_rate_in not in (8000, 16000) or w.sample_rate_out not in (16000, 24000, 48000):
        raise _Invalid(("webrtc",), "sample_rate_in: 8000 or 16000; sample_rate_out: 16/24/48 kHz")
    if w.jitter_capacity not in (4, 8, 16, 32, 64) or w.jitter_prefetch not in range(5):
        raise _Invalid(("webrtc", "jitter_capacity"), "capacity 4-64 (a power of 2), prefetch 0-4")
    return config


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Read ``path`` (YAML; None for defaults), apply ``overrides`` ({"server": {...}}) and the
    environment, and validate. Every mistake names the file, line, column and field::

        agent.yaml:14:12: agent.turn.silence_ms: expected an integer, got 'fast'
    """
    located: yamlconf.Located | None = None
    config = Config()
    if path is not None:
        located = yamlconf.load_yaml(Path(path))
        if located.data is not None:
            config = yamlconf.build_dataclass(Config, located)
    for section, values in (overrides or {}).items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            part = getattr(config, section)
            _build(type(part), given, f"override {section}")  # type-checks the given keys
            config = dataclasses.replace(config, **{section: dataclasses.replace(part, **given)})
    try:
        return validate(_env_overrides(config))
    except _Invalid as exc:
        if located is None:
            raise
        raise ConfigError(f"{located.where(exc.path)}: {exc}") from None
