"""VAD and turn-detection figures (parts of ``harken bench speech``).

:func:`run_vad`
    ``--vad-calls`` (200) simulated telephone calls at 8 kHz, each a VadStage in its own
    :class:`~harken.pipeline.Call`: the caller speaks ~40% of the time (synthesized sentences in
    turns of 1-3, levels varying per call), line noise otherwise, all through the phone band and
    G.711 u-law. Process CPU time (``time.process_time``: every thread, the VAD worker included)
    of feeding the calls, minus the same frames through a pass-through stage (fed interleaved
    with them in the same run, timed by thread CPU), per call and second of media:
    ``vad_cpu_pct_per_call``. Default: accelerated replay (frames as fast as they go, the
    batcher pumped once per tick of media, the same batch shapes as live); ``--vad-realtime``
    runs live on the event loop with the batcher's worker thread instead. Also: the share of
    windows that reached the model (gate-2 rate, in speech and in noise), batch sizes, model time
    per window, and onsets the gate missed against the model-only baseline on the same audio.
:func:`run_turn` (implemented in :mod:`harken.bench.speech_turn`)
    A labelled set: complete sentences, and mid-sentence pauses (a sentence cut at a word
    boundary, keeping its continuing prosody, and hesitations ending in a filler). Each clip is a
    live call (real time, staggered) through VadStage + TurnStage. Reports precision/recall of
    "complete" for Smart Turn, Smart Turn with the transcript veto, text alone (oracle
    transcripts), and the endpoint delay (true end of speech to ``UserTurnEndFrame``) against a
    700 ms silence timer.

``add_arguments`` adds both benches' options (``--vad-...``, ``--turn-...``); ``report_vad`` and
``report_turn`` render the figures as text. ``python -m harken.bench.speech_vad [vad|turn]``
runs them alone.

The machine is shared: CPU figures are noisy; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from harken.bench import speech_data as sd
from harken.bench.speech_turn import report_turn, run_turn
from harken.frames import AudioFrame, StartFrame
from harken.pipeline import Call, Stage
from harken.speech.vad import VadParams, VadStage, VadStream
from harken.speech.vad_batch import SileroBatcher, VadSlot

__all__ = ["add_arguments", "main", "report_turn", "report_vad", "run_turn", "run_vad"]

I16 = npt.NDArray[np.int16]
Segments = list[tuple[float, float]]

SENTENCES = (
    "Hi, I'm calling about my order from last week.",
    "I'd like to book a table for two people tonight.",
    "What time do you close on Sunday?",
    "Yes, that works for me.",
    "Can you tell me the balance on my account?",
    "My card was charged twice for the same thing.",
    "No, I don't think so.",
    "Could you send me a copy of the invoice by email?",
    "The delivery never arrived and nobody called me.",
    "Okay, thank you very much for your help.",
    "I need to change the address on my account.",
    "Is there anyone I can speak to about this?",
    "Sure, my date of birth is the fourth of July.",
    "We moved to a new apartment in March.",
    "Actually, could we make it seven thirty instead?",
    "That sounds great, let's do that.",
)

VOICES = ("en-us", "en-us+f2", "en+m3", "en-us+m5", "en+f4")  # "en" is British English


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--vad-calls", type=int, default=200, help="concurrent simulated calls")
    add("--vad-seconds", type=float, default=30.0, help="media seconds per call")
    add("--vad-rate", type=int, default=8000, choices=(8000, 16000), help="call sample rate")
    add("--vad-speech", type=float, default=0.4, help="share of time the caller speaks")
    add("--vad-engine", default="espeak", choices=("espeak", "piper"), help="speech synthesizer")
    add("--vad-realtime", action="store_true", help="live on the event loop (slow: 2x seconds)")
    add("--vad-model-only", action="store_true", help="measure the baseline: no energy gate")
    add("--vad-seed", type=int, default=7, help="random seed")
    add("--turn-engine", default="auto", choices=("auto", "espeak", "piper"), help="synthesizer")
    add("--turn-rate", type=int, default=8000, choices=(8000, 16000), help="call sample rate")
    add("--turn-silence", type=float, default=2.0, help="silence backstop (s)")
    add("--turn-timer", type=float, default=0.7, help="baseline silence timer (s)")
    add("--turn-seed", type=int, default=3, help="random seed")
    add("--turn-cache", default=None, help="cache synthesized clips here (default: none)")
    add("--turn-stagger", type=float, default=0.5, help="seconds between call starts")


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} / {five:.2f} on {os.cpu_count()} cores"


# --------------------------------------------------------------------------------------------
# call audio


def _scale(x: I16, dbfs: float) -> npt.NDArray[np.float64]:
    f = x.astype(np.float64)
    loud = f[np.abs(f) > 300]
    rms = float(np.sqrt(np.mean(loud**2))) if loud.size else 1.0
    out: npt.NDArray[np.float64] = f * (32768.0 * 10 ** (dbfs / 20) / rms)
    return out


def _utterances(rate: int, engine: str, rng: np.random.Generator) -> list[I16]:
    out = []
    for i, text in enumerate(SENTENCES):
        if engine == "piper":
            out.append(sd.synth(text, rate, engine="piper"))
        else:
            voice = VOICES[i % len(VOICES)]
            audio = sd.espeak(text, voice=voice, wpm=int(rng.integers(145, 190)))
            out.append(sd.to_rate(audio, sd.ESPEAK_RATE, rate))
    return out


def call_track(
    seconds: float, rate: int, speech: float, pool: Sequence[I16], rng: np.random.Generator
) -> tuple[I16, Segments]:
    """One caller: listening (line noise) and talking turns of 1-3 sentences, ``speech`` of the
    time on average, at a per-call level, through the phone channel. Returns audio and the
    true speech segments (s)."""
    n = int(seconds * rate)
    mix = np.zeros(n, np.float64)
    truth: Segments = []
    level = rng.uniform(-30.0, -18.0)
    t = int(rng.uniform(0.5, 4.0) * rate)
    while t < n:
        turn_start = t
        spoken = 0
        for _ in range(int(rng.integers(1, 4))):
            utt = _scale(pool[int(rng.integers(len(pool)))], level + rng.uniform(-3, 3))
            end = min(n, t + utt.size)
            mix[t:end] += utt[: end - t]
            truth.append((t / rate, end / rate))
            spoken += end - t
            t = end + int(rng.uniform(0.3, 0.9) * rate)
            if t >= n:
                break
        # listen long enough that speech is ``speech`` of the time, on average
        listen = max(0.0, spoken / speech - (t - turn_start))
        t += int(listen * rng.uniform(0.6, 1.4))
    noise = sd.line_noise(n, rate, rng, level_dbfs=rng.uniform(-60.0, -45.0))
    mixed = np.clip(np.round(mix) + noise, -32768, 32767).astype(np.int16)
    return sd.phone_channel(mixed, rate), truth


def _frames(x: I16, rate: int) -> list[bytes]:
    step = rate // 50
    return [x[i : i + step].tobytes() for i in range(0, x.size - step + 1, step)]


# --------------------------------------------------------------------------------------------
# VAD cost


async def _feed_accelerated(
    calls: list[Call],
    base: list[Call],
    tracks: list[list[bytes]],
    rate: int,
    batcher: SileroBatcher,
) -> tuple[float, float]:
    """Every call's frames in media order, pumping the batcher once per ``tick_s`` of media (one
    tick of the live batcher: the same batch shapes); the same frames go through pass-through
    calls (``base``) interleaved with them. Returns (process CPU of the whole run, thread CPU of
    feeding the pass-through calls)."""
    steps = min(len(t) for t in tracks)
    base_cpu = 0.0
    next_tick = batcher.tick_s
    t0 = time.process_time()
    for k in range(steps):
        ts = k * 0.02
        b0 = time.thread_time()
        for call, track in zip(base, tracks, strict=True):
            call.feed(AudioFrame(track[k], rate, timestamp=ts))
        base_cpu += time.thread_time() - b0
        for call, track in zip(calls, tracks, strict=True):
            call.feed(AudioFrame(track[k], rate, timestamp=ts))
        if ts + 0.02 >= next_tick:
            batcher.pump(once=True)  # one tick of the live batcher
            next_tick += batcher.tick_s
    batcher.pump()
    return time.process_time() - t0, base_cpu


async def _feed_realtime(
    calls: list[Call], base: list[Call], tracks: list[list[bytes]], rate: int
) -> tuple[float, float]:
    """Every call's next frame each 20 ms of wall time (the batcher runs on its own), and the
    same frame through a pass-through call; returns as :func:`_feed_accelerated`."""
    loop = asyncio.get_running_loop()
    steps = min(len(t) for t in tracks)
    start = loop.time() + 0.05
    base_cpu = 0.0
    t0 = time.process_time()
    for k in range(steps):
        delay = start + k * 0.02 - loop.time()
        await asyncio.sleep(max(0.0, delay))
        ts = k * 0.02
        b0 = time.thread_time()
        for call, track in zip(base, tracks, strict=True):
            call.feed(AudioFrame(track[k], rate, timestamp=ts))
        base_cpu += time.thread_time() - b0
        for call, track in zip(calls, tracks, strict=True):
            call.feed(AudioFrame(track[k], rate, timestamp=ts))
    await asyncio.sleep(0.1)
    return time.process_time() - t0, base_cpu


async def _cost(args: argparse.Namespace, tracks: list[list[bytes]]) -> dict[str, Any]:
    rate = args.vad_rate
    n = len(tracks)
    realtime = bool(args.vad_realtime)
    # the baseline: the same frames through pass-through calls, fed interleaved with the VAD
    # calls in the same run (a baseline run of its own, seconds earlier or later, saw another
    # load on this shared machine)
    base = [Call(Stage(), call_id=f"b{i}") for i in range(n)]
    for c in base:
        await c.start(StartFrame(sample_rate_in=rate))
    batcher = SileroBatcher(manual=not realtime, keep_batch_sizes=True)
    batcher.session  # noqa: B018 - load the model before the clock starts
    params = VadParams(gate=not args.vad_model_only)
    stages = [VadStage(params, batcher=batcher) for _ in range(n)]
    calls = [Call(st, call_id=f"v{i}") for i, st in enumerate(stages)]
    for c in calls:
        await c.start(StartFrame(sample_rate_in=rate))
    if realtime:
        total, base_cpu = await _feed_realtime(calls, base, tracks, rate)
        await batcher.drain()
    else:
        total, base_cpu = await _feed_accelerated(calls, base, tracks, rate, batcher)
    for c in base:
        c.cancel()
    # the VAD calls' own frame routing costs what the pass-through calls' did
    cpu = total - base_cpu
    media = len(tracks[0]) * 0.02
    windows = sum(s.stream.windows for s in stages if s.stream)
    model_windows = sum(s.stream.model_windows for s in stages if s.stream)
    for c in calls:
        c.cancel()
    st = batcher.stats
    vad_cpu = max(0.0, cpu - base_cpu)
    sizes = st.batch_sizes or [0]
    return {
        "mode": ("realtime" if realtime else "accelerated")
        + (", model only" if args.vad_model_only else ""),
        "calls": n,
        "media_s_per_call": round(media, 2),
        "cpu_s_total": round(cpu, 3),
        "cpu_s_baseline": round(base_cpu, 3),
        "vad_cpu_pct_per_call": round(100.0 * vad_cpu / (n * media), 4),
        "model_cpu_pct_per_call": round(100.0 * st.cpu_s / (n * media), 4),
        "gate2_rate": round(model_windows / max(1, windows), 4),
        "model_us_per_window": round(1e6 * st.cpu_s / max(1, st.windows), 1),
        "model_wall_us_per_window": round(1e6 * st.busy_s / max(1, st.windows), 1),
        "batch_mean": round(st.mean_batch, 1),
        "batch_p50": int(np.percentile(sizes, 50)),
        "batch_max": st.max_batch_seen,
        "runs": st.runs,
        "dropped": st.dropped,
        "load": _load(),
    }


class _Recording(SileroBatcher):
    """A pumped batcher that remembers which windows were submitted."""

    def __init__(self, windows: int) -> None:
        super().__init__(manual=True)
        self.sent = np.zeros(windows, bool)

    def submit_bytes(
        self, slot: VadSlot, first_index: int, data: bytes, k: int, *, reset: bool = False
    ) -> None:
        self.sent[first_index : first_index + k] = True
        super().submit_bytes(slot, first_index, data, k, reset=reset)


def _replay(
    track: list[bytes], rate: int, params: VadParams
) -> tuple[Segments, npt.NDArray[np.bool_]]:
    """One track through a VadStream (pumped after every frame): its segments, and which
    windows went to the model."""
    batcher = _Recording(len(track) * rate // 50 // 256 + 2)
    events: list[tuple[bool, float]] = []
    stream = VadStream(rate, lambda s, t: events.append((s, t)), params, batcher)
    for k, pcm in enumerate(track):
        stream.feed(pcm, k * 0.02)
        batcher.pump()
    segs: Segments = []
    start = None
    for started, t in events:
        if started:
            start = t
        elif start is not None:
            segs.append((start, t))
            start = None
    if start is not None:
        segs.append((start, len(track) * 0.02))
    return segs, batcher.sent[: stream.windows]


def _overlaps(seg: tuple[float, float], segs: Segments) -> tuple[float, float] | None:
    for s in segs:
        if s[0] < seg[1] and seg[0] < s[1]:
            return s
    return None


def _window_mask(windows: int, truth: Segments, win_s: float) -> npt.NDArray[np.bool_]:
    starts = np.arange(windows) * win_s
    mask = np.zeros(windows, bool)
    for a, b in truth:
        mask |= (starts + win_s > a) & (starts < b)
    return mask


def _mask(segs: Segments, n: int, step: float = 0.01) -> npt.NDArray[np.bool_]:
    m = np.zeros(n, bool)
    for a, b in segs:
        m[int(a / step) : int(b / step)] = True
    return m


def _quality(tracks: list[list[bytes]], truths: list[Segments], rate: int) -> dict[str, Any]:
    """Gated VAD against the model-only baseline (and both against the true segments)."""
    missed = extra = base_n = gated_n = close = 0
    dis_base: list[float] = []
    dis_truth: dict[str, list[float]] = {"gated": [], "model_only": []}
    speech_model = speech_all = noise_model = noise_all = 0
    for track, truth in zip(tracks, truths, strict=True):
        gated, sent = _replay(track, rate, VadParams())
        base, _ = _replay(track, rate, VadParams(gate=False))
        base_n += len(base)
        gated_n += len(gated)
        missed += sum(1 for seg in base if _overlaps(seg, gated) is None)
        extra += sum(1 for seg in gated if _overlaps(seg, base) is None)
        close += sum(1 for seg in base if any(abs(g[0] - seg[0]) <= 0.04 for g in gated))
        n = int(len(track) * 0.02 / 0.01)
        gm, bm, tm = _mask(gated, n), _mask(base, n), _mask(truth, n)
        dis_base.append(float(np.mean(gm != bm)))
        dis_truth["gated"].append(float(np.mean(gm != tm)))
        dis_truth["model_only"].append(float(np.mean(bm != tm)))
        in_speech = _window_mask(sent.size, truth, 0.032)
        speech_all += int(in_speech.sum())
        noise_all += int((~in_speech).sum())
        speech_model += int((sent & in_speech).sum())
        noise_model += int((sent & ~in_speech).sum())
    return {
        "tracks": len(tracks),
        "segments_model_only": base_n,
        "segments_gated": gated_n,
        "missed_onsets_vs_model_only": missed,
        "extra_segments_vs_model_only": extra,
        "onsets_within_40ms_of_model_only": round(close / max(1, base_n), 3),
        "time_disagreement_vs_model_only": round(statistics.mean(dis_base), 4),
        "time_disagreement_vs_truth_gated": round(statistics.mean(dis_truth["gated"]), 4),
        "time_disagreement_vs_truth_model_only": round(statistics.mean(dis_truth["model_only"]), 4),
        "gate2_rate_in_speech": round(speech_model / max(1, speech_all), 3),
        "gate2_rate_in_noise": round(noise_model / max(1, noise_all), 3),
    }


def run_vad(args: argparse.Namespace) -> dict[str, Any]:
    """VAD CPU per call at ``--vad-calls`` concurrent calls, gate-2 rate and missed onsets."""
    rng = np.random.default_rng(args.vad_seed)
    rate = args.vad_rate
    pool = _utterances(rate, args.vad_engine, rng)
    distinct = min(args.vad_calls, 24)
    made = [call_track(args.vad_seconds, rate, args.vad_speech, pool, rng) for _ in range(distinct)]
    speech_share = statistics.mean(
        sum(b - a for a, b in truth) / args.vad_seconds for _, truth in made
    )
    framed = [_frames(audio, rate) for audio, _ in made]
    # every call replays one of the distinct tracks from its own offset (circularly)
    tracks = []
    for i in range(args.vad_calls):
        base = framed[i % distinct]
        off = int(rng.integers(len(base)))
        tracks.append(base[off:] + base[:off])
    cost = asyncio.run(_cost(args, tracks))
    quality = _quality(framed[: min(distinct, 8)], [t for _, t in made[:8]], rate)
    return {
        "command": "python -m harken.bench.speech_vad vad",
        "rate": rate,
        "engine": args.vad_engine,
        "speech_share": round(speech_share, 3),
        **cost,
        "quality": quality,
    }


def report_vad(r: dict[str, Any]) -> str:
    """Human-readable lines for :func:`run_vad`'s figures."""
    q = r["quality"]
    return "\n".join(
        [
            f"VAD, {r['calls']} calls at {r['rate']} Hz ({r['mode']}, speech "
            f"{100 * r['speech_share']:.0f}% of the time; load {r['load']})",
            f"  CPU per call: {r['vad_cpu_pct_per_call']:.3f}% of a core "
            f"(model {r['model_cpu_pct_per_call']:.3f}%, {r['model_us_per_window']:.0f} us per "
            f"window, batches of {r['batch_mean']:.0f})",
            f"  windows to the model: {100 * r['gate2_rate']:.0f}% "
            f"(in speech {100 * q['gate2_rate_in_speech']:.0f}%, "
            f"in noise {100 * q['gate2_rate_in_noise']:.0f}%)",
            f"  vs model-only: {q['missed_onsets_vs_model_only']} of "
            f"{q['segments_model_only']} onsets missed, "
            f"{q['extra_segments_vs_model_only']} extra segments, "
            f"{100 * q['time_disagreement_vs_model_only']:.2f}% of the time decided differently",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    import json
    import sys

    parser = argparse.ArgumentParser(prog="python -m harken.bench.speech_vad")
    parser.add_argument("which", choices=("vad", "turn", "all"), nargs="?", default="all")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    add_arguments(parser)
    args = parser.parse_args(argv)
    out: dict[str, Any] = {}
    if args.which in ("vad", "all"):
        out["vad"] = run_vad(args)
    if args.which in ("turn", "all"):
        out["turn"] = run_turn(args)
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        if "vad" in out:
            sys.stdout.write(report_vad(out["vad"]) + "\n")
        if "turn" in out:
            sys.stdout.write(report_turn(out["turn"]) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
