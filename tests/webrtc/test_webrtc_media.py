"""Audio through the WebRTC edges without a peer: the browser's decoded frames to agent
frames (mono, 16 kHz, 20 ms, media time true across lost packets), and the outbound track's
20 ms pacing."""

from __future__ import annotations

import asyncio
import fractions

import av
import numpy as np
import pytest

from harken.frames import AudioFrame, TTSStartedFrame, TTSStoppedFrame
from harken.pipeline import Call, Pipeline
from harken.transports.webrtc import AgentAudioTrack, InboundAudio, mono_pcm
from harken.transports.webrtc_output import WebRtcOutput


def opus_like_frame(pts: int, left: int, right: int) -> av.AudioFrame:
    """What aiortc's Opus decoder hands out: 20 ms of packed s16 stereo at 48 kHz."""
    data = np.empty((1, 1920), np.int16)
    data[0, 0::2] = left
    data[0, 1::2] = right
    frame = av.AudioFrame.from_ndarray(data, format="s16", layout="stereo")
    frame.sample_rate = 48000
    frame.pts = pts
    frame.time_base = fractions.Fraction(1, 48000)
    return frame


def test_a_decoded_stereo_frame_becomes_mono_samples_with_its_pts() -> None:
    pcm, rate, pts = mono_pcm(opus_like_frame(960 * 7, 1000, -5))
    assert rate == 48000 and pts == 960 * 7
    assert pcm.dtype == np.int16 and pcm.size == 960
    assert set(pcm.tolist()) == {1000}  # the first channel


def test_inbound_audio_is_16k_20ms_frames_in_media_time() -> None:
    inbound = InboundAudio(16000)
    t = np.arange(960 * 50) / 48000
    tone = (np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16)
    frames: list[AudioFrame] = []
    for i in range(50):
        frames += inbound.push(tone[i * 960 : (i + 1) * 960], 48000, pts=i * 960)
    assert len(frames) == 50
    assert all(f.sample_rate == 16000 and len(f.pcm) == 640 for f in frames)
    assert [f.timestamp for f in frames[:3]] == pytest.approx([0.0, 0.02, 0.04])
    assert inbound.gaps == 0
    level = np.abs(np.frombuffer(b"".join(f.pcm for f in frames[5:]), np.int16)).max()
    assert 7000 < level < 9000  # the tone survives the resampler


def test_a_lost_packet_is_concealed_and_a_long_gap_moves_media_time() -> None:
    inbound = InboundAudio(16000, max_conceal_s=0.2)
    chunk = np.full(960, 3000, np.int16)
    out = []
    for i in range(10):
        out += inbound.push(chunk, 48000, pts=i * 960)
    # packet 10 is lost: the next arrives one frame late in the RTP timeline
    out += inbound.push(chunk, 48000, pts=11 * 960)
    assert inbound.gaps == 1 and inbound.concealed_s == pytest.approx(0.02)
    assert len(out) == 12  # 11 real frames and one concealed
    assert out[-1].timestamp == pytest.approx(0.22)
    # a second of silence from the sender (muted mic, a long loss): time jumps, no audio made
    late = inbound.push(chunk, 48000, pts=(12 + 50) * 960)
    assert inbound.gaps == 2 and len(late) == 1
    assert late[0].timestamp == pytest.approx(0.24 + 1.0)


async def test_the_outbound_track_paces_one_frame_per_20_ms() -> None:
    out = WebRtcOutput(48000)
    call = Call(Pipeline([out]), call_id="t")
    await call.start()
    track = AgentAudioTrack(out)
    call.feed(TTSStartedFrame(utterance_id=1))
    call.feed(AudioFrame(np.full(48000 // 5, 2000, np.int16).tobytes(), 48000))  # 200 ms
    call.feed(TTSStoppedFrame(utterance_id=1))
    loop = asyncio.get_running_loop()
    start = loop.time()
    frames = [await track.recv() for _ in range(15)]
    elapsed = loop.time() - start
    assert elapsed == pytest.approx(14 * 0.02, abs=0.03)  # the first is immediate
    assert [f.pts for f in frames[:3]] == [0, 960, 1920]
    assert all(f.samples == 960 and f.sample_rate == 48000 for f in frames)
    voiced = [int(np.abs(f.to_ndarray()).max()) for f in frames]
    assert voiced[:10] == [2000] * 10 and voiced[10:] == [0] * 5  # then silence
    track.stop()
