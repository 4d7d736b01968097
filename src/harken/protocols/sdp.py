"""SDP (RFC 4566) and offer/answer (RFC 3264) for one G.711 audio stream with RFC 4733 DTMF.

:func:`parse_sdp` reads a session description strictly enough to act on it and raises
:class:`~harken.errors.RemoteProtocolError` (and nothing else) when it cannot: ``v=0`` first,
a valid ``o=`` and ``m=`` lines, ports and payload types in range, a connection address for every
accepted stream. Unknown line types and attributes are kept or ignored, as RFC 4566 asks.

:func:`negotiate` picks, from an offer, the first ``audio`` stream over ``RTP/AVP`` (or AVPF)
that offers PCMU (payload 0, or a dynamic ``PCMU/8000``) or PCMA (8, or ``PCMA/8000``), in the
offerer's order of preference, plus its ``telephone-event/8000`` payload if any. It returns
None when nothing matches (the caller answers 488 Not Acceptable Here). :func:`answer_sdp`
builds the answer with the offer's payload numbers, ``a=ptime:20``, the direction that mirrors
the offer's (``sendrecv`` for ``sendrecv``, ``recvonly`` for ``sendonly``, ...), the offer's
``t=`` line, and every other stream of the offer rejected with port 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from harken.errors import RemoteProtocolError

__all__ = [
    "Media",
    "Negotiated",
    "Origin",
    "SessionDescription",
    "answer_sdp",
    "negotiate",
    "offer_sdp",
    "parse_sdp",
]

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
Encoding = Literal["mulaw", "alaw"]
DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
_MIRROR: Final[dict[str, Direction]] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}
_STATIC: Final = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
_ENCODINGS: Final[dict[str, Encoding]] = {"PCMU": "mulaw", "PCMA": "alaw"}
_NAMES: Final = {"mulaw": "PCMU", "alaw": "PCMA"}
_MAX_SDP: Final = 16384
_MAX_MEDIA: Final = 16


def _digits(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts superscripts that ``int`` refuses)."""
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Origin:
    username: str
    session_id: str
    version: int
    nettype: str
    addrtype: str
    address: str


@dataclass(slots=True)
class Media:
    """One ``m=`` section."""

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> str | None:
        return next((v for k, v in self.attributes if k == name), None)

    def has(self, name: str) -> bool:
        return any(k == name for k, _ in self.attributes)

    @property
    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """Payload type -> (encoding name upper-cased, clock rate), static types included."""
        out: dict[int, tuple[str, int]] = {}
        for pt in self.payload_types:
            if pt in _STATIC:
                out[pt] = _STATIC[pt]
        for k, v in self.attributes:
            if k != "rtpmap" or not v:
                continue
            pt_text, _, spec = v.partition(" ")
            name, _, rest = spec.strip().partition("/")
            rate = rest.partition("/")[0]
            if _digits(pt_text) and _digits(rate) and name:
                out[int(pt_text)] = (name.upper(), int(rate))
        return out

    @property
    def payload_types(self) -> list[int]:
        return [int(f) for f in self.formats if _digits(f) and int(f) < 128]

    def fmtp(self, pt: int) -> str | None:
        for k, v in self.attributes:
            if k == "fmtp" and v and v.partition(" ")[0] == str(pt):
                return v.partition(" ")[2].strip()
        return None

    def direction(self, default: Direction = "sendrecv") -> Direction:
        for k, _ in reversed(self.attributes):
            if k in DIRECTIONS:
                return k  # type: ignore[return-value]
        return default


@dataclass(slots=True)
class SessionDescription:
    origin: Origin
    name: str = "-"
    connection: str | None = None
    timing: str = "0 0"
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    def direction(self) -> Direction:
        for k, _ in reversed(self.attributes):
            if k in DIRECTIONS:
                return k  # type: ignore[return-value]
        return "sendrecv"


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise RemoteProtocolError(f"SDP: bad connection line {value[:60]!r}")
    address = parts[2].partition("/")[0]  # multicast TTL / count
    if not address:
        raise RemoteProtocolError("SDP: empty connection address")
    return address


