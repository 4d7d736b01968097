"""SIP messages (RFC 3261), sans-I/O: one datagram in, a request or a response out; and back.

:func:`parse_message` turns one UDP datagram into a :class:`SipRequest` or :class:`SipResponse`
and raises :class:`~harken.errors.RemoteProtocolError` (and nothing else) on anything malformed:

* the start line (``METHOD uri SIP/2.0`` or ``SIP/2.0 200 OK``); other versions are refused;
* headers: compact forms expanded (``v`` Via, ``i`` Call-ID, ``f`` From, ``t`` To, ``m`` Contact,
  ``l`` Content-Length, ``c`` Content-Type, ...), folded lines joined (a line starting with a
  space or tab continues the previous one), names matched case-insensitively;
* ``Content-Length``: the body is cut to it (a datagram may carry padding); a body shorter than
  it is a truncated message; without it the rest of the datagram is the body (UDP only);
* every request needs Via, From, To, Call-ID and CSeq, and the CSeq method must be the request's.

Bare LF line ends are accepted (robustness); we always send CRLF. Header values are UTF-8.

The value parsers (:func:`parse_via`, :func:`parse_name_addr`, :func:`parse_uri`,
:func:`parse_cseq`) raise the same error. Builders: :meth:`SipRequest.encode`,
:meth:`SipResponse.encode` (``Content-Length`` is always written from the body) and
:func:`response_to` (a response that copies Via, From, To, Call-ID and CSeq from its request).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from harken.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAGIC_COOKIE",
    "MAX_MESSAGE",
    "Headers",
    "NameAddr",
    "SipRequest",
    "SipResponse",
    "SipUri",
    "Via",
    "new_branch",
    "new_tag",
    "parse_cseq",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "response_to",
    "split_message",
]

MAX_MESSAGE: Final = 65535
MAGIC_COOKIE: Final = "z9hG4bK"
_MAX_HEADERS: Final = 256

# fmt: off
COMPACT: Final = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact",
    "k": "Supported", "l": "Content-Length", "m": "Contact", "n": "Identity-Info",
    "o": "Event", "r": "Refer-To", "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via",
    "x": "Session-Expires", "y": "Identity",
}
_IRREGULAR: Final = (
    "Call-ID", "CSeq", "WWW-Authenticate", "MIME-Version", "RAck", "RSeq", "SIP-ETag",
    "SIP-If-Match",
)
#: headers whose value is a comma-separated list (RFC 3261 7.3.1)
_LIST_HEADERS: Final = frozenset((
    "via", "contact", "route", "record-route", "allow", "supported", "require",
    "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
    "allow-events", "content-encoding", "path",
))
_REASONS: Final = {
    100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 400: "Bad Request",
    405: "Method Not Allowed", 415: "Unsupported Media Type", 420: "Bad Extension",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 505: "Version Not Supported",
}
# fmt: on
_CANONICAL: Final = {n.lower(): n for n in (*_IRREGULAR, *COMPACT.values())}
_TOKEN: Final = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+\Z")


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts superscripts that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def reason_phrase(status: int) -> str:
    """The standard reason phrase of a status code (a generic one for unknown codes)."""
    return _REASONS.get(status) or ("OK" if 200 <= status < 300 else "Unknown")


def canonical(name: str) -> str:
    """The canonical spelling of a header name (compact forms expanded)."""
    low = name.lower()
    if len(low) == 1 and low in COMPACT:
        return COMPACT[low]
    known = _CANONICAL.get(low)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:].lower() for part in low.split("-"))


def split_list(value: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside quoted strings and ``<...>``; parts are stripped, empty dropped."""
    parts: list[str] = []
    depth = 0
    quoted = False
    start = 0
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
        i += 1
    if quoted:
        raise RemoteProtocolError(f"SIP: unterminated quoted string in {value[:60]!r}")
    parts.append(value[start:].strip())
    return [p for p in parts if p]


