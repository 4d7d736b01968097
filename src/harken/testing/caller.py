"""A synthetic caller for end-to-end tests: TTS-made caller speech, and waiting for the agent.

TEST TOOL ONLY. The caller's words are synthesised with espeak-ng (the agent's own voice is
another engine or voice, so the two are told apart by content, not by sound) and played over a
:class:`~harken.testing.twilio.TwilioEmulator` at 8 kHz, paced like a carrier.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from harken.audio import resample
from harken.testing.twilio import TwilioEmulator

if TYPE_CHECKING:
    from harken.conversation import ConversationEngine
    from harken.server.worker import Worker

__all__ = ["agent_quiet", "caller_voice", "connect", "engine_of"]


def caller_voice(text: str, voice: str = "auto") -> npt.NDArray[np.int16]:
    """``text`` spoken as 8 kHz int16 PCM: Piper's neural voice when the ``piper`` extra is
    installed (``voice="auto"`` or ``"piper"``), else espeak-ng's ``en-us`` at 160 wpm."""
    from harken.speech.tts.piper import piper_available

    if voice == "piper" or (voice == "auto" and piper_available()):
        pcm, rate = _piper(text)
    else:
        from harken.speech.tts.espeak import say

        pcm, rate = say(text, voice="en-us", rate=160), 22050
    return np.frombuffer(resample(pcm.tobytes(), rate, 8000), dtype=np.int16)


_PIPER: list[object] = []


def _piper(text: str) -> tuple[npt.NDArray[np.int16], int]:
    if not _PIPER:
        from piper import PiperVoice  # type: ignore[import-untyped,import-not-found,unused-ignore]

        from harken.speech.tts.piper import default_voice

        _PIPER.append(PiperVoice.load(str(default_voice())))
    chunks = list(_PIPER[0].synthesize(text))  # type: ignore[attr-defined]
    pcm = np.concatenate([c.audio_int16_array for c in chunks]).astype(np.int16)
    return pcm, int(chunks[0].sample_rate)


async def agent_quiet(em: TwilioEmulator, quiet_s: float = 0.8, timeout: float = 30.0) -> None:
    """Wait until the agent has said something and then stayed silent for ``quiet_s`` with
    nothing left to play."""
    loop = asyncio.get_running_loop()
    start_n = em.received_samples
    async with asyncio.timeout(timeout):
        while em.received_samples == start_n:
            await asyncio.sleep(0.05)
        while True:
            n = em.received_samples
            await asyncio.sleep(quiet_s)
            if em.received_samples == n and em.playback_end <= loop.time():
                return


def connect(worker: Worker, **options: object) -> TwilioEmulator:
    """An emulated Twilio call to an in-process worker (silence flows between utterances)."""
    return TwilioEmulator(
        f"ws://127.0.0.1:{worker.media_port}/stream/twilio",
        background_silence=True,
        **options,  # type: ignore[arg-type]
    )


def engine_of(worker: Worker) -> ConversationEngine:
    """The conversation engine of the worker's only live call."""
    from harken.conversation import ConversationEngine

    (session,) = worker.manager.sessions
    assert session.call is not None
    for stage in session.call.stages:
        if isinstance(stage, ConversationEngine):
            return stage
    raise AssertionError("no conversation engine in the call")
