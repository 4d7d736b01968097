"""Property tests: whatever a carrier sends, a codec returns an event or raises
RemoteProtocolError, never anything else; builders return valid messages or raise
LocalProtocolError."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harken.errors import LocalProtocolError, RemoteProtocolError
from harken.protocols import (
    CODECS,
    AudioCleared,
    CarrierCodec,
    CarrierError,
    Connected,
    DtmfReceived,
    MarkEchoed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    UnknownEvent,
    compute_signature,
    connect_stream_twiml,
    validate_signature,
)

EVENTS = (
    Connected,
    StreamStarted,
    MediaReceived,
    DtmfReceived,
    MarkEchoed,
    AudioCleared,
    StreamStopped,
    CarrierError,
    UnknownEvent,
)
FIXTURES = Path(__file__).parent / "fixtures"
CARRIERS = sorted(CODECS)
#: Examples per property; raise it for a deeper run: ``HARKEN_FUZZ_EXAMPLES=20000 pytest ...``.
EXAMPLES = int(os.environ.get("HARKEN_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Every inbound golden message, parsed once: {carrier: {name: message}}.
GOLDEN: dict[str, dict[str, Any]] = {
    carrier: {
        p.stem: json.loads(p.read_text())
        for p in sorted((FIXTURES / carrier).glob("*.json"))
        if not p.stem.startswith("out_")
    }
    for carrier in CARRIERS
}

texts = st.one_of(
    st.text(max_size=30),
    st.from_regex(r"[0-9]{0,24}", fullmatch=True),
    st.sampled_from(
        [
            "",
            "AAAA",
            "AA==",
            "-1",
            "1.5",
            "inbound",
            "audio/x-mulaw",
            "PCMU",
            "L16",
            "#",
            "*",
            "websocket:connected",
            "audio/l16;rate=16000",
            "media",
            "start",
            "stop",
            "mark",
        ]
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=6,
)


def _nest(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = {"k": value} if depth % 2 else [value]
    return value


#: Values nested around orjson's limits (it reads 1024 levels but writes only 254).
deep = st.integers(200, 1100).map(_nest)
#: Replacement values for mutations: mostly scalars, so messages stay close to valid.
leaves = st.none() | st.booleans() | st.integers(-5, 2**64) | st.floats(allow_nan=False) | texts
mutations = (
    leaves | st.lists(leaves, max_size=2) | st.dictionaries(texts, leaves, max_size=2) | deep
)
carriers = st.sampled_from(CARRIERS)


def golden(carrier: str, name: str) -> Any:
    return json.loads(json.dumps(GOLDEN[carrier][name]))


def fresh(carrier: str, start: bool) -> CarrierCodec:
    codec = CODECS[carrier]()
    if start:
        codec.receive_text(
            json.dumps(GOLDEN[carrier]["connected" if carrier == "vonage" else "start"])
        )
    return codec


def feed(codec: CarrierCodec, message: str | bytes, binary: bool = False) -> None:
    try:
        event = codec.receive_bytes(message) if binary else codec.receive_text(message)  # type: ignore[arg-type]
    except RemoteProtocolError as exc:
        assert str(exc)
        return
    assert isinstance(event, EVENTS)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


def _mutate(msg: Any, path: tuple[Any, ...], value: Any, delete: bool) -> Any:
    node = msg
    for key in path[:-1]:
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return msg


@FUZZ
@given(carrier=carriers, start=st.booleans(), text=st.text(max_size=200) | st.binary(max_size=200))
def test_arbitrary_text(carrier: str, start: bool, text: str | bytes) -> None:
    feed(fresh(carrier, start), text)


@FUZZ
@given(carrier=carriers, start=st.booleans(), value=json_values)
def test_arbitrary_json(carrier: str, start: bool, value: Any) -> None:
    feed(fresh(carrier, start), json.dumps(value))


@FUZZ
@given(carrier=carriers, start=st.booleans(), data=st.data())
def test_event_shaped_objects(carrier: str, start: bool, data: st.DataObject) -> None:
    names = sorted({m.get("event", "x") for m in GOLDEN[carrier].values()})
    msg = data.draw(st.dictionaries(texts, mutations, max_size=5))
    msg["event"] = data.draw(st.sampled_from(names))
    feed(fresh(carrier, start), json.dumps(msg))


@settings(
    max_examples=EXAMPLES * 3 // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(carrier=carriers, start=st.booleans(), data=st.data())
def test_mutated_golden_messages(carrier: str, start: bool, data: st.DataObject) -> None:
    codec = fresh(carrier, start)
    for _ in range(data.draw(st.integers(1, 3))):
        msg = golden(carrier, data.draw(st.sampled_from(sorted(GOLDEN[carrier]))))
        for _ in range(data.draw(st.integers(1, 3))):
            paths = _paths(msg)
            if not paths:
                break
            path = data.draw(st.sampled_from(paths))
            msg = _mutate(msg, path, data.draw(mutations), data.draw(st.booleans()))
        feed(codec, json.dumps(msg))


@FUZZ
@given(frames=st.lists(st.binary(max_size=700), max_size=5), start=st.booleans())
def test_vonage_arbitrary_binary(frames: list[bytes], start: bool) -> None:
    codec = fresh("vonage", start)
    for frame in frames:
        feed(codec, frame, binary=True)


def _echoed_name(message: dict[str, Any]) -> Any:
    for holder in (message.get("mark"), message.get("payload"), message):
        if isinstance(holder, dict) and "name" in holder:
            return holder["name"]
    raise AssertionError(message)


@FUZZ
@given(carrier=carriers, name=st.text(max_size=300), payload=st.binary(max_size=400))
def test_builders(carrier: str, name: str, payload: bytes) -> None:
    codec = fresh(carrier, True)
    try:
        mark = codec.mark(name)
    except LocalProtocolError:
        assert not name or len(name) > 256 or any(0xD800 <= ord(c) <= 0xDFFF for c in name)
    else:
        assert _echoed_name(json.loads(mark)) == name
    try:
        out = codec.media(payload)
    except LocalProtocolError:
        return
    if isinstance(out, str):
        json.loads(out)
    else:
        assert out == payload


@FUZZ
@given(
    token=st.text(min_size=1, max_size=20),
    url=st.text(max_size=60),
    params=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=5),
)
def test_signature_round_trip(token: str, url: str, params: dict[str, str]) -> None:
    surrogate = any(
        0xD800 <= ord(c) <= 0xDFFF for c in token + url + "".join(params) + "".join(params.values())
    )
    if surrogate:
        return
    signature = compute_signature(token, url, params)
    assert validate_signature(token, url, params, signature)
    assert not validate_signature(token + "x", url, params, signature)


@FUZZ
@given(params=st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=4))
def test_twiml_escaping(params: dict[str, str]) -> None:
    try:
        twiml = connect_stream_twiml("wss://example.com/s", params)
    except LocalProtocolError:
        return
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None
    assert {p.get("name"): p.get("value") for p in stream.findall("Parameter")} == params
