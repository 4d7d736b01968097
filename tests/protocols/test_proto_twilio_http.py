"""Twilio webhook signatures and ``<Connect><Stream>`` TwiML."""

from __future__ import annotations

import base64
import hashlib
import hmac
import xml.etree.ElementTree as ET

import pytest

from harken.errors import LocalProtocolError
from harken.protocols.twilio import compute_signature, connect_stream_twiml, validate_signature

# The vector Twilio's own helper libraries test against.
TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
    "Caller": "+14158675309",
}
EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def test_documented_vector() -> None:
    assert compute_signature(TOKEN, URL, PARAMS) == EXPECTED
    assert compute_signature(TOKEN, URL, list(PARAMS.items())[::-1]) == EXPECTED
    assert validate_signature(TOKEN, URL, PARAMS, EXPECTED)


def test_signature_is_hmac_sha1_over_url_and_sorted_params() -> None:
    data = URL + "".join(k + v for k, v in sorted(PARAMS.items()))
    mine = base64.b64encode(hmac.new(b"12345", data.encode(), hashlib.sha1).digest()).decode()
    assert mine == EXPECTED


def test_repeated_keys_sort_by_value() -> None:
    pairs = [("Sid", "CA123"), ("SidAccount", "AC123"), ("Digits", "5678"), ("Digits", "1234")]
    assert compute_signature(TOKEN, URL, pairs) == "IK+Dwps556ElfBT0I3Rgjkr1wJU="


def test_ports_are_tolerated_both_ways() -> None:
    with_port = URL.replace(".com", ".com:1234")
    assert validate_signature(TOKEN, with_port, PARAMS, EXPECTED)  # signed without the port
    assert validate_signature(TOKEN, URL, PARAMS, "kvajT1Ptam85bY51eRf/AJRuM3w=")  # with :443
    http = URL.replace("https", "http")
    assert validate_signature(TOKEN, http, PARAMS, "0ZXoZLH/DfblKGATFgpif+LLRf4=")  # with :80


@pytest.mark.parametrize(
    "signature",
    [None, "", "RSOYDt4T1cUTdK1PDd93/VVr8B8", EXPECTED.lower(), "ünïcode", "A" * 1000],
)
def test_wrong_signatures_fail(signature: str | None) -> None:
    assert not validate_signature(TOKEN, URL, PARAMS, signature)


def test_tampering_fails() -> None:
    assert not validate_signature(TOKEN, URL, {**PARAMS, "Digits": "1235"}, EXPECTED)
    assert not validate_signature(TOKEN, URL + "&x=1", PARAMS, EXPECTED)
    assert not validate_signature("54321", URL, PARAMS, EXPECTED)
    assert not validate_signature(TOKEN, "https://[bad", PARAMS, EXPECTED)


def test_non_string_params_are_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        compute_signature(TOKEN, URL, {"Digits": 1234})  # type: ignore[dict-item]


def test_twiml_connect_stream() -> None:
    twiml = connect_stream_twiml(
        "wss://voice.example.com/twilio?tenant=a&x=1",
        {"caller": "+1 555 <0100>", "quote": "say \"hi\" & 'bye'", "multi": "a\nb"},
        name="agent",
    )
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream ')
    root = ET.fromstring(twiml)
    stream = root.find("./Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://voice.example.com/twilio?tenant=a&x=1"
    assert stream.get("name") == "agent"
    params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    assert params == {"caller": "+1 555 <0100>", "quote": "say \"hi\" & 'bye'", "multi": "a\nb"}
    assert "&amp;x=1" in twiml and "&lt;0100&gt;" in twiml


def test_twiml_without_parameters_and_with_callback() -> None:
    twiml = connect_stream_twiml(
        "wss://h/s", status_callback="https://h/cb?a=1&b=2", status_callback_method="POST"
    )
    stream = ET.fromstring(twiml).find("./Connect/Stream")
    assert stream is not None and list(stream) == []
    assert stream.get("statusCallback") == "https://h/cb?a=1&b=2"
    assert stream.get("statusCallbackMethod") == "POST"


@pytest.mark.parametrize(
    ("url", "kwargs"),
    [
        ("ws://h/s", {}),
        ("https://h/s", {}),
        ("wss:///s", {}),
        ("h/s", {}),
        ("wss://h/s", {"parameters": {"": "x"}}),
        ("wss://h/s", {"parameters": {"k": 5}}),
        ("wss://h/s", {"parameters": {"k": "bell\x07"}}),
        ("wss://h/s", {"parameters": {"k": "\udc80"}}),
        ("wss://h/s", {"name": "\x00"}),
        ("wss://h/s", {"status_callback_method": "PUT"}),
    ],
)
def test_twiml_refuses_invalid_input(url: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(LocalProtocolError):
        connect_stream_twiml(url, **kwargs)  # type: ignore[arg-type]


def test_twiml_insecure_only_when_asked() -> None:
    assert 'url="ws://127.0.0.1:8080/twilio"' in connect_stream_twiml(
        "ws://127.0.0.1:8080/twilio", allow_insecure=True
    )
