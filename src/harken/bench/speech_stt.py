"""Speech-to-text bench: word error rate and end-of-speech to final-transcript latency.

Every utterance of the synthetic corpus (:mod:`harken.bench.stt_corpus`: 50 sentences, Piper and
espeak-ng voices) goes through a real :class:`~harken.speech.stt.service.SttService` in a
:class:`~harken.pipeline.Call`, **in real time**: 20 ms frames are fed on a wall-clock schedule,
so partial passes run while the "caller" talks exactly as in a call. After the last frame of
speech the VAD's stop (``UserStoppedSpeakingFrame``) is delivered ``--stt-vad-stop-ms`` later
(default 0: an ideal endpointer; with a real VAD, silence keeps flowing meanwhile and is fed
too), then the turn end. **Final latency** is the wall time from the end of the last speech
frame to the final ``TranscriptFrame``; **WER** is over the finals (corpus-level, see
:func:`~harken.bench.stt_corpus.wer`).

Paths: ``wide`` feeds 16 kHz PCM; ``phone`` feeds what a telephone call delivers (8 kHz G.711
µ-law, decoded), which the service resamples. Engines: ``whisper`` (local tiny.en, reduced
context, LocalAgreement-2 partials) and ``pocketsphinx`` (local, streaming).

A *batch* row per engine gives the same clips transcribed whole, off the call path (the cost of
one pass), and ``--stt-context-compare N`` transcribes N clips with the bench's Whisper context
(``--stt-context-s``, 8 s by default) and with the full 30 s for comparison. Each row counts
where its finals came from (a partial pass that heard all the speech, or a final pass of its
own) with the latency of each. The machine is shared: figures are noisy; the load average is
printed at the start and end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from harken.audio import ulaw_decode, ulaw_encode
from harken.bench.stt_corpus import VOICES, Utterance, corpus, phone_path, wer
from harken.frames import (
    AudioFrame,
    Frame,
    TranscriptFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
    UserTurnEndFrame,
)
from harken.pipeline import Call
from harken.speech.stt.base import StreamingSttEngine, SttEngine
from harken.speech.stt.service import SttService

__all__ = ["add_arguments", "report", "run", "run_stt"]

FRAME_S = 0.02


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stt-engines", default="whisper,pocketsphinx", help="comma list: whisper,pocketsphinx"
    )
    parser.add_argument("--stt-paths", default="wide,phone", help="comma list: wide,phone")
    parser.add_argument("--stt-voices", default=",".join(VOICES), help="comma list of voices")
    parser.add_argument("--stt-limit", type=int, default=50, help="sentences per voice (max 50)")
    parser.add_argument(
        "--stt-vad-stop-ms", type=float, default=0.0, help="delay of the VAD stop after speech"
    )
    parser.add_argument("--stt-step-ms", type=float, default=500.0, help="partial pass step")
    parser.add_argument(
        "--stt-context-s", type=float, default=8.0, help="Whisper encoder context (s)"
    )
    parser.add_argument(
        "--stt-context-compare", type=int, default=10, help="clips also run with 30 s context"
    )
    parser.add_argument(
        "--stt-force-prefix",
        action="store_true",
        help="passes force the committed words as the decoder prefix (default: decode freely)",
    )


def _engine(name: str, args: argparse.Namespace) -> SttEngine | StreamingSttEngine:
    if name == "whisper":
        from harken.speech.stt.whisper import WhisperEngine

        return WhisperEngine(context_s=args.stt_context_s)
    if name == "pocketsphinx":
        from harken.speech.stt.sphinx import SphinxEngine

        return SphinxEngine(pool_size=1)
    raise SystemExit(f"unknown STT engine {name!r}")


def _path_audio(u: Utterance, path: str) -> tuple[npt.NDArray[np.int16], int]:
    if path == "wide":
        return u.pcm, 16000
    narrow = phone_path(u.pcm).tobytes()
    return np.frombuffer(ulaw_decode(ulaw_encode(narrow)), np.int16), 8000


async def _one_turn(
    service: SttService,
    call: Call,
    got: list[tuple[float, TranscriptFrame]],
    pcm: npt.NDArray[np.int16],
    rate: int,
    vad_stop_s: float,
    t_media: float,
) -> tuple[float | None, str, float | None]:
    """Feed one utterance in real time; (final latency s, final text, first interim s)."""
    n = int(rate * FRAME_S)
    silence = np.zeros(n, np.int16)
    frames = [pcm[i : i + n] for i in range(0, len(pcm), n)]
    tail = [silence] * round(vad_stop_s / FRAME_S)
    loop = asyncio.get_running_loop()
    seen = len(got)
    call.system(UserStartedSpeakingFrame(t_media))
    t0 = loop.time()
    t_speech_end = t0 + len(frames) * FRAME_S
    for k, chunk in enumerate(frames + tail):
        due = t0 + (k + 1) * FRAME_S  # the frame has fully "arrived" at its end
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        call.feed(AudioFrame(chunk.tobytes(), rate, timestamp=t_media + k * FRAME_S))
    call.system(UserStoppedSpeakingFrame(t_media + len(frames) * FRAME_S))
    call.system(UserTurnEndFrame(t_media + len(frames) * FRAME_S))
    await service.drain()
    mine = got[seen:]
    finals = [(t, f) for t, f in mine if f.final]
    interims = [t for t, f in mine if not f.final]
    first = interims[0] - t0 if interims else None
    if not finals:
        return None, "", first
    return finals[0][0] - t_speech_end, finals[0][1].text, first


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _run_engine_path(
    name: str, path: str, utts: list[Utterance], args: argparse.Namespace
) -> dict[str, Any]:
    engine = _engine(name, args)
    await engine.warm_up()
    got: list[tuple[float, TranscriptFrame]] = []

    loop = asyncio.get_running_loop()

    def on_down(frame: Frame) -> None:
        if isinstance(frame, TranscriptFrame):
            got.append((loop.time(), frame))

    service = SttService(engine, step_s=args.stt_step_ms / 1000, force_prefix=args.stt_force_prefix)
    call = Call(service, on_down=on_down)
    await call.start()
    lat: list[float] = []
    by_source: dict[str, list[float]] = {}
    first: list[float] = []
    pairs: list[tuple[str, str, str]] = []
    misses = 0
    t_media = 0.0
    for u in utts:
        pcm, rate = _path_audio(u, path)
        before = dict(service.final_sources)
        latency, text, first_interim = await _one_turn(
            service, call, got, pcm, rate, args.stt_vad_stop_ms / 1000, t_media
        )
        source = next(
            (k for k, v in service.final_sources.items() if v > before.get(k, 0)), "stream"
        )
        t_media += len(pcm) / rate + 1.0
        await asyncio.sleep(0.2)  # a pause between turns
        pairs.append((u.voice, u.text, text))
        if latency is None:
            misses += 1
        else:
            lat.append(latency * 1000)
            by_source.setdefault(source, []).append(latency * 1000)
        if first_interim is not None:
            first.append(first_interim * 1000)
    call.cancel()
    await call.wait()
    await engine.aclose()
    interims = sum(1 for _, f in got if not f.final)
    row: dict[str, Any] = {
        "engine": name,
        "path": path,
        "utterances": len(utts),
        "wer": wer((r, h) for _, r, h in pairs),
        "final_ms_p50": _pct(lat, 50),
        "final_ms_p90": _pct(lat, 90),
        "final_ms_p95": _pct(lat, 95),
        "final_ms_mean": float(statistics.fmean(lat)) if lat else float("nan"),
        "first_interim_ms_p50": _pct(first, 50),
        "interims_per_turn": interims / max(1, len(utts)),
        "no_final": misses,
        # where each final came from: a partial pass still in flight ("inflight"), the last
        # completed partial ("partial"), a final pass of its own ("pass"); "stream" for
        # streaming engines; with the final latency p50 of each
        "final_sources": {k: len(v) for k, v in sorted(by_source.items())},
        "final_ms_p50_by_source": {k: _pct(v, 50) for k, v in sorted(by_source.items())},
    }
    for voice in sorted({v for v, _, _ in pairs}):
        row[f"wer_{voice}"] = wer((r, h) for v, r, h in pairs if v == voice)
    row["errors"] = [(r, h) for _, r, h in pairs if r.lower().strip(".?!") not in h.lower()][:5]
    return row


async def _batch(name: str, utts: list[Utterance], args: argparse.Namespace) -> dict[str, Any]:
    """Whole clips, one pass each (no streaming): the cost of one pass and its accuracy."""
    engine = _engine(name, args)
    await engine.warm_up()
    if not isinstance(engine, SttEngine):
        raise SystemExit(f"{name} has no batch mode")
    pairs, times = [], []
    for u in utts:
        t0 = time.perf_counter()
        r = await engine.transcribe(u.pcm.tobytes())
        times.append((time.perf_counter() - t0) * 1000)
        pairs.append((u.text, r.text))
    await engine.aclose()
    return {
        "engine": name,
        "path": "batch",
        "utterances": len(utts),
        "wer": wer(pairs),
        "pass_ms_p50": _pct(times, 50),
        "pass_ms_p95": _pct(times, 95),
    }


async def _context_compare(utts: list[Utterance], context_s: float) -> dict[str, Any]:
    """The same clips with the bench's context and the full 30 s: (WER, ms per pass) each."""
    from harken.speech.stt.whisper import WhisperEngine

    out: dict[str, Any] = {"utterances": len(utts), "contexts": {}}
    for ctx in (context_s, 30.0):
        engine = WhisperEngine(context_s=ctx)
        await engine.warm_up()
        pairs, times = [], []
        for u in utts:
            r = await engine.transcribe(u.pcm.tobytes())
            times.append(r.elapsed_s * 1000)
            pairs.append((u.text, r.text))
        out["contexts"][f"{ctx:g}"] = {"wer": wer(pairs), "ms_p50": _pct(times, 50)}
    return out


