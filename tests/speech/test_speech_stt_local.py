"""Local STT engines on real synthesized speech: offline loading, accuracy, threading, sharing.

The audio is made by Piper (en_US-joe-medium) and espeak-ng from the sentences in
:mod:`harken.bench.stt_corpus`, synthesized once and cached (``$HARKEN_STT_CORPUS`` or a
directory under the system tmp).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from harken.bench.stt_corpus import SENTENCES, Utterance, corpus, synthesize, wer
from harken.speech.stt import base
from harken.speech.stt.sphinx import SphinxEngine
from harken.speech.stt.whisper import WhisperEngine, whisper_model, whisper_model_dir

TEST_SENTENCES = (*SENTENCES[3:5], *SENTENCES[::6])  # 11 sentences spread over the corpus


@pytest.fixture(scope="module")
def utterances() -> list[Utterance]:
    pytest.importorskip("piper", reason="the piper extra is needed for the second voice")
    return corpus(sentences=TEST_SENTENCES)


@pytest.fixture(scope="module")
def whisper() -> WhisperEngine:
    engine = WhisperEngine()
    engine.warm_up_sync()
    return engine


NO_NETWORK = textwrap.dedent(
    """
    import socket

    def _refuse(*args, **kwargs):
        raise OSError("networking is disabled in this test")

    socket.socket.connect = _refuse
    socket.socket.connect_ex = _refuse
    socket.create_connection = _refuse
    socket.getaddrinfo = _refuse

    import sys

    import numpy as np
    from harken.speech.stt.sphinx import SphinxEngine
    from harken.speech.stt.whisper import WhisperEngine

    pcm = np.load(sys.argv[1])
    whisper = WhisperEngine()
    whisper.warm_up_sync()
    print("whisper:", whisper.transcribe_sync(pcm).text)
    sphinx = SphinxEngine(pool_size=1)
    sphinx.warm_up_sync()
    print("sphinx:", sphinx._decode_all(sphinx._pool.take(), pcm.tobytes()))
    """
)


def test_models_load_from_installed_packages_with_networking_disabled(
    tmp_path: Path, utterances: list[Utterance]
) -> None:
    clip = next(u for u in utterances if u.voice == "piper" and u.text.startswith("Please cancel"))
    np.save(tmp_path / "clip.npy", clip.pcm)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env["HF_HOME"] = str(tmp_path)  # an empty hub cache: nothing can come from there either
    out = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, str(tmp_path / "clip.npy")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = dict(line.split(": ", 1) for line in out.stdout.strip().splitlines())
    assert "cancel my appointment on friday morning" in lines["whisper"].lower()
    assert "cancel my appointment" in lines["sphinx"]
    assert whisper_model_dir().name == "model"
    assert (whisper_model_dir() / "model.bin").stat().st_size > 10_000_000


def test_whisper_round_trip_two_voices(whisper: WhisperEngine, utterances: list[Utterance]) -> None:
    pairs = [(u.text, whisper.transcribe_sync(u.pcm).text) for u in utterances]
    by_voice = {
        v: wer(p for p, u in zip(pairs, utterances, strict=True) if u.voice == v)
        for v in ("piper", "espeak")
    }
    assert wer(pairs) <= 0.10, (by_voice, pairs)
    assert by_voice["piper"] <= 0.10, pairs


def test_whisper_reduced_context_matches_full_context(whisper: WhisperEngine) -> None:
    """The default (8 s) encoder context reads a clip like the full 30 s does (and ends cleanly)."""
    full = WhisperEngine(whisper.options, context_s=30.0)
    pcm = synthesize(SENTENCES[3], "espeak")
    assert whisper.transcribe_sync(pcm).text == full.transcribe_sync(pcm).text


def test_whisper_drops_a_looped_repeat_of_the_sentence() -> None:
    """tiny.en with too short a context repeats the utterance until the token budget cuts it."""
    from harken.speech.stt.whisper import _drop_repeats

    looped = "Can you tell me what time it is? Can you tell me what time"
    assert _drop_repeats(looped, 2.0, 4.5) == "Can you tell me what time it is?"
    twice = "Do you have any rooms? Do you have any rooms? Do you have"
    assert _drop_repeats(twice, 1.5, 4.5) == "Do you have any rooms?"
    # plausible for the audio: left alone; a short fragment is not taken for a repeat
    assert _drop_repeats(looped, 4.0, 4.5) == looped
    assert _drop_repeats("Yes, yes. I said yes. Yes, I", 0.8, 4.5) == "Yes, yes. I said yes. Yes, I"
    # the decoder ran out of budget: repeats go at any rate, and so does the unfinished end
    bye = "Okay, goodbye. Bye. Bye. Bye. Bye Bye"
    assert _drop_repeats(bye, 4.0, 4.5, cut=True) == "Okay, goodbye. Bye."
    assert _drop_repeats("Okay, goodbye. Bye. Okay,", 4.0, 4.5, cut=True) == "Okay, goodbye. Bye."
    assert _drop_repeats("Okay, goodbye", 4.0, 4.5, cut=True) == "Okay, goodbye"


def test_whisper_loop_after_resumed_speech_ends_on_a_whole_sentence(
    whisper: WhisperEngine,
) -> None:
    """The suite's "Okay, | goodbye." as the STT buffers it (two stretches of speech, 120 ms of
    line before the first): tiny.en reads "Okay, goodbye." and then loops on "Bye." until the
    token budget stops it. Cut mid-loop it once read "Okay, goodbye. Bye. Okay,", and the
    trailing "Okay," kept the turn waiting for more (2 s of dead air)."""
    from harken.audio import Resampler
    from harken.audio.g711 import ulaw_decode

    fixture = Path(__file__).parent / "fixtures" / "okay-goodbye.ulaw"
    pcm = Resampler(8000, 16000).process(ulaw_decode(fixture.read_bytes()))
    for start_s, end_s in ((1.7, 3.1), (1.75, 3.1), (1.7, 3.3)):
        clip = pcm[int(start_s * 32000) & ~1 : int(end_s * 32000) & ~1]
        text = whisper.transcribe_sync(clip).text
        assert text.lower().startswith("okay, goodbye."), text
        assert text.endswith((".", "!", "?")), text


def test_whisper_forced_prefix_and_silence(whisper: WhisperEngine) -> None:
    pcm = synthesize("I would like to book a table for two.", "espeak")
    result = whisper.transcribe_sync(pcm, prefix="I would like")
    assert result.text.startswith("I would like")
    assert "table" in result.text
    assert whisper.transcribe_sync(np.zeros(16000, np.int16)).text == ""
    end = whisper.word_end_sync(pcm, "I would like to book")
    assert end is not None and 0.3 < end < len(pcm) / 16000 - 0.3


async def test_inference_runs_on_the_shared_pool_and_the_model_is_shared(
    whisper: WhisperEngine,
) -> None:
    threads: list[str] = []
    original = whisper.transcribe_sync

    def spy(*args: object, **kwargs: object) -> object:
        threads.append(threading.current_thread().name)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    engine = WhisperEngine(whisper.options)
    engine.transcribe_sync = spy  # type: ignore[method-assign]
    pcm = synthesize("Good morning, I need some help.", "espeak").tobytes()
    results = await asyncio.gather(*(engine.transcribe(pcm) for _ in range(3)))
    assert all("need some help" in r.text.lower() for r in results), results
    assert threads and all(name.startswith("harken-stt") for name in threads)
    assert threading.main_thread().name not in threads
    # one model per process, whatever the number of engines
    assert whisper_model(engine.options) is whisper_model(whisper.options)
    assert base.inference_executor() is base.inference_executor()
    assert base.inference_executor()._max_workers <= 2


def test_sphinx_streaming_decoder_pool(utterances: list[Utterance]) -> None:
    engine = SphinxEngine(pool_size=1)
    engine.warm_up_sync()
    loaded = engine.loaded
    clip = next(u for u in utterances if u.voice == "piper" and "weather" in u.text)
    pcm = clip.pcm.tobytes()

    async def main() -> list[str]:
        stream = await engine.open_stream()
        texts: list[str] = []

        async def read() -> None:
            async for event in stream.events():
                texts.append(event.text)
                if event.flushed:
                    return

        reader = asyncio.create_task(read())
        for i in range(0, len(pcm), 640):
            await stream.send(pcm[i : i + 640])
        await stream.finalize()
        await asyncio.wait_for(reader, 30)
        await stream.aclose()
        return texts

    texts = asyncio.run(main())
    assert len(texts) >= 3  # partials while decoding, then the final
    assert "weather" in texts[-1]
    assert engine.loaded == loaded  # the warm decoder was borrowed, not a new one loaded
