"""TTS time to first audio and real-time factor per local engine (``harken bench speech``: TTS).

What is timed is what a call sees: a :class:`~harken.speech.tts.TtsService` in a real
:class:`~harken.pipeline.Call` (output rate ``--tts-rate``, 8 kHz by default, the telephone rate);
the clock starts when the ``TextFrame`` is fed and stops when the first ``AudioFrame`` leaves the
bottom of the pipeline, so the lane hop, the executor hop, synthesis, resampling and framing are
all inside. Engines are warmed up first (their load time is reported separately).

* **short first clause** (``tts_first_audio_ms_*``): 1-3 word clauses ("Sure.", "Hello there,",
  ...), each ``--tts-repeats`` times; p50 and p95 per engine. The headline figure is the first
  engine measured: Piper when the ``piper`` extra is installed, else espeak-ng.
* **12-word sentence**: time to first audio and the real-time factor (synthesis seconds per
  second of audio, from the engine alone, so < 1 is faster than real time).
* **concurrent** (``--tts-concurrency`` calls starting a short clause at the same instant): p50
  time to first audio, which shows how the shared executor queues work.
* **CPU** (``cpu_ms_p50``): thread CPU time to synthesise one short clause, the time to first
  audio an idle core would give (load-independent, unlike the wall-clock figures).
* **cached**: the same short clauses through a :class:`~harken.speech.tts.CachedEngine` filled
  at warm-up (what recurring openers such as "Sure." get in production).

Figures are wall-clock on a shared machine: other processes' load moves them, so the load
average is reported next to them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

from harken.frames import AudioFrame, Frame, StartFrame, TextFrame, TTSStoppedFrame
from harken.pipeline import Call, Pipeline
from harken.speech.tts import (
    CachedEngine,
    EspeakEngine,
    PiperEngine,
    TtsEngine,
    TtsService,
    piper_available,
)

__all__ = ["add_arguments", "report", "report_tts", "run", "run_tts"]

SHORT_CLAUSES = (
    "Sure.",
    "Okay.",
    "Hello there,",
    "Got it.",
    "Of course!",
    "Let me check,",
    "Right away.",
    "Good morning!",
    "Thanks!",
    "One moment,",
)
SENTENCES = (  # twelve words each
    "I can book you a table for four at seven this evening.",
    "Your order has shipped and should arrive at your door on Thursday.",
    "Please hold on for a moment while I look up your account.",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tts-engines",
        default="auto",
        help="comma-separated engines to measure: piper, espeak (auto: both when Piper is "
        "installed, else espeak)",
    )
    parser.add_argument("--tts-repeats", type=int, default=3, help="runs of each short clause")
    parser.add_argument(
        "--tts-sentence-repeats", type=int, default=3, help="runs of each 12-word sentence"
    )
    parser.add_argument("--tts-rate", type=int, default=8000, help="transport output rate (Hz)")
    parser.add_argument(
        "--tts-concurrency", type=int, default=4, help="calls starting a clause at once"
    )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


class _Probe:
    """One call with a TtsService; times feed -> first AudioFrame for each clause."""

    def __init__(self, engine: TtsEngine, rate: int) -> None:
        self.rate = rate
        self.service = TtsService(engine)
        self.call = Call(Pipeline([self.service]), on_down=self._down)
        self._first = 0.0  # perf_counter of the clause's first audio frame; 0: none yet
        self._done: asyncio.Event = asyncio.Event()

    def _down(self, frame: Frame) -> None:
        if isinstance(frame, AudioFrame) and not self._first:
            self._first = time.perf_counter()
        elif isinstance(frame, TTSStoppedFrame):
            self._done.set()

    async def start(self) -> None:
        await self.call.start(StartFrame(sample_rate_out=self.rate))

    async def speak(self, text: str) -> float:
        """Seconds from feeding ``text`` to its first audio frame (waits for the whole clause)."""
        self._first = 0.0
        self._done.clear()
        t0 = time.perf_counter()
        self.call.feed(TextFrame(text))
        await asyncio.wait_for(self._done.wait(), 60)
        if not self._first:
            raise RuntimeError(f"no audio came out for {text!r}")
        return self._first - t0

    async def stop(self) -> None:
        self.call.end()
        await self.call.wait()


async def _rtf(engine: TtsEngine, text: str) -> tuple[float, float]:
    """(synthesis seconds, audio seconds) for the engine alone."""
    t0 = time.perf_counter()
    stream = engine.stream(text)
    async for _ in stream:
        pass
    return time.perf_counter() - t0, stream.duration_s


async def _bench_engine(engine: TtsEngine, args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    await engine.warm_up()
    load_s = time.perf_counter() - t0
    probe = _Probe(engine, args.tts_rate)
    await probe.start()
    short: list[float] = []
    for _ in range(args.tts_repeats):
        for clause in SHORT_CLAUSES:
            short.append(await probe.speak(clause))
    sentence: list[float] = []
    synth_s = audio_s = 0.0
    for _ in range(args.tts_sentence_repeats):
        for text in SENTENCES:
            sentence.append(await probe.speak(text))
            s, a = await _rtf(engine, text)
            synth_s += s
            audio_s += a
    await probe.stop()

    concurrent: list[float] = []
    n = max(1, args.tts_concurrency)
    probes = [_Probe(engine, args.tts_rate) for _ in range(n)]
    for p in probes:
        await p.start()
    for i in range(args.tts_repeats):
        clauses = [SHORT_CLAUSES[(i + k) % len(SHORT_CLAUSES)] for k in range(n)]
        concurrent += await asyncio.gather(
            *(p.speak(c) for p, c in zip(probes, clauses, strict=True))
        )
    for p in probes:
        await p.stop()

    # the same short clauses from a phrase cache filled at warm-up (what recurring openers get)
    cached_engine = CachedEngine(engine, phrases=SHORT_CLAUSES)
    await cached_engine.warm_up()
    probe = _Probe(cached_engine, args.tts_rate)
    await probe.start()
    cached = [await probe.speak(c) for _ in range(args.tts_repeats) for c in SHORT_CLAUSES]
    await probe.stop()

    # CPU time of one short clause's synthesis on this thread: the time to first audio an idle
    # core would give, whatever the machine's load
    cpu: list[float] = []
    synthesize = getattr(engine, "synthesize", None)
    if synthesize is not None:
        for clause in SHORT_CLAUSES:
            t = time.thread_time()
            synthesize(clause)
            cpu.append(time.thread_time() - t)

    ms = 1000.0
    return {
        "load_s": round(load_s, 3),
        "first_audio_ms_p50": round(statistics.median(short) * ms, 1),
        "first_audio_ms_p95": round(_pct(short, 0.95) * ms, 1),
        "first_audio_ms_min": round(min(short) * ms, 1),
        "sentence_first_audio_ms_p50": round(statistics.median(sentence) * ms, 1),
        "sentence_first_audio_ms_p95": round(_pct(sentence, 0.95) * ms, 1),
        "rtf": round(synth_s / audio_s, 4) if audio_s else float("nan"),
        f"concurrent{n}_first_audio_ms_p50": round(statistics.median(concurrent) * ms, 1),
        f"concurrent{n}_first_audio_ms_p95": round(_pct(concurrent, 0.95) * ms, 1),
        "cached_first_audio_ms_p50": round(statistics.median(cached) * ms, 1),
        "cpu_ms_p50": round(statistics.median(cpu) * ms, 1) if cpu else None,
        "samples": len(short),
    }


def _engines(spec: str) -> list[TtsEngine]:
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if names == ["auto"]:
        names = ["piper", "espeak"] if piper_available() else ["espeak"]
    engines: list[TtsEngine] = []
    for name in names:
        if name == "piper":
            engines.append(PiperEngine())
        elif name == "espeak":
            engines.append(EspeakEngine())
        else:
            raise SystemExit(f"--tts-engines: unknown engine {name!r} (piper, espeak)")
    return engines


def run_tts(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every engine; flat keys ``tts_<engine>_<figure>`` plus the headline figures."""
    engines = _engines(args.tts_engines)
    result: dict[str, Any] = {"tts_load_avg_before": [round(x, 2) for x in os.getloadavg()]}

    async def main() -> None:
        for engine in engines:
            figures = await _bench_engine(engine, args)
            for key, value in figures.items():
                result[f"tts_{engine.name}_{key}"] = value

    asyncio.run(main())
    head = engines[0].name
    result["tts_engine"] = head
    result["tts_first_audio_ms_p50"] = result[f"tts_{head}_first_audio_ms_p50"]
    result["tts_first_audio_ms_p95"] = result[f"tts_{head}_first_audio_ms_p95"]
    result["tts_rate"] = args.tts_rate
    result["tts_cpus"] = os.cpu_count()
    result["tts_load_avg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def report_tts(result: dict[str, Any]) -> str:
    lines = [
        f"TTS time to first audio at {result['tts_rate']} Hz "
        f"(headline engine: {result['tts_engine']}; {result['tts_cpus']} CPUs, load average "
        f"{result['tts_load_avg_before']} -> {result['tts_load_avg_after']}; noisy on a "
        "shared machine)",
        f"  short first clause p50 {result['tts_first_audio_ms_p50']} ms, "
        f"p95 {result['tts_first_audio_ms_p95']} ms",
    ]
    engines = sorted({k.split("_")[1] for k in result if k.endswith("_load_s")})
    for name in engines:
        fig = {
            k[len(f"tts_{name}_") :]: v for k, v in result.items() if k.startswith(f"tts_{name}_")
        }
        conc = [k for k in fig if k.startswith("concurrent") and k.endswith("_p50")]
        lines.append(
            f"  {name:<7} load {fig['load_s']} s | short clause p50 {fig['first_audio_ms_p50']}"
            f" / p95 {fig['first_audio_ms_p95']} ms (n={fig['samples']}) | 12-word sentence p50"
            f" {fig['sentence_first_audio_ms_p50']} / p95 {fig['sentence_first_audio_ms_p95']}"
            f" ms | RTF {fig['rtf']}"
            + (f" | {conc[0].split('_')[0]} p50 {fig[conc[0]]} ms" if conc else "")
            + f" | cached phrase p50 {fig['cached_first_audio_ms_p50']} ms"
            + f" | CPU per short clause p50 {fig['cpu_ms_p50']} ms"
        )
    return "\n".join(lines)


run = run_tts
report = report_tts


if __name__ == "__main__":  # python -m harken.bench.speech_tts [--json] [options]
    import sys

    import orjson

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true")
    add_arguments(parser)
    ns = parser.parse_args()
    figures = run_tts(ns)
    sys.stdout.write((orjson.dumps(figures).decode() if ns.json else report_tts(figures)) + "\n")