class Headers:
    """Ordered SIP headers with case-insensitive lookup (names kept canonical)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items: list[tuple[str, str]] = [(canonical(k), v) for k, v in items or ()]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (for a list header: its first element)."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers (Via, Contact, Route, ...) split."""
        key = canonical(name)
        low = key.lower()
        found = [v for k, v in self._items if k == key]
        if low in _LIST_HEADERS:
            return [part for v in found for part in split_list(v)]
        return found

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` with one value (kept at the first one's place)."""
        key = canonical(name)
        out: list[tuple[str, str]] = []
        done = False
        for k, v in self._items:
            if k != key:
                out.append((k, v))
            elif not done:
                out.append((key, value))
                done = True
        if not done:
            out.append((key, value))
        self._items = out

    def remove(self, name: str) -> None:
        key = canonical(name)
        self._items = [item for item in self._items if item[0] != key]

    def copy(self) -> Headers:
        h = Headers()
        h._items = list(self._items)
        return h

    def encode(self, body: bytes) -> bytes:
        lines = [f"{k}: {v}" for k, v in self._items if k != "Content-Length"]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(slots=True)
class SipRequest:
    """A SIP request: ``method``, ``uri`` (the Request-URI, unparsed), headers and body."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def encode(self) -> bytes:
        if not _TOKEN.match(self.method) or not self.uri or " " in self.uri:
            raise LocalProtocolError(f"SIP: bad request line {self.method!r} {self.uri!r}")
        start = f"{self.method} {self.uri} SIP/2.0\r\n".encode()
        return start + self.headers.encode(self.body) + self.body

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def top_via(self) -> Via:
        return parse_via(self.headers.get("Via") or "")


@dataclass(slots=True)
class SipResponse:
    """A SIP response: ``status``, ``reason``, headers and body."""

    status: int
    reason: str = ""
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    def encode(self) -> bytes:
        if not 100 <= self.status <= 699 or "\r" in self.reason or "\n" in self.reason:
            raise LocalProtocolError(f"SIP: bad status line {self.status} {self.reason!r}")
        reason = self.reason or reason_phrase(self.status)
        start = f"SIP/2.0 {self.status} {reason}\r\n".encode()
        return start + self.headers.encode(self.body) + self.body

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def top_via(self) -> Via:
        return parse_via(self.headers.get("Via") or "")


# ---------------------------------------------------------------------------------------------
# parsing a datagram


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf <= lf):
        return data[:crlf], data[crlf + 4 :]
    if lf >= 0:
        return data[:lf], data[lf + 2 :]
    return data, b""  # no empty line: headers only (tolerated on UDP)


def split_message(data: bytes) -> tuple[str, Headers, bytes]:
    """Start line, headers and body of a datagram, checked for structure only (the lenient
    first half of :func:`parse_message`, also used to address a 400 to a broken request)."""
    if len(data) > MAX_MESSAGE:
        raise RemoteProtocolError(f"SIP: message of {len(data)} bytes is too large")
    data = data.lstrip(b"\r\n")
    if not data:
        raise RemoteProtocolError("SIP: empty message")
    head, body = _split_head(data)
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RemoteProtocolError(f"SIP: header block is not UTF-8: {exc.reason}") from None
    if "\x00" in text:
        raise RemoteProtocolError("SIP: NUL byte in the header block")
    lines = text.replace("\r\n", "\n").split("\n")
    start = lines[0].strip()
    items: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not items:
                raise RemoteProtocolError("SIP: folded line before any header")
            name, value = items[-1]
            items[-1] = (name, f"{value} {line.strip()}".strip())
            continue
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.match(name):
            raise RemoteProtocolError(f"SIP: malformed header line {line[:60]!r}")
        items.append((name, value.strip()))
        if len(items) > _MAX_HEADERS:
            raise RemoteProtocolError("SIP: too many headers")
    headers = Headers(items)
    lengths = headers.get_all("Content-Length")
    if lengths:
        if len(set(lengths)) > 1 or not _digits(lengths[0]) or len(lengths[0]) > 6:
            raise RemoteProtocolError(f"SIP: bad Content-Length {lengths[0][:20]!r}")
        length = int(lengths[0])
        if length > len(body):
            raise RemoteProtocolError(
                f"SIP: truncated message (Content-Length {length}, body {len(body)} bytes)"
            )
        body = body[:length]
    return start, headers, body


def parse_message(data: bytes) -> SipRequest | SipResponse:
    """Parse one datagram (see the module docstring)."""
    start, headers, body = split_message(data)
    parts = start.split(None, 2)
    if len(parts) >= 2 and parts[0].upper() == "SIP/2.0":
        code = parts[1]
        if len(code) != 3 or not _digits(code) or not 100 <= int(code) <= 699:
            raise RemoteProtocolError(f"SIP: bad status code {code[:10]!r}")
        response = SipResponse(int(code), parts[2] if len(parts) == 3 else "", headers, body)
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            if not headers.get(name):
                raise RemoteProtocolError(f"SIP: response without {name}")
        response.cseq  # noqa: B018 - validates
        response.top_via  # noqa: B018
        return response
    if len(parts) != 3 or not _TOKEN.match(parts[0]):
        raise RemoteProtocolError(f"SIP: bad start line {start[:80]!r}")
    method, uri, version = parts
    if version.upper() != "SIP/2.0":
        raise RemoteProtocolError(f"SIP: unsupported version {version[:20]!r}")
    if ":" not in uri:
        raise RemoteProtocolError(f"SIP: bad Request-URI {uri[:80]!r}")
    request = SipRequest(method, uri, headers, body)
    validate_request(request)
    return request


def validate_request(request: SipRequest) -> None:
    """The mandatory headers of a request (RFC 3261 8.1.1) are there and consistent."""
    h = request.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if not h.get(name):
            raise RemoteProtocolError(f"SIP: {request.method} without {name}")
    _, method = request.cseq
    if method != request.method:
        raise RemoteProtocolError(f"SIP: CSeq method {method!r} is not {request.method!r}")
    request.top_via  # noqa: B018 - validates
    parse_name_addr(h.get("From") or "")
    parse_name_addr(h.get("To") or "")


# ---------------------------------------------------------------------------------------------
# header values


def _params(text: str) -> dict[str, str | None]:
    """``;a=b;c`` -> {"a": "b", "c": None} (names lower-cased; quoted values unquoted)."""
    out: dict[str, str | None] = {}
    for part in split_list(text, ";"):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not name or not _TOKEN.match(name):
            raise RemoteProtocolError(f"SIP: bad parameter {part[:40]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        out[name] = value if sep else None
    return out


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _host_port(text: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise RemoteProtocolError(f"SIP: bad IPv6 reference {text[:60]!r}")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, _, port_text = text.partition(":")
        rest = ":" + port_text if _ else ""
    if not host or any(c in host for c in ' \t<>"\\;,'):
        raise RemoteProtocolError(f"SIP: bad host {text[:60]!r}")
    if not rest:
        return host, None
    if not rest.startswith(":") or not _digits(rest[1:]) or len(rest) > 6:
        raise RemoteProtocolError(f"SIP: bad port in {text[:60]!r}")
    port = int(rest[1:])
    if not 0 < port <= 65535:
        raise RemoteProtocolError(f"SIP: port out of range in {text[:60]!r}")
    return host, port


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str:
        return self.params.get("branch") or ""

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{_format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one Via value (the first of a list)."""
    first = split_list(value)[:1]
    if not first:
        raise RemoteProtocolError("SIP: empty Via")
    proto, _, rest = first[0].partition(" ")
    bits = [b.strip() for b in proto.split("/")]
    if len(bits) != 3 or bits[0].upper() != "SIP" or not bits[2] or not _TOKEN.match(bits[2]):
        raise RemoteProtocolError(f"SIP: bad Via protocol {proto[:40]!r}")
    sent_by, _, params = rest.strip().partition(";")
    host, port = _host_port(sent_by)
    return Via(bits[2].upper(), host, port, _params(params))


@dataclass(frozen=True, slots=True)
class SipUri:
    """``sip:user@host:port;params`` (``headers`` after ``?`` kept raw)."""

    scheme: str
    user: str
    host: str
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        tail = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{self.host}{port}{_format_params(self.params)}{tail}"


def parse_uri(value: str) -> SipUri:
    """Parse a ``sip:`` / ``sips:`` URI (``tel:`` and others raise)."""
    text = value.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("sip", "sips"):
        raise RemoteProtocolError(f"SIP: not a SIP URI: {text[:60]!r}")
    rest, _, headers = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        userinfo, hostpart = "", rest
    user = userinfo.partition(":")[0]
    hostport, _, params = hostpart.partition(";")
    host, port = _host_port(hostport)
    return SipUri(scheme, user, host, port, _params(params), headers)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, URI, header parameters."""

    display: str
    uri: str
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str:
        return self.params.get("tag") or ""

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.display, self.uri, {**self.params, "tag": tag})

    def __str__(self) -> str:
        display = f'"{self.display}" ' if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """``"Bob" <sip:bob@b.example>;tag=1``, ``<sip:x>``, or a bare ``sip:x;tag=1`` (where the
    parameters belong to the header, RFC 3261 20.10)."""
    text = value.strip()
    if not text:
        raise RemoteProtocolError("SIP: empty address")
    lt = -1
    quoted = False
    for i, ch in enumerate(text):  # the first "<" outside a quoted display name
        if ch == '"':
            quoted = not quoted
        elif ch == "<" and not quoted:
            lt = i
            break
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise RemoteProtocolError(f"SIP: unclosed <...> in {text[:60]!r}")
        display = text[:lt].strip()
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1]
        uri = text[lt + 1 : gt].strip()
        rest = text[gt + 1 :].strip()
        if rest and not rest.startswith(";"):
            raise RemoteProtocolError(f"SIP: junk after address in {text[:60]!r}")
        params = _params(rest)
    else:
        uri, _, rest = text.partition(";")
        display, params = "", _params(rest)
        uri = uri.strip()
    if ":" not in uri or any(c in uri for c in ' "<>'):
        raise RemoteProtocolError(f"SIP: bad URI in address {text[:60]!r}")
    return NameAddr(display, uri, params)


def parse_cseq(value: str) -> tuple[int, str]:
    """``"314159 INVITE"`` -> (314159, "INVITE"); the number must fit 31 bits."""
    parts = value.split()
    if len(parts) != 2 or not _digits(parts[0]) or len(parts[0]) > 10:
        raise RemoteProtocolError(f"SIP: bad CSeq {value[:40]!r}")
    number = int(parts[0])
    if number >= 1 << 31 or not _TOKEN.match(parts[1]):
        raise RemoteProtocolError(f"SIP: bad CSeq {value[:40]!r}")
    return number, parts[1]


# ---------------------------------------------------------------------------------------------
# building


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 64 random bits)."""
    return MAGIC_COOKIE + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def response_to(
    request: SipRequest,
    status: int,
    reason: str = "",
    *,
    to_tag: str = "",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    source: tuple[str, int] | None = None,
) -> SipResponse:
    """A response to ``request``: Via (all), From, To (``to_tag`` added when it has none),
    Call-ID and CSeq copied (RFC 3261 8.2.6.2), then ``headers``.

    With ``source`` (where the request came from), the top Via gets ``received`` when its host
    differs (RFC 3261 18.2.1) and ``rport`` filled in when the sender asked for it (RFC 3581).
    """
    h = Headers()
    for i, via in enumerate(request.headers.get_all("Via")):
        h.add("Via", _received(via, source) if i == 0 and source is not None else via)
    h.add("From", request.headers.get("From") or "")
    to = request.headers.get("To") or ""
    if to_tag and status != 100 and not parse_name_addr(to).tag:
        to = f"{to};tag={to_tag}"
    h.add("To", to)
    h.add("Call-ID", request.call_id)
    h.add("CSeq", request.headers.get("CSeq") or "")
    for name, value in headers or ():
        h.add(name, value)
    reason = "".join(c for c in reason if c.isprintable())[:120]
    return SipResponse(status, reason or reason_phrase(status), h, body)


def _received(value: str, source: tuple[str, int]) -> str:
    via = parse_via(value)
    params = dict(via.params)
    if "rport" in params:
        params["rport"] = str(source[1])
    if via.host.strip("[]") != source[0]:
        params["received"] = source[0]
    if params == via.params:
        return value
    return str(Via(via.transport, via.host, via.port, params))
