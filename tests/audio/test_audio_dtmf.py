"""DTMF: RFC 4733 packets, the in-band Goertzel detector, the tone generator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from harken.audio import g711
from harken.audio.dtmf import (
    DIGITS,
    DtmfDetector,
    EventReceiver,
    TelephoneEvent,
    digit_to_event,
    dtmf_tone,
    event_packets,
    generate_dtmf,
)
from harken.audio.level import rms_dbfs
from harken.bench.audio import speech_like
from harken.errors import AudioError, RemoteProtocolError


def detect(audio: np.ndarray, rate: int = 8000, chunk: int = 160) -> str:
    det = DtmfDetector(rate)
    found = []
    for i in range(0, len(audio), chunk):
        found += det.process(audio[i : i + chunk])
    return "".join(d.digit for d in found + det.flush())


# -- RFC 4733 -----------------------------------------------------------------------------------


def test_golden_payload() -> None:
    ev = TelephoneEvent(event=5, end=True, volume=10, duration=800)
    assert bytes(ev) == bytes.fromhex("058a0320")
    assert TelephoneEvent.parse(bytes.fromhex("0b0a00a0")) == TelephoneEvent(11, False, 10, 160)
    assert TelephoneEvent.parse(bytes.fromhex("0b0a00a0")).digit == "#"


@given(st.integers(0, 255), st.booleans(), st.integers(0, 63), st.integers(0, 0xFFFF))
def test_payload_round_trip(event: int, end: bool, volume: int, duration: int) -> None:
    ev = TelephoneEvent(event, end, volume, duration)
    assert TelephoneEvent.parse(bytes(ev)) == ev


@given(st.binary().filter(lambda b: len(b) != 4))
def test_malformed_payload_is_a_remote_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        TelephoneEvent.parse(data)


def test_three_end_packets_yield_exactly_one_digit() -> None:
    rx = EventReceiver()
    packets = event_packets("9", 160)
    assert sum(p.end for p in packets) == 3
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    digits = []
    for p in packets:
        digits += rx.feed(48000, p.payload)
    assert [(d.digit, d.duration_ms, d.timestamp) for d in digits] == [("9", 160, 48000)]
    # retransmitted end packets, even much later, are still ignored
    assert rx.feed(48000, packets[-1].payload) == []
    assert rx.flush() == []


def test_same_digit_twice_is_two_events_and_lost_ends_are_recovered() -> None:
    rx = EventReceiver()
    got = []
    for p in event_packets("1", 100):
        got += rx.feed(1000, p.payload)
    for p in event_packets("1", 100):
        got += rx.feed(3000, p.payload)
    # third press: every end packet lost; the next event reveals it ended
    for p in event_packets("2", 100):
        if not p.end:
            got += rx.feed(5000, p.payload)
    for p in event_packets("3", 60):
        got += rx.feed(7000, p.payload)
    assert [d.digit for d in got] == ["1", "1", "2", "3"]
    assert got[2].duration_ms == 50  # the last update seen


def test_poll_reports_an_event_whose_ends_never_came() -> None:
    rx = EventReceiver(timeout_ms=500)
    rx.feed(0xFFFFFF00, bytes(TelephoneEvent(4, False, 10, 400)))
    assert rx.poll(0xFFFFFF00 + 400 + 100) == []
    # the RTP clock wraps past 2**32 meanwhile
    got = rx.poll((0xFFFFFF00 + 400 + 4000 + 1) & 0xFFFFFFFF)
    assert [d.digit for d in got] == ["4"]


def test_reordered_update_after_end_is_ignored_and_non_dtmf_events_give_no_digit() -> None:
    rx = EventReceiver()
    assert [d.digit for d in rx.feed(10, bytes(TelephoneEvent(14, True, 10, 800)))] == ["C"]
    assert rx.feed(10, bytes(TelephoneEvent(14, False, 10, 400))) == []
    assert rx.feed(20, bytes(TelephoneEvent(16, True, 10, 800))) == []  # flash: not a digit


def test_digit_codes() -> None:
    assert [digit_to_event(d) for d in "0159*#AD"] == [0, 1, 5, 9, 10, 11, 12, 15]
    with pytest.raises(AudioError):
        digit_to_event("E")
    with pytest.raises(AudioError):
        event_packets("5", 100_000)


# -- generator -------------------------------------------------------------------------------


def test_tone_level_and_frequencies() -> None:
    x = dtmf_tone("5", 8000, 1000, level_dbfs=-20.0)
    assert rms_dbfs(x) == pytest.approx(-20.0, abs=0.05)
    spec = np.abs(np.fft.rfft(x))
    peaks = sorted(np.argsort(spec)[-2:])
    assert peaks == [770, 1336]  # 1 s at 8 kHz: 1 Hz bins


# -- detector ----------------------------------------------------------------------------------


@pytest.mark.parametrize("law", [None, "ulaw", "alaw"])
def test_all_16_digits_at_minus_20_dbfs(law: str | None) -> None:
    audio = generate_dtmf(DIGITS, 8000, tone_ms=60, gap_ms=60, level_dbfs=-20.0)
    if law is not None:
        audio = g711.decode_array(law, g711.encode_array(law, audio))
    assert detect(audio) == DIGITS


@pytest.mark.parametrize("chunk", [1, 37, 160, 4000])
def test_detection_does_not_depend_on_chunking(chunk: int) -> None:
    audio = generate_dtmf("147*2580369#ABCD", 8000, tone_ms=50, gap_ms=50)
    assert detect(audio, chunk=chunk) == "147*2580369#ABCD"


def test_16khz_audio() -> None:
    assert detect(generate_dtmf("90#", 16000), 16000, 320) == "90#"


def test_duration_checks() -> None:
    """Q.24: accept 40 ms tones, reject 20 ms ones, whatever their alignment to the blocks."""
    for offset in range(0, 102, 17):
        pad = np.zeros(offset, np.int16)
        tail = np.zeros(400, np.int16)
        assert detect(np.concatenate([pad, dtmf_tone("8", 8000, 40), tail])) == "8"
        assert detect(np.concatenate([pad, dtmf_tone("8", 8000, 20), tail])) == ""


def test_twist_and_level_checks() -> None:
    tail = np.zeros(400, np.int16)
    assert detect(np.concatenate([dtmf_tone("5", 8000, 80, twist_db=-7), tail])) == "5"
    assert detect(np.concatenate([dtmf_tone("5", 8000, 80, twist_db=-10), tail])) == ""
    assert detect(np.concatenate([dtmf_tone("5", 8000, 80, twist_db=3), tail])) == "5"
    assert detect(np.concatenate([dtmf_tone("5", 8000, 80, twist_db=6), tail])) == ""
    assert detect(np.concatenate([dtmf_tone("5", 8000, 80, level_dbfs=-34), tail])) == "5"
    assert detect(np.concatenate([dtmf_tone("5", 8000, 80, level_dbfs=-48), tail])) == ""


def test_same_digit_repeated_with_short_gaps() -> None:
    audio = generate_dtmf("5555", 8000, tone_ms=45, gap_ms=40)
    assert detect(audio) == "5555"


def test_digits_in_noise_and_speech() -> None:
    rng = np.random.default_rng(5)
    audio = generate_dtmf("31#", 8000, tone_ms=80, gap_ms=80, level_dbfs=-15)
    noisy = audio + (rng.standard_normal(len(audio)) * 300).astype(np.int16)  # ~20 dB SNR
    assert detect(noisy) == "31#"


def test_no_false_digits_in_speech_like_audio_and_noise() -> None:
    """A short version of the bench's 10-minute check (60 s, clean and through µ-law)."""
    speech = speech_like(60.0, 8000, seed=11)
    assert detect(speech, chunk=8000) == ""
    assert detect(g711.ulaw_decode_array(g711.ulaw_encode(speech.tobytes())), chunk=8000) == ""
    noise = (np.random.default_rng(2).standard_normal(8000 * 20) * 4000).astype(np.int16)
    assert detect(noise, chunk=8000) == ""


def test_bad_rate() -> None:
    with pytest.raises(AudioError):
        DtmfDetector(2000)
