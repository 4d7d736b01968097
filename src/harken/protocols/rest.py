"""Carrier REST requests that end a call, as data (no I/O).

Each builder returns an :class:`HttpRequest` that the I/O layer sends as is. ``base_url`` is
configurable (tests point it at a local server); it must be an absolute ``http(s)`` URL and may
carry a path prefix.

=========  =================================================================  ==============
carrier    request                                                            auth
=========  =================================================================  ==============
Twilio     ``POST {base}/2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``  Basic
           form body ``Status=completed``                                     sid:token
Telnyx     ``POST {base}/v2/calls/{call_control_id}/actions/hangup``          Bearer API key
           JSON body (``{}`` or ``client_state`` / ``command_id``)
Plivo      ``DELETE {base}/v1/Account/{auth_id}/Call/{call_uuid}/``           Basic
                                                                              id:token
=========  =================================================================  ==============

Transfers (the agent's ``transfer_call``) move the caller elsewhere and end our media stream:

=========  =================================================================================
Twilio     the same Call resource, form body ``Twiml=<Response><Dial>TARGET</Dial></Response>``
Telnyx     ``POST {base}/v2/calls/{call_control_id}/actions/transfer``, JSON ``{"to": TARGET}``
=========  =================================================================================
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import quote, urlencode, urlsplit
from xml.sax.saxutils import escape

import orjson

from harken.errors import LocalProtocolError

__all__ = [
    "PLIVO_API",
    "TELNYX_API",
    "TWILIO_API",
    "HttpRequest",
    "plivo_hangup",
    "telnyx_hangup",
    "telnyx_transfer",
    "twilio_hangup",
    "twilio_transfer",
]

TWILIO_API = "https://api.twilio.com"
TELNYX_API = "https://api.telnyx.com"
PLIVO_API = "https://api.plivo.com"


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP request to send: ``headers`` is an ordered tuple of (name, value) pairs."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return None


def twilio_hangup(
    account_sid: str, auth_token: str, call_sid: str, *, base_url: str = TWILIO_API
) -> HttpRequest:
    """Complete (hang up) a Twilio call: ``Status=completed`` on the Call resource."""
    path = (
        f"/2010-04-01/Accounts/{_segment(account_sid, 'account sid')}"
        f"/Calls/{_segment(call_sid, 'call sid')}.json"
    )
    return HttpRequest(
        method="POST",
        url=_base(base_url) + path,
        headers=(
            ("Authorization", _basic(account_sid, auth_token)),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ),
        body=urlencode({"Status": "completed"}).encode(),
    )


def twilio_transfer(
    account_sid: str,
    auth_token: str,
    call_sid: str,
    target: str,
    *,
    base_url: str = TWILIO_API,
) -> HttpRequest:
    """Redirect a live Twilio call to new TwiML that dials ``target`` (number or SIP URI)."""
    target = _text(target, "transfer target").strip()
    noun = f"<Sip>{escape(target)}</Sip>" if target.startswith("sip:") else escape(target)
    twiml = f"<Response><Dial>{noun}</Dial></Response>"
    req = twilio_hangup(account_sid, auth_token, call_sid, base_url=base_url)
    return HttpRequest(req.method, req.url, req.headers, urlencode({"Twiml": twiml}).encode())


def telnyx_transfer(
    api_key: str, call_control_id: str, target: str, *, base_url: str = TELNYX_API
) -> HttpRequest:
    """Transfer a Telnyx Call Control call to ``target``."""
    req = telnyx_hangup(api_key, call_control_id, base_url=base_url)
    url = req.url.removesuffix("/hangup") + "/transfer"
    body = orjson.dumps({"to": _text(target, "transfer target").strip()})
    return HttpRequest(req.method, url, req.headers, body)


def telnyx_hangup(
    api_key: str,
    call_control_id: str,
    *,
    client_state: str | None = None,
    command_id: str | None = None,
    base_url: str = TELNYX_API,
) -> HttpRequest:
    """Hang up a Telnyx Call Control call."""
    body: dict[str, str] = {}
    if client_state is not None:
        body["client_state"] = _text(client_state, "client_state")
    if command_id is not None:
        body["command_id"] = _text(command_id, "command_id")
    return HttpRequest(
        method="POST",
        url=_base(base_url)
        + f"/v2/calls/{_segment(call_control_id, 'call control id')}/actions/hangup",
        headers=(
            ("Authorization", "Bearer " + _header_value(api_key, "API key")),
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
        ),
        body=orjson.dumps(body),
    )


def plivo_hangup(
    auth_id: str, auth_token: str, call_uuid: str, *, base_url: str = PLIVO_API
) -> HttpRequest:
    """Hang up a live Plivo call."""
    return HttpRequest(
        method="DELETE",
        url=_base(base_url)
        + f"/v1/Account/{_segment(auth_id, 'auth id')}/Call/{_segment(call_uuid, 'call uuid')}/",
        headers=(
            ("Authorization", _basic(auth_id, auth_token)),
            ("Accept", "application/json"),
        ),
    )


# --------------------------------------------------------------------------------------------
# validation


def _text(value: str, what: str) -> str:
    if type(value) is not str or not value:
        raise LocalProtocolError(f"{what} must be a non-empty string")
    return value


def _header_value(value: str, what: str) -> str:
    _text(value, what)
    if any(ch in value for ch in "\r\n\0"):
        raise LocalProtocolError(f"{what} contains a line break or NUL")
    return value


def _segment(value: str, what: str) -> str:
    """One URL path segment: non-empty, no separators, percent-encoded (``:`` kept, as in
    Telnyx ``v3:...`` ids)."""
    _header_value(value, what)
    if value in (".", "..") or any(ch in value for ch in "/?#\\") or not value.isprintable():
        raise LocalProtocolError(f"{what} {value!r:.60} is not a valid path segment")
    return quote(value, safe=":")


def _basic(user: str, password: str) -> str:
    _header_value(user, "username")
    _header_value(password, "password")
    if ":" in user:
        raise LocalProtocolError("Basic auth username must not contain ':'")
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _base(url: str) -> str:
    if type(url) is not str:
        raise LocalProtocolError("base_url must be a string")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise LocalProtocolError(f"base_url {url!r:.80} is not a URL") from exc
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or parts.query
        or parts.fragment
        or any(ch.isspace() for ch in url)
    ):
        raise LocalProtocolError(
            f"base_url {url!r:.80} must be an absolute http(s) URL without query or fragment"
        )
    return url.rstrip("/")
