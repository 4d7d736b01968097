"""Strict readers for carrier JSON and small writers for outbound messages (private).

Every reader raises :class:`~harken.errors.RemoteProtocolError` on bad input and nothing else;
``where`` names the carrier, event and field so the message says exactly what was wrong.
Every writer raises :class:`~harken.errors.LocalProtocolError` when asked to build something the
carrier would reject.
"""

from __future__ import annotations

from binascii import a2b_base64
from typing import Any

import orjson

from harken.errors import LocalProtocolError, RemoteProtocolError

from .events import Encoding

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError

#: Longest decimal string accepted for a counter (fits a signed 64-bit integer).
_MAX_DIGITS = 18
#: Longest mark name we send; every carrier echoes it back verbatim.
MAX_MARK_NAME = 256

DTMF_DIGITS = frozenset("0123456789*#ABCD")


def load_object(text: str | bytes, carrier: str) -> dict[str, Any]:
    """Parse one text frame into a JSON object."""
    try:
        msg = _loads(text)
    except _JSONDecodeError as exc:
        raise RemoteProtocolError(f"{carrier}: message is not valid JSON: {exc}") from exc
    if type(msg) is not dict:
        raise RemoteProtocolError(f"{carrier}: message is not a JSON object")
    return msg


def event_name(msg: dict[str, Any], carrier: str, key: str = "event") -> str:
    name = msg.get(key)
    if type(name) is not str:
        raise RemoteProtocolError(f"{carrier}: {key!r} is missing or not a string")
    return name