def run_stt(args: argparse.Namespace) -> dict[str, Any]:
    """Run the bench; the figures as a JSON-ready dict (see the module doc)."""
    load_start = os.getloadavg()
    voices = [v for v in args.stt_voices.split(",") if v]
    sentences_limit = max(1, min(50, args.stt_limit))
    from harken.bench.stt_corpus import SENTENCES

    t0 = time.perf_counter()
    utts = corpus(voices=voices, sentences=SENTENCES[:sentences_limit])
    synth_s = time.perf_counter() - t0
    engines = [e for e in args.stt_engines.split(",") if e]
    paths = [p for p in args.stt_paths.split(",") if p]

    async def main() -> list[dict[str, Any]]:
        rows = []
        for name in engines:
            for path in paths:
                rows.append(await _run_engine_path(name, path, utts, args))
            rows.append(await _batch(name, utts, args))
        return rows

    rows = asyncio.run(main())
    result: dict[str, Any] = {
        "stt_utterances": len(utts),
        "stt_voices": voices,
        "stt_vad_stop_ms": args.stt_vad_stop_ms,
        "stt_corpus_s": sum(u.duration for u in utts),
        "stt_synth_s": synth_s,
        "rows": rows,
    }
    for row in rows:
        if row["engine"] == "whisper" and row["path"] == "wide":
            result["stt_wer"] = row["wer"]
            result["stt_final_ms_p50"] = row["final_ms_p50"]
            result["stt_final_ms_p90"] = row["final_ms_p90"]
            result["stt_final_ms_p95"] = row["final_ms_p95"]
        if row["engine"] == "whisper" and row["path"] == "phone":
            result["stt_phone_wer"] = row["wer"]
            result["stt_phone_final_ms_p50"] = row["final_ms_p50"]
            result["stt_phone_final_ms_p90"] = row["final_ms_p90"]
            result["stt_phone_final_ms_p95"] = row["final_ms_p95"]
    if "whisper" in engines and args.stt_context_compare > 0:
        pick = utts[:: max(1, len(utts) // args.stt_context_compare)][: args.stt_context_compare]
        result["stt_context_compare"] = asyncio.run(_context_compare(pick, args.stt_context_s))
    result["load_avg_start"] = load_start
    result["load_avg_end"] = os.getloadavg()
    result["cpus"] = os.cpu_count()
    return result


run = run_stt


def report(result: dict[str, Any]) -> str:
    nan = float("nan")
    lines = [
        f"STT: {result['stt_utterances']} utterances ({', '.join(result['stt_voices'])}), "
        f"{result['stt_corpus_s']:.0f} s of speech, VAD stop {result['stt_vad_stop_ms']:g} ms "
        "after speech; real-time feed",
        f"load average {result['load_avg_start'][0]:.2f} at start, "
        f"{result['load_avg_end'][0]:.2f} at end, {result['cpus']} CPUs (shared: noisy)",
        "",
        f"{'engine':<13}{'path':<7}{'WER':>7}{'piper':>7}{'espeak':>7}"
        f"{'final p50':>11}{'p90':>8}{'p95':>8}{'1st interim':>13}{'interims':>10}"
        "  final from",
    ]
    for r in result["rows"]:
        if r["path"] == "batch":
            lines.append(
                f"{r['engine']:<13}{'batch':<7}{r['wer']:>7.3f}{'':>14}"
                f"{r['pass_ms_p50']:>9.0f}ms{'':>8}{r['pass_ms_p95']:>6.0f}ms"
                "  (one whole-clip pass)"
            )
            continue
        lines.append(
            f"{r['engine']:<13}{r['path']:<7}{r['wer']:>7.3f}"
            f"{r.get('wer_piper', nan):>7.3f}{r.get('wer_espeak', nan):>7.3f}"
            f"{r['final_ms_p50']:>9.0f}ms"
            f"{r['final_ms_p90']:>6.0f}ms{r['final_ms_p95']:>6.0f}ms"
            f"{r['first_interim_ms_p50']:>11.0f}ms{r['interims_per_turn']:>10.1f}  "
            + ", ".join(
                f"{k} {n} ({r['final_ms_p50_by_source'][k]:.0f} ms)"
                for k, n in r["final_sources"].items()
            )
        )
    cc = result.get("stt_context_compare")
    if cc:
        lines.append(
            f"\nwhisper encoder context on {cc['utterances']} clips: "
            + "; ".join(
                f"{ctx} s WER {v['wer']:.3f} {v['ms_p50']:.0f} ms/pass"
                for ctx, v in cc["contexts"].items()
            )
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import orjson

    p = argparse.ArgumentParser(description="harken speech-to-text bench")
    p.add_argument("--json", action="store_true")
    add_arguments(p)
    a = p.parse_args()
    res = run_stt(a)
    print(orjson.dumps(res).decode() if a.json else report(res))
