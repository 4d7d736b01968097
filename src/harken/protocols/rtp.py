"""RTP packets (RFC 3550 section 5.1), sans-I/O: parse and build the fixed header and its options.

::

     0                   1                   2                   3
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    |                           timestamp                           |
    |           synchronization source (SSRC) identifier            |
    |            contributing source (CSRC) identifiers             |  CC x 32 bits
    |      defined by profile       |           length              |  if X
    |                        header extension                       |  length x 32 bits
    |                            payload ...        | padding | count |  if P

:func:`parse_rtp` raises :class:`~harken.errors.RemoteProtocolError` (and nothing else) on a
packet that is too short, not version 2, or whose CSRC list, extension or padding runs past its
end. Sequence numbers (16 bits) and timestamps (32 bits) wrap; :func:`build_rtp` takes any
integer and wraps it, and :mod:`harken.audio.jitter` unwraps them on the way in.
:func:`is_rtcp` tells RTCP apart on a multiplexed port (RFC 5761: packet types 192-223).
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from harken.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["HEADER_LEN", "RtpPacket", "build_rtp", "is_rtcp", "parse_rtp"]

HEADER_LEN: Final = 12
_HEADER = struct.Struct("!BBHII")
_pack_header = _HEADER.pack
_unpack_header = _HEADER.unpack_from


class RtpPacket(NamedTuple):
    """One RTP packet (a NamedTuple: built 50 times a second per call)."""

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data)
    padding: int = 0


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one datagram as RTP (see the module docstring)."""
    n = len(data)
    if n < HEADER_LEN:
        raise RemoteProtocolError(f"RTP: {n} bytes is shorter than the fixed header")
    b0, b1, seq, ts, ssrc = _unpack_header(data)
    if b0 >> 6 != 2:
        raise RemoteProtocolError(f"RTP: version {b0 >> 6}, expected 2")
    pos = HEADER_LEN
    csrcs: tuple[int, ...] = ()
    cc = b0 & 0x0F
    if cc:
        end = pos + 4 * cc
        if end > n:
            raise RemoteProtocolError(f"RTP: {cc} CSRCs do not fit in {n} bytes")
        csrcs = struct.unpack_from(f"!{cc}I", data, pos)
        pos = end
    extension = None
    if b0 & 0x10:
        if pos + 4 > n:
            raise RemoteProtocolError("RTP: extension header runs past the packet")
        profile, words = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + 4 * words
        if end > n:
            raise RemoteProtocolError(f"RTP: {words}-word extension runs past the packet")
        extension = (profile, bytes(data[pos + 4 : end]))
        pos = end
    padding = 0
    end = n
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or pos + padding > n:
            raise RemoteProtocolError(f"RTP: bad padding count {padding}")
        end = n - padding
    return RtpPacket(
        b1 & 0x7F, seq, ts, ssrc, bool(b1 & 0x80), bytes(data[pos:end]), csrcs, extension, padding
    )


def build_rtp(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """One RTP packet; ``sequence`` and ``timestamp`` are wrapped to 16 and 32 bits."""
    if not 0 <= payload_type <= 127 or not 0 <= ssrc <= 0xFFFFFFFF or len(csrcs) > 15:
        raise LocalProtocolError("RTP: payload type, SSRC or CSRC count out of range")
    if not 0 <= padding <= 255:
        raise LocalProtocolError("RTP: padding must be 0-255 bytes")
    b0 = 0x80 | len(csrcs) | (0x20 if padding else 0) | (0x10 if extension is not None else 0)
    b1 = payload_type | (0x80 if marker else 0)
    head = _pack_header(b0, b1, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    if not csrcs and extension is None and not padding:
        return head + payload
    parts = [head]
    if csrcs:
        parts.append(struct.pack(f"!{len(csrcs)}I", *csrcs))
    if extension is not None:
        profile, ext = extension
        if len(ext) % 4 or len(ext) > 4 * 0xFFFF or not 0 <= profile <= 0xFFFF:
            raise LocalProtocolError("RTP: extension data must be whole 32-bit words")
        parts.append(struct.pack("!HH", profile, len(ext) // 4) + ext)
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """True for an RTCP packet sharing the RTP port (RFC 5761 section 4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223