def obj(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """A required JSON object member."""
    value = d.get(key)
    if type(value) is not dict:
        raise RemoteProtocolError(f"{where}: {key!r} is missing or not an object")
    return value


def opt_obj(d: dict[str, Any], key: str, where: str) -> dict[str, Any] | None:
    value = d.get(key)
    if value is None:
        return None
    if type(value) is not dict:
        raise RemoteProtocolError(f"{where}: {key!r} is not an object")
    return value


def string(d: dict[str, Any], key: str, where: str, *, allow_empty: bool = False) -> str:
    """A required string member (non-empty unless ``allow_empty``)."""
    value = d.get(key)
    if type(value) is not str:
        raise RemoteProtocolError(f"{where}: {key!r} is missing or not a string")
    if not value and not allow_empty:
        raise RemoteProtocolError(f"{where}: {key!r} is empty")
    return value


def opt_string(d: dict[str, Any], key: str, where: str) -> str | None:
    value = d.get(key)
    if value is None or type(value) is str:
        return value
    raise RemoteProtocolError(f"{where}: {key!r} is not a string")


def uint(value: Any, key: str, where: str) -> int:
    """A non-negative integer sent as a JSON number or as a string of ASCII digits (Twilio
    sends strings). Signs, spaces, fractions, exponents and more than 18 digits are refused."""
    if type(value) is str:
        if 0 < len(value) <= _MAX_DIGITS and value.isascii() and value.isdigit():
            return int(value)
    elif type(value) is int and value >= 0:
        return value
    raise RemoteProtocolError(f"{where}: {key!r} is not a non-negative integer: {value!r:.40}")


def opt_uint(d: dict[str, Any], key: str, where: str) -> int | None:
    value = d.get(key)
    if value is None:
        return None
    return uint(value, key, where)


def b64(value: Any, key: str, where: str) -> bytes:
    """Decode a required, non-empty, strictly valid base64 string."""
    if type(value) is not str or not value:
        raise RemoteProtocolError(f"{where}: {key!r} is missing, empty or not a string")
    try:
        return a2b_base64(value, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or non-ASCII text
        raise RemoteProtocolError(f"{where}: {key!r} is not valid base64: {exc}") from exc


def str_map(value: Any, key: str, where: str, *, coerce: bool = False) -> dict[str, str]:
    """A JSON object of string values. With ``coerce``, scalars and nested values are rendered
    as JSON text instead of being rejected (Vonage headers may hold any JSON)."""
    if value is None:
        return {}
    if type(value) is not dict:
        raise RemoteProtocolError(f"{where}: {key!r} is not an object")
    out: dict[str, str] = {}
    for k, v in value.items():
        if type(v) is str:
            out[k] = v
        elif coerce:
            try:
                out[k] = _dumps(v).decode()
            except orjson.JSONEncodeError as exc:  # nested deeper than orjson will write
                raise RemoteProtocolError(f"{where}: {key}[{k!r}] is nested too deeply") from exc
        else:
            raise RemoteProtocolError(f"{where}: {key}[{k!r}] is not a string")
    return out


def str_list(value: Any, key: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list or not all(type(v) is str for v in value):
        raise RemoteProtocolError(f"{where}: {key!r} is not a list of strings")
    return tuple(value)


def dtmf_digit(value: Any, where: str) -> str:
    if type(value) is str:
        digit = value.upper()
        if digit in DTMF_DIGITS:
            return digit
    raise RemoteProtocolError(f"{where}: 'digit' is not a DTMF key: {value!r:.40}")


def sample_rate(value: Any, key: str, where: str) -> int:
    rate = uint(value, key, where)
    if not 4000 <= rate <= 192_000:
        raise RemoteProtocolError(f"{where}: {key!r} {rate} is not a usable sample rate")
    return rate


def channels(value: Any, key: str, where: str) -> int:
    count = uint(value, key, where)
    if not 1 <= count <= 8:
        raise RemoteProtocolError(f"{where}: {key!r} {count} is not a usable channel count")
    return count


def encoding(name: str, table: dict[str, Encoding], where: str) -> Encoding:
    """Map a carrier's codec name (case-insensitive, parameters after ``;`` ignored)."""
    found = table.get(name.split(";", 1)[0].strip().lower())
    if found is None:
        raise RemoteProtocolError(f"{where}: unsupported audio encoding {name!r:.60}")
    return found


def media_format(
    start: dict[str, Any],
    key: str,
    table: dict[str, Encoding],
    where: str,
    *,
    rate_key: str,
    default: Encoding,
) -> tuple[Encoding, int, int, dict[str, Any]]:
    """``start[key]``, the stream's audio format: (encoding, sample rate, channels, the raw
    object). The whole object is optional (defaults: ``default`` at 8000 Hz, mono); when present
    its ``encoding`` is required and the rate and channel count are optional."""
    fmt = opt_obj(start, key, where)
    if fmt is None:
        return default, 8000, 1, {}
    found = encoding(string(fmt, "encoding", where), table, where)
    rate = fmt.get(rate_key)
    count = fmt.get("channels")
    return (
        found,
        8000 if rate is None else sample_rate(rate, rate_key, where),
        1 if count is None else channels(count, "channels", where),
        fmt,
    )


def scalar_extra(d: dict[str, Any], skip: frozenset[str]) -> dict[str, str]:
    """The string and number members of ``d`` not in ``skip``, rendered as strings."""
    out: dict[str, str] = {}
    for k, v in d.items():
        if k in skip:
            continue
        if type(v) is str:
            out[k] = v
        elif type(v) in (int, float, bool):
            out[k] = _dumps(v).decode()
    return out


# --------------------------------------------------------------------------------------------
# writers


def json_text(value: str, what: str) -> str:
    """``value`` as a JSON string literal (quotes included), for preformatted templates."""
    if type(value) is not str:
        raise LocalProtocolError(f"{what} must be a string, not {type(value).__name__}")
    try:
        return _dumps(value).decode()
    except orjson.JSONEncodeError as exc:  # lone surrogates
        raise LocalProtocolError(f"{what} cannot be encoded as JSON: {exc}") from exc


#: Characters a JSON string may hold unescaped (printable ASCII but the quote and backslash).
_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\"}


def mark_name(name: str) -> str:
    """Validate a mark name we are about to send; return it as a JSON string literal."""
    if type(name) is str and 0 < len(name) <= MAX_MARK_NAME and _PLAIN.issuperset(name):
        return '"' + name + '"'  # the usual case (harken's own names): nothing to escape
    text = json_text(name, "mark name")
    if not name or len(name) > MAX_MARK_NAME:
        raise LocalProtocolError(f"mark name must have 1..{MAX_MARK_NAME} characters")
    return text


def dumps(value: Any) -> str:
    return _dumps(value).decode()
