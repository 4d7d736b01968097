"""Mark-versus-clear semantics: a mark echoed because of ``clear`` means *flushed*, not played.

No carrier's wire says which of the two an echo is; the codec knows because it remembers which
marks were pending when it built ``clear``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from harken.protocols import CODECS, AudioCleared, CarrierCodec, MarkEchoed

Golden = Callable[[str, str], dict[str, Any]]


def started(carrier: str, golden: Golden) -> CarrierCodec:
    codec = CODECS[carrier]()
    codec.receive_text(json.dumps(golden(carrier, "connected" if carrier == "vonage" else "start")))
    return codec


def echo(codec: CarrierCodec, name: str) -> str:
    """The carrier's echo of mark ``name``, as that carrier words it."""
    sid = codec.stream_id
    return json.dumps(
        {
            "twilio": {"event": "mark", "streamSid": sid, "mark": {"name": name}},
            "telnyx": {"event": "mark", "stream_id": sid, "mark": {"name": name}},
            "exotel": {"event": "mark", "stream_sid": sid, "mark": {"name": name}},
            "plivo": {"event": "playedStream", "streamId": sid, "name": name},
            "vonage": {"event": "websocket:notify", "payload": {"name": name}},
        }[codec.name]
    )


CLEAR_ACK = {
    "plivo": '{"event": "clearedAudio"}',
    "vonage": '{"event": "websocket:cleared"}',
}
ALL = ["twilio", "telnyx", "plivo", "vonage", "exotel"]


@pytest.mark.parametrize("carrier", ALL)
def test_played_marks_echo_in_order(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    codec.mark("a")
    codec.mark("b")
    assert codec.pending_marks == ("a", "b")
    assert codec.receive_text(echo(codec, "a")) == MarkEchoed("a", cleared=False)
    assert codec.pending_marks == ("b",)
    assert codec.receive_text(echo(codec, "b")) == MarkEchoed("b", cleared=False)
    assert codec.pending_marks == ()


@pytest.mark.parametrize("carrier", ALL)
def test_marks_pending_at_clear_come_back_flagged(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    codec.mark("a")
    codec.mark("b")
    codec.clear()
    assert codec.pending_marks == ()
    codec.mark("c")  # queued after the clear: a normal mark again
    assert codec.receive_text(echo(codec, "a")) == MarkEchoed("a", cleared=True)
    assert codec.receive_text(echo(codec, "b")) == MarkEchoed("b", cleared=True)
    assert codec.receive_text(echo(codec, "c")) == MarkEchoed("c", cleared=False)


@pytest.mark.parametrize("carrier", ALL)
def test_a_reused_name_resolves_flushed_first(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    codec.mark("utt")
    codec.clear()
    codec.mark("utt")
    assert codec.receive_text(echo(codec, "utt")) == MarkEchoed("utt", cleared=True)
    assert codec.receive_text(echo(codec, "utt")) == MarkEchoed("utt", cleared=False)


@pytest.mark.parametrize("carrier", ALL)
def test_unexpected_echo_is_passed_through(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    codec.mark("mine")
    assert codec.receive_text(echo(codec, "not-mine")) == MarkEchoed("not-mine", cleared=False)
    assert codec.pending_marks == ("mine",)


@pytest.mark.parametrize("carrier", ["plivo", "vonage"])
def test_clear_acknowledgements_list_the_flushed_marks(carrier: str, golden: Golden) -> None:
    codec = started(carrier, golden)
    assert codec.confirms_clear
    codec.mark("a")
    codec.clear()
    codec.mark("b")
    codec.mark("c")
    codec.clear()
    codec.clear()
    ack = CLEAR_ACK[carrier]
    assert codec.receive_text(ack) == AudioCleared(("a",))
    assert codec.receive_text(ack) == AudioCleared(("b", "c"))
    assert codec.receive_text(ack) == AudioCleared(())
    assert codec.receive_text(ack) == AudioCleared(())  # unsolicited: nothing to report
    # Plivo documents that flushed checkpoints are never echoed; if one is, it is not "played"
    assert codec.receive_text(echo(codec, "b")) == MarkEchoed("b", cleared=True)


def test_carrier_descriptions() -> None:
    table = {
        name: (cls.completion, cls.confirms_clear, cls.marks_echo_on_clear, cls.binary_audio)
        for name, cls in CODECS.items()
    }
    assert table == {
        "twilio": ("mark", False, True, False),
        "telnyx": ("mark", False, True, False),
        "plivo": ("checkpoint", True, False, False),
        "vonage": ("notify", True, None, True),
        "exotel": ("mark", False, None, False),
    }
    assert all(cls.supports_marks for cls in CODECS.values())
