"""Hang-up request builders: method, URL, auth and body, and refusal of unsafe input."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs

import pytest

from harken.errors import LocalProtocolError
from harken.protocols.rest import (
    HttpRequest,
    plivo_hangup,
    telnyx_hangup,
    telnyx_transfer,
    twilio_hangup,
    twilio_transfer,
)


def _basic(request: HttpRequest) -> str:
    header = request.header("authorization")
    assert header is not None and header.startswith("Basic ")
    return base64.b64decode(header[6:]).decode()


def test_twilio_hangup() -> None:
    req = twilio_hangup("AC123", "secret-token", "CA456")
    assert req.method == "POST"
    assert req.url == "https://api.twilio.com/2010-04-01/Accounts/AC123/Calls/CA456.json"
    assert _basic(req) == "AC123:secret-token"
    assert req.header("Content-Type") == "application/x-www-form-urlencoded"
    assert parse_qs(req.body.decode()) == {"Status": ["completed"]}


def test_telnyx_hangup() -> None:
    ccid = "v3:MdI91X4lWFEs7IgbBEOT9M4AigoY08M0WWZFISt1Yw2axZ_IiE4pqg"
    req = telnyx_hangup("KEY0123", ccid)
    assert req.method == "POST"
    assert req.url == f"https://api.telnyx.com/v2/calls/{ccid}/actions/hangup"
    assert req.header("Authorization") == "Bearer KEY0123"
    assert req.header("content-type") == "application/json"
    assert json.loads(req.body) == {}
    req = telnyx_hangup("KEY0123", ccid, client_state="c3RhdGU=", command_id="cmd-1")
    assert json.loads(req.body) == {"client_state": "c3RhdGU=", "command_id": "cmd-1"}


def test_plivo_hangup() -> None:
    req = plivo_hangup("MAXXXXXXXXXXXXXXXXXX", "tok", "12345678-1234-1234-1234-123456789abc")
    assert req.method == "DELETE"
    assert req.url == (
        "https://api.plivo.com/v1/Account/MAXXXXXXXXXXXXXXXXXX/Call/"
        "12345678-1234-1234-1234-123456789abc/"
    )
    assert _basic(req) == "MAXXXXXXXXXXXXXXXXXX:tok"
    assert req.body == b""
    assert req.header("Content-Type") is None


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://127.0.0.1:8123", "http://127.0.0.1:8123/2010-04-01"),
        ("http://127.0.0.1:8123/", "http://127.0.0.1:8123/2010-04-01"),
        ("https://proxy.local/twilio/", "https://proxy.local/twilio/2010-04-01"),
    ],
)
def test_base_url_is_configurable(base: str, expected: str) -> None:
    assert twilio_hangup("AC1", "t", "CA1", base_url=base).url.startswith(expected)
    assert telnyx_hangup("k", "c", base_url=base).url.startswith(base.rstrip("/") + "/v2/")
    assert plivo_hangup("a", "t", "c", base_url=base).url.startswith(base.rstrip("/") + "/v1/")


def test_ids_are_percent_encoded() -> None:
    req = twilio_hangup("AC1", "t", "CA 1%")
    assert req.url.endswith("/Calls/CA%201%25.json")


@pytest.mark.parametrize(
    "call",
    [
        lambda: twilio_hangup("AC1", "t", "../CA1"),
        lambda: twilio_hangup("AC1", "t", "CA1/x"),
        lambda: twilio_hangup("AC1", "t", ".."),
        lambda: twilio_hangup("AC1", "t", ""),
        lambda: twilio_hangup("AC1", "t", "CA1?x=1"),
        lambda: twilio_hangup("AC:1", "t", "CA1"),
        lambda: twilio_hangup("AC1", "t\r\nX-Evil: 1", "CA1"),
        lambda: twilio_hangup("AC1", "t", None),
        lambda: telnyx_hangup("key\n", "c"),
        lambda: telnyx_hangup("", "c"),
        lambda: telnyx_hangup("k", "c", client_state=""),
        lambda: telnyx_hangup("k", "c#frag"),
        lambda: plivo_hangup("a", "t", "c\x00"),
        lambda: plivo_hangup("a", "t", "c", base_url="ftp://x"),
        lambda: plivo_hangup("a", "t", "c", base_url="http://x/?q=1"),
        lambda: plivo_hangup("a", "t", "c", base_url="/relative"),
        lambda: plivo_hangup("a", "t", "c", base_url="http://x y"),
        lambda: plivo_hangup("a", "t", "c", base_url="http://[bad"),
    ],
)
def test_unsafe_input_is_a_local_error(call: object) -> None:
    with pytest.raises(LocalProtocolError):
        call()  # type: ignore[operator]


def test_request_is_immutable() -> None:
    req = plivo_hangup("a", "t", "c")
    with pytest.raises(AttributeError):
        req.url = "http://elsewhere"  # type: ignore[misc]


def test_twilio_transfer_redirects_to_dial_twiml_with_escaping() -> None:
    req = twilio_transfer("AC1", "tok", "CA2", "+15550100")
    assert req.url.endswith("/Accounts/AC1/Calls/CA2.json") and _basic(req) == "AC1:tok"
    twiml = parse_qs(req.body.decode())["Twiml"][0]
    assert twiml == "<Response><Dial>+15550100</Dial></Response>"
    sip = parse_qs(twilio_transfer("AC1", "t", "CA2", "sip:a@b.com?x=<1>").body.decode())
    assert sip["Twiml"][0] == "<Response><Dial><Sip>sip:a@b.com?x=&lt;1&gt;</Sip></Dial></Response>"
    with pytest.raises(LocalProtocolError):
        twilio_transfer("AC1", "t", "CA2", "")


def test_telnyx_transfer() -> None:
    req = telnyx_transfer("KEY", "ccid-1", "+15550100")
    assert req.url == "https://api.telnyx.com/v2/calls/ccid-1/actions/transfer"
    assert req.header("Authorization") == "Bearer KEY"
    assert json.loads(req.body) == {"to": "+15550100"}
