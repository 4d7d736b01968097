"""Turn-detection figures for ``harken bench speech`` (see :func:`run_turn`).

A labelled set: complete sentences, and mid-sentence pauses (a sentence cut at a word boundary,
keeping its continuing prosody, and hesitations ending in a filler), spoken by Piper with its
randomness off (espeak-ng when Piper is not installed). Each clip is a live call (real time, a
new call every ``--turn-stagger`` seconds) through a VadStage and two TurnStages side by side:
Smart Turn with a silence backstop, and a plain silence timer. Reports precision/recall of
"complete", the endpoint delay (true end of speech to the decision, media time) and where the
delay goes; the transcript rules are scored with each clip's own text as an oracle transcript.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from harken.bench import speech_data as sd
from harken.frames import AudioFrame, StartFrame
from harken.pipeline import Call, Pipeline
from harken.speech.turn import TurnParams, TurnPool, TurnStage, decide, text_complete
from harken.speech.vad import VadStage

I16 = npt.NDArray[np.int16]


def _load() -> str:
    import os

    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f} on {os.cpu_count()} cores"


def _scale(x: I16, dbfs: float) -> npt.NDArray[np.float64]:
    f = x.astype(np.float64)
    loud = f[np.abs(f) > 300]
    rms = float(np.sqrt(np.mean(loud**2))) if loud.size else 1.0
    out: npt.NDArray[np.float64] = f * (32768.0 * 10 ** (dbfs / 20) / rms)
    return out


def _frames(x: I16, rate: int) -> list[bytes]:
    step = rate // 50
    return [x[i : i + step].tobytes() for i in range(0, x.size - step + 1, step)]


#: (prefix before the pause, the rest of the sentence)
CUTS = (
    ("I'd like to book a table for", "two people tonight."),
    ("What time do you", "close on Sunday?"),
    ("My account number is four five", "six seven eight."),
    ("I was wondering if you could", "help me with my bill."),
    ("Can you tell me about the", "opening hours?"),
    ("I need to change my", "delivery address."),
    ("So basically what happened was", "my card got declined."),
    ("I'm calling because", "my internet is down again."),
    ("We would like to order", "two large pizzas."),
    ("The problem started when", "I updated the app."),
)
FILLERS = (
    "I'd like to book a table for, um,",
    "I think that, um,",
    "So the problem is, well,",
    "My name is, uh,",
    "I want to, hmm,",
    "Well, let me see, um,",
    "And then, uh,",
    "Can I get a, um,",
    "It's about my, uh,",
    "The thing is, you know,",
)
COMPLETE = (
    "I'd like to book a table for two people tonight.",
    "What time do you close on Sunday?",
    "Yes, that works for me.",
    "My account number is four five six seven eight.",
    "Can you help me with my bill?",
    "That's all, thanks.",
    "I need to change my delivery address.",
    "No, thank you.",
    "My card got declined.",
    "Could you repeat that, please?",
    "We would like to order two large pizzas.",
    "Okay, goodbye.",
    "I'm calling about my internet connection.",
    "Is the store open tomorrow?",
    "Perfect, see you then.",
)


def _cached(cache: Path | None, key: str, make: Any) -> I16:
    if cache is None:
        out: I16 = make()
        return out
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / (hashlib.sha1(key.encode()).hexdigest()[:16] + ".npy")
    if path.exists():
        loaded: I16 = np.load(path)
        return loaded
    audio: I16 = make()
    np.save(path, audio)
    return audio


def _cut_clip(prefix: str, rest: str, engine: str) -> I16:
    """``prefix`` cut out of the whole sentence: the pause comes mid-sentence, prosody intact.

    The cut is the quietest 10 ms near where the prefix alone would end (word boundary)."""
    full = sd.synth(f"{prefix} {rest}", 16000, engine=engine)
    alone = sd.synth(prefix, 16000, engine=engine)
    hop = 160
    frames = full[: full.size // hop * hop].astype(np.float64).reshape(-1, hop)
    energy = np.convolve((frames**2).mean(axis=1), np.ones(3) / 3, mode="same")
    lo, hi = int(0.8 * alone.size / hop), min(energy.size - 1, int(1.08 * alone.size / hop))
    cut = (lo + int(np.argmin(energy[lo:hi]))) * hop if hi > lo else alone.size
    return full[:cut]


def turn_set(engine: str, cache: Path | None) -> list[tuple[str, str, str, I16]]:
    """(label, kind, transcript, 16 kHz audio) for the labelled set."""
    items: list[tuple[str, str, str, I16]] = []
    for text in COMPLETE:
        audio = _cached(
            cache, f"{engine}|c|{text}", lambda t=text: sd.synth(t, 16000, engine=engine)
        )
        items.append(("complete", "sentence", text, audio))
    for prefix, rest in CUTS:
        audio = _cached(
            cache, f"{engine}|cut|{prefix}|{rest}", lambda p=prefix, r=rest: _cut_clip(p, r, engine)
        )
        items.append(("incomplete", "cut", prefix, audio))
    for text in FILLERS:
        audio = _cached(
            cache, f"{engine}|f|{text}", lambda t=text: sd.synth(t, 16000, engine=engine)
        )
        items.append(("incomplete", "filler", text, audio))
    return items


Clip = tuple[I16, float, str, str]  # phone audio, true end of speech (s), label, kind


def _phone_clips(
    items: list[tuple[str, str, str, I16]], rate: int, tail_s: float, rng: np.random.Generator
) -> list[Clip]:
    """Each clip as a caller on a phone line: 0.6 s of line noise, the speech at a random level,
    ``tail_s`` of line noise; band-limited and u-law, at ``rate``."""
    clips: list[Clip] = []
    for label, kind, _, audio in items:
        speech = _scale(sd.to_rate(audio, 16000, rate), float(rng.uniform(-26, -18)))
        lead, n = int(0.6 * rate), speech.size
        total = lead + n + int(tail_s * rate)
        mix = np.zeros(total)
        mix[lead : lead + n] = speech
        noise = sd.line_noise(total, rate, rng, level_dbfs=float(rng.uniform(-58, -48)))
        pcm = np.clip(np.round(mix) + noise, -32768, 32767).astype(np.int16)
        # the true end: the last 5 ms of the speech (phone band, no noise) above -45 dBFS
        clean = sd.phone_channel(np.round(mix).astype(np.int16), rate).astype(np.float64)
        blk = rate // 200
        e = (clean[: total // blk * blk].reshape(-1, blk) ** 2).mean(axis=1)
        loud = np.flatnonzero(10 * np.log10(e / 32768**2 + 1e-12) >= -45.0)
        end = (int(loud[-1]) + 1) * blk / rate if loud.size else (lead + n) / rate
        clips.append((sd.phone_channel(pcm, rate), end, label, kind))
    return clips


async def _turn_calls(
    clips: list[Clip],
    rate: int,
    configs: dict[str, TurnParams],
    stagger_s: float,
    lags: dict[str, Any],
) -> list[dict[str, tuple[str, float, float | None, float] | None]]:
    """Each clip is a live call (real time; call i starts at i * ``stagger_s``) through a
    VadStage and one TurnStage per config; the first turn end each config decided:
    (reason, speech_end, confidence, media time of the decision)."""
    pool = TurnPool(max_busy=1.0)  # the model itself: no CPU budget
    loop = asyncio.get_running_loop()

    async def one(i: int, audio: I16) -> dict[str, tuple[str, float, float | None, float] | None]:
        await asyncio.sleep(i * stagger_s)
        stages = {name: TurnStage(p, pool=pool, name=name) for name, p in configs.items()}
        call = Call(Pipeline([VadStage(), *stages.values()]), call_id=f"turn{i}")
        await call.start(StartFrame(sample_rate_in=rate))
        frames = _frames(audio, rate)
        start = loop.time()
        for k, pcm in enumerate(frames):
            call.feed(AudioFrame(pcm, rate, timestamp=k * 0.02))
            if all(st.ends for st in stages.values()):
                break
            await asyncio.sleep(max(0.0, start + (k + 1) * 0.02 - loop.time()))
        call.cancel()
        model = stages.get("smart_turn")
        if model is not None:  # how long the VAD stop and the verdict took, in media time
            stop_lag.extend(seen - ts for ts, seen in model.stops)
            heard = dict(model.stops)
            verdict_lag.extend(at - heard[ts] for ts, _, at in model.verdicts if ts in heard)
        return {name: (st.ends[0] if st.ends else None) for name, st in stages.items()}

    stop_lag: list[float] = []
    verdict_lag: list[float] = []
    out = list(await asyncio.gather(*(one(i, c[0]) for i, c in enumerate(clips))))
    lags["vad_stop_heard_ms_mean"] = round(1000 * statistics.mean(stop_lag)) if stop_lag else None
    lags["verdict_ms_mean"] = round(1000 * statistics.mean(verdict_lag)) if verdict_lag else None
    lags["verdict_ms_median"] = (
        round(1000 * statistics.median(verdict_lag)) if verdict_lag else None
    )
    lags["verdict_ms_max"] = round(1000 * max(verdict_lag)) if verdict_lag else None
    lags["model_cpu_ms_per_verdict"] = round(1000 * pool.busy_s / max(1, pool.predictions))
    return out


def _score(
    outcomes: list[tuple[str, float, float | None, float] | None],
    clips: list[Clip],
    decisive: tuple[str, ...] = ("model", "text"),
) -> dict[str, Any]:
    """Per clip, the first turn end: for a complete clip, a model/text end at or after the end
    of speech is a true positive, one before it (a mid-sentence pause taken for the end) a
    false positive, a silence end a miss; for an incomplete clip, a model/text end is a false
    positive. Delays are media time from the true end of speech to the decision."""
    tp = fp = fn = early = 0
    delays: list[float] = []
    delays_tp: list[float] = []
    for out, (_, end, label, _) in zip(outcomes, clips, strict=True):
        semantic = out is not None and out[0] in decisive
        premature = out is not None and out[3] < end - 0.05
        if label == "complete":
            if out is not None and not premature:
                delays.append(out[3] - end)
            if semantic and not premature:
                tp += 1
                delays_tp.append(out[3] - end)  # type: ignore[index]
            elif semantic:
                fp += 1
                early += 1
            else:
                fn += 1
        elif semantic:
            fp += 1
    return {
        "precision": round(tp / max(1, tp + fp), 3),
        "recall": round(tp / max(1, tp + fn), 3),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "ended_mid_sentence": early,
        "delay_ms_mean": round(1000 * statistics.mean(delays)) if delays else None,
        "delay_ms_median": round(1000 * statistics.median(delays)) if delays else None,
        "delay_ms_mean_semantic": round(1000 * statistics.mean(delays_tp)) if delays_tp else None,
    }


def run_turn(args: argparse.Namespace) -> dict[str, Any]:
    """Precision/recall of "complete" and endpoint delay vs a silence timer, on a labelled set."""
    engine = args.turn_engine
    if engine == "auto":
        engine = "piper" if sd.have_piper() else "espeak"
    cache = Path(args.turn_cache) if args.turn_cache else None
    rng = np.random.default_rng(args.turn_seed)
    rate = args.turn_rate
    items = turn_set(engine, cache)
    clips = _phone_clips(items, rate, args.turn_silence + 1.0, rng)
    configs = {
        # the model itself: it gets all the time it needs (no timer fallback, no CPU budget)
        "smart_turn": TurnParams(
            silence_s=args.turn_silence, fallback_s=args.turn_silence, text="off"
        ),
        "timer": TurnParams(model=False, text="off", silence_s=args.turn_timer),
    }
    lags: dict[str, Any] = {}
    outcomes = asyncio.run(_turn_calls(clips, rate, configs, args.turn_stagger, lags))
    result: dict[str, Any] = {
        "command": f"python -m harken.bench.speech_vad turn --turn-rate {rate}",
        "engine": engine,
        "rate": rate,
        "clips": {
            "complete": sum(1 for c in clips if c[2] == "complete"),
            "incomplete_cut": sum(1 for c in clips if c[3] == "cut"),
            "incomplete_filler": sum(1 for c in clips if c[3] == "filler"),
        },
        "timer_s": args.turn_timer,
        "backstop_s": args.turn_silence,
    }
    result["smart_turn"] = _score([o["smart_turn"] for o in outcomes], clips)
    result["latency"] = lags
    result["timer"] = _score([o["timer"] for o in outcomes], clips, ("silence",))
    # the transcript rules, with each clip's own text as an (oracle) transcript
    probs = [o["smart_turn"][2] if o["smart_turn"] is not None else None for o in outcomes]
    veto = TurnParams(text="veto")
    text_only = TurnParams(model=False)
    for name, pred in (
        (
            "smart_turn_text_veto",
            [
                p is not None and decide(p, text_complete(t), veto)[0]
                for p, (_, _, t, _) in zip(probs, items, strict=True)
            ],
        ),
        (
            "text_only_oracle",
            [decide(None, text_complete(t), text_only)[0] for _, _, t, _ in items],
        ),
    ):
        tp = sum(1 for y, c in zip(pred, clips, strict=True) if y and c[2] == "complete")
        fp = sum(1 for y, c in zip(pred, clips, strict=True) if y and c[2] != "complete")
        fn = sum(1 for y, c in zip(pred, clips, strict=True) if not y and c[2] == "complete")
        result[name] = {
            "precision": round(tp / max(1, tp + fp), 3),
            "recall": round(tp / max(1, tp + fn), 3),
            "tp": tp,
            "fp": fp,
            "fn": fn,
        }
    result["first_verdicts"] = {
        kind: [
            None
            if o["smart_turn"] is None or o["smart_turn"][2] is None
            else round(o["smart_turn"][2], 2)
            for o, c in zip(outcomes, clips, strict=True)
            if c[3] == kind
        ]
        for kind in ("sentence", "cut", "filler")
    }
    result["load"] = _load()
    return result


def report_turn(r: dict[str, Any]) -> str:
    """Human-readable lines for :func:`run_turn`'s figures."""
    lines = [
        f"Turn detection at {r['rate']} Hz ({r['engine']} voice; {r['clips']}; load {r['load']})"
    ]
    for name in ("smart_turn", "smart_turn_text_veto", "text_only_oracle", "timer"):
        m = r[name]
        delay = m.get("delay_ms_mean")
        lines.append(
            f"  {name:22s} precision {m['precision']:.2f} recall {m['recall']:.2f}"
            + (
                f"  endpoint delay mean {delay} ms, median {m['delay_ms_median']} ms"
                if delay is not None
                else ""
            )
        )
    lat = r["latency"]
    lines.append(
        f"  VAD stop heard {lat['vad_stop_heard_ms_mean']} ms after the speech ended; verdict "
        f"{lat['verdict_ms_mean']} ms after that (model {lat['model_cpu_ms_per_verdict']} ms)"
    )
    return "\n".join(lines)
