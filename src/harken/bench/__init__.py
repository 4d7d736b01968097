"""Benchmarks behind ``harken bench NAME``.

Each bench is a module with three functions::

    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> dict[str, object]: ...   # the figures, JSON-ready
    def report(result: dict[str, object]) -> str: ...             # human-readable text

``harken bench NAME --json`` prints ``run``'s dict as one JSON object; without ``--json`` it prints
``report``'s text. Register new benches in :data:`BENCHES`.
"""

from __future__ import annotations

BENCHES: dict[str, tuple[str, str]] = {
    "pipeline": (
        "harken.bench.pipeline",
        "frame routing cost, idle-call memory and tasks per call",
    ),
    "audio": ("harken.bench.audio", "media-plane DSP: G.711, resampling, jitter buffer, DTMF"),
    "speech": ("harken.bench.speech", "offline speech stack: VAD CPU, turn detection, STT, TTS"),
    "echo": ("harken.bench.echo", "carrier-shaped load on the server (vs pipecat): RTT, CPU, RSS"),
    "conversation": (
        "harken.bench.conversation",
        "conversation engine overhead: final transcript -> first TTS request",
    ),
}
