"""A sans-I/O Server-Sent Events parser: bytes in, events out.

It follows the WHATWG ``text/event-stream`` rules that matter for chat-completion streams:

* lines end in LF, CR or CRLF, and a CRLF split across two ``feed`` calls is one line end;
* a line ``field: value`` (one space after the colon is dropped; ``field`` alone means an empty
  value) sets ``data`` (appended, lines joined with ``\\n``), ``event``, ``id`` or ``retry``;
  unknown fields are ignored; a line starting with ``:`` is a comment;
* an empty line dispatches the event, if it has any ``data`` lines (else it is dropped);
* a UTF-8 byte-order mark at the very start is skipped; lines are decoded as UTF-8 with
  replacement characters (a multi-byte character split across ``feed`` calls is fine: lines are
  cut on bytes, and CR/LF never occur inside a UTF-8 sequence).

How the bytes are chunked never changes the events (property-tested). At the end of the stream,
:meth:`SSEParser.close` dispatches an event whose last line was complete but which lacked the
final empty line (servers that end with ``data: [DONE]\\n`` and close); an unterminated last line
is a cut-off and is dropped. A line longer than ``max_line_bytes`` raises
:class:`~harken.errors.LLMResponseError` rather than buffering without bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from harken.errors import LLMResponseError

__all__ = ["SSEEvent", "SSEParser"]

_EOL: Final = re.compile(rb"[\r\n]")
_BOM: Final = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: ``data`` (its ``data:`` lines joined by ``\\n``), ``event`` type
    (``"message"`` unless the stream named one), the last ``id`` seen (``None`` if never) and
    ``retry`` (milliseconds) when this event carried a valid one."""

    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Incremental ``text/event-stream`` parser. ``feed(bytes)`` returns the events completed by
    those bytes; ``close()`` ends the stream."""

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        self.max_line_bytes = max_line_bytes
        self._buf = b""
        self._skip_lf = False  # the previous chunk ended in CR: a leading LF belongs to it
        self._started = False  # the BOM check has been done
        self._data: list[str] = []
        self._event = ""
        self._retry: int | None = None
        self._last_id: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse ``chunk``; return the events it completed, in order."""
        events: list[SSEEvent] = []
        if not chunk:
            return events
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        buf = self._buf + chunk if self._buf else chunk
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf  # could still be a BOM: wait for more
                return events
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        pos = 0
        end = len(buf)
        while True:
            m = _EOL.search(buf, pos)
            if m is None:
                break
            i = m.start()
            self._line(buf[pos:i], events)
            if buf[i] == 0x0D:  # CR: swallow a following LF, now or at the next feed
                if i + 1 < end:
                    pos = i + 2 if buf[i + 1] == 0x0A else i + 1
                else:
                    self._skip_lf = True
                    pos = i + 1
            else:
                pos = i + 1
        self._buf = buf[pos:]
        if len(self._buf) > self.max_line_bytes:
            raise LLMResponseError(f"SSE line longer than {self.max_line_bytes} bytes")
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: dispatch a pending event whose lines were all complete (see the module
        docstring); drop an unterminated last line. The parser is reset for reuse."""
        events: list[SSEEvent] = []
        if self._data:
            events.append(self._dispatch())
        self._buf = b""
        self._skip_lf = False
        self._started = False
        self._data = []
        self._event = ""
        self._retry = None
        self._last_id = None
        return events

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(
            data="\n".join(self._data),
            event=self._event or "message",
            id=self._last_id,
            retry=self._retry,
        )
        self._data = []
        self._event = ""
        self._retry = None
        return event

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            if self._data:
                events.append(self._dispatch())
            else:
                self._event = ""
                self._retry = None
            return
        if raw[:1] == b":":
            return  # comment (often a keep-alive)
        line = raw.decode("utf-8", errors="replace")
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self._retry = int(value)