def parse_sdp(data: bytes | str) -> SessionDescription:
    """Parse a session description (see the module docstring)."""
    if isinstance(data, bytes):
        if len(data) > _MAX_SDP:
            raise RemoteProtocolError(f"SDP: {len(data)} bytes is too large")
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError("SDP: not UTF-8") from None
    lines = [ln.strip() for ln in data.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or lines[0] != "v=0":
        raise RemoteProtocolError("SDP: must start with v=0")
    origin: Origin | None = None
    session = SessionDescription(Origin("-", "0", 0, "IN", "IP4", "0.0.0.0"))
    current: Media | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise RemoteProtocolError(f"SDP: malformed line {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "o":
            parts = value.split()
            if len(parts) != 6 or not _digits(parts[2]) or len(parts[2]) > 20:
                raise RemoteProtocolError(f"SDP: bad origin {value[:60]!r}")
            origin = Origin(parts[0], parts[1], int(parts[2]), *parts[3:6])
        elif kind == "s" and current is None:
            session.name = value
        elif kind == "t" and current is None:
            session.timing = value
        elif kind == "c":
            address = _connection(value)
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise RemoteProtocolError(f"SDP: bad media line {value[:60]!r}")
            port_text = parts[1].partition("/")[0]
            if not _digits(port_text) or int(port_text) > 65535:
                raise RemoteProtocolError(f"SDP: bad media port {parts[1][:20]!r}")
            if len(session.media) >= _MAX_MEDIA:
                raise RemoteProtocolError("SDP: too many media sections")
            current = Media(parts[0], int(port_text), parts[2], parts[3:])
            if parts[2].upper().startswith("RTP/") and not all(
                _digits(f) and int(f) < 128 for f in current.formats
            ):
                raise RemoteProtocolError(f"SDP: bad RTP payload types in {value[:60]!r}")
            session.media.append(current)
        elif kind == "a":
            name, sep, attr = value.partition(":")
            item = (name.strip(), attr.strip() if sep else None)
            (session.attributes if current is None else current.attributes).append(item)
    if origin is None:
        raise RemoteProtocolError("SDP: no origin (o=) line")
    session.origin = origin
    return session


@dataclass(frozen=True, slots=True)
class Negotiated:
    """What an offer and our answer agreed on.

    ``direction`` is *our* direction (the answer's). ``remote_address``/``remote_port`` is where
    the peer wants its RTP (0.0.0.0 means "hold": send nothing).
    """

    payload_type: int
    encoding: Encoding
    dtmf_payload_type: int | None
    remote_address: str
    remote_port: int
    direction: Direction
    media_index: int
    dtmf_fmtp: str | None = None

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and self.remote_address not in (
            "0.0.0.0",
            "::",
        )

    @property
    def codec_name(self) -> str:
        return _NAMES[self.encoding]


def negotiate(
    offer: SessionDescription, encodings: Sequence[Encoding] = ("mulaw", "alaw")
) -> Negotiated | None:
    """The stream and codec we accept from ``offer``; None when nothing is acceptable."""
    for index, m in enumerate(offer.media):
        if m.media != "audio" or m.port == 0 or m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
            continue
        address = m.connection or offer.connection
        if address is None:
            raise RemoteProtocolError("SDP: audio stream without a connection address")
        rtpmap = m.rtpmap
        chosen: tuple[int, Encoding] | None = None
        for pt in m.payload_types:
            name, rate = rtpmap.get(pt, ("", 0))
            enc = _ENCODINGS.get(name)
            if enc is not None and rate == 8000 and enc in encodings:
                chosen = (pt, enc)
                break
        if chosen is None:
            continue
        dtmf = next(
            (pt for pt, (n, r) in rtpmap.items() if n == "TELEPHONE-EVENT" and r == 8000), None
        )
        direction = _MIRROR[m.direction(offer.direction())]
        return Negotiated(
            chosen[0],
            chosen[1],
            dtmf,
            address,
            m.port,
            direction,
            index,
            m.fmtp(dtmf) if dtmf is not None else None,
        )
    return None


def _family(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def answer_sdp(
    offer: SessionDescription,
    plan: Negotiated,
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
    username: str = "harken",
) -> bytes:
    """Our answer to ``offer`` (see the module docstring)."""
    fam = _family(address)
    lines = [
        "v=0",
        f"o={username} {session_id} {version} IN {fam} {address}",
        "s=harken",
        f"c=IN {fam} {address}",
        f"t={offer.timing}",
    ]
    for index, m in enumerate(offer.media):
        if index != plan.media_index:
            lines.append(f"m={m.media} 0 {m.proto} {m.formats[0] if m.formats else '0'}")
            continue
        lines.extend(_audio_lines(plan.payload_type, plan.encoding, plan.dtmf_payload_type, port))
        if plan.dtmf_payload_type is not None:
            lines.append(f"a=fmtp:{plan.dtmf_payload_type} {plan.dtmf_fmtp or '0-16'}")
        lines.append("a=ptime:20")
        lines.append(f"a={plan.direction}")
    return ("\r\n".join(lines) + "\r\n").encode()


def _audio_lines(pt: int, encoding: Encoding, dtmf: int | None, port: int) -> list[str]:
    formats = f"{pt}" if dtmf is None else f"{pt} {dtmf}"
    lines = [f"m=audio {port} RTP/AVP {formats}", f"a=rtpmap:{pt} {_NAMES[encoding]}/8000"]
    if dtmf is not None:
        lines.append(f"a=rtpmap:{dtmf} telephone-event/8000")
    return lines


def offer_sdp(*, address: str, port: int, session_id: int, version: int) -> bytes:
    """Our offer (for an INVITE that came without one): PCMU, PCMA, telephone-event 101."""
    fam = _family(address)
    lines = [
        "v=0",
        f"o=harken {session_id} {version} IN {fam} {address}",
        "s=harken",
        f"c=IN {fam} {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()
