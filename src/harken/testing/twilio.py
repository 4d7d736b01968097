"""Twilio Media Streams carrier emulator: the *client* side of the WebSocket, played as Twilio.

TEST AND BENCH TOOL ONLY: the runtime never imports it on a live call. It lives in the package
so tests and the load generator (``harken bench echo``) share one faithful model of the carrier
(https://www.twilio.com/docs/voice/media-streams/websocket-messages):

* JSON text frames ``connected`` (unnumbered), ``start``, ``media`` every 20 ms, ``dtmf``,
  ``mark`` echoes, ``stop``; ``sequenceNumber``, ``chunk`` and ``timestamp`` (ms since the
  stream started) are strings, the first two counting from "1";
* media paced on an *absolute* schedule (t0 + k*20 ms): a sender that falls behind sends late
  (counting sends over 5 ms late) instead of skipping or drifting;
* the playback buffer of a bidirectional stream: received audio plays at 8000 samples/s from
  its arrival when the buffer is idle, else after what is queued; a ``mark`` is echoed once the
  audio queued before it has played (at once if none); ``clear`` drops the queued audio and
  echoes every pending mark at once;
* records of all of it (arrivals, played timeline, mark echoes, clears); malformed or unknown
  server messages become :class:`ProtocolIssue` records, never exceptions.

Times are ``loop.time()`` values (seconds, the loop's monotonic clock). The WebSocket client
sits behind :mod:`harken.testing._ws` so picows can replace aiohttp in the load generator.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from harken.testing._playback import MarkEcho, PlaybackBuffer, PlayedSpan, ReceivedMedia
from harken.testing._ws import Connector, WsTransport, aiohttp_connector

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms of 8 kHz µ-law, one byte per sample
FRAME_S = 0.020
LATE_S = 0.005  # a media send later than this past its slot counts as late
MAX_BUFFER_S = 600.0  # Twilio discards outbound audio beyond ~10 min buffered (warning 31931)
DTMF_DIGITS = frozenset("0123456789*#ABCD")

Int16Array = npt.NDArray[np.int16]
Segment = npt.NDArray[np.int16] | bytes | float | int | str
"""A scripted segment: int16 PCM (array or little-endian bytes), seconds of silence, or DTMF."""


# --------------------------------------------------------------------------------------------
# G.711 µ-law, vectorised (the classic Sun reference: 14-bit magnitude, bias 0x21, clip 8159).
# Kept private to this tool on purpose: it must not depend on the runtime's codec under test.

_SEG_UEND = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)


def _build_tables() -> tuple[npt.NDArray[np.uint8], Int16Array]:
    pcm = np.arange(-32768, 32768, dtype=np.int32)
    v = pcm >> 2
    mask = np.where(v < 0, 0x7F, 0xFF)
    v = np.minimum(np.abs(v), 8159) + 0x21
    seg = np.searchsorted(_SEG_UEND, v).astype(np.int32)
    uval = np.where(seg > 7, 0x7F, (seg << 4) | ((v >> (seg + 1)) & 0x0F))
    encode = np.empty(65536, dtype=np.uint8)
    encode[pcm & 0xFFFF] = (uval ^ mask).astype(np.uint8)
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    decode = np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)
    return encode, decode


_ENCODE, _DECODE = _build_tables()
_SILENCE = b"\xff" * FRAME_SAMPLES  # µ-law of 0


def ulaw_encode(pcm: npt.ArrayLike | bytes) -> bytes:
    """8 kHz int16 PCM (array, or little-endian bytes) to G.711 µ-law bytes."""
    samples = _as_int16(pcm)
    return _ENCODE[samples.view(np.uint16)].tobytes()


def ulaw_decode(data: bytes | bytearray | memoryview) -> Int16Array:
    """G.711 µ-law bytes to int16 PCM."""
    return _DECODE[np.frombuffer(data, dtype=np.uint8)]


def _as_int16(pcm: npt.ArrayLike | bytes) -> Int16Array:
    if isinstance(pcm, bytes | bytearray | memoryview):
        if len(pcm) % 2:
            raise ValueError("int16 PCM bytes must have an even length")
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)
    arr = np.asarray(pcm)
    if arr.dtype != np.int16:
        raise TypeError(f"expected int16 PCM at 8 kHz, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr.reshape(-1))


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)  # 2 + 32 hex = 34 characters, as Twilio's SIDs


# --------------------------------------------------------------------------------------------
# Records


@dataclass(slots=True)
class ProtocolIssue:
    time: float
    reason: str
    raw: str


@dataclass(slots=True)
class EmulatorStats:
    sent_frames: int = 0
    late_sends: int = 0
    max_late_s: float = 0.0
    recv_frames: int = 0
    recv_bytes: int = 0
    dropped_samples: int = 0  # received audio discarded because the buffer was over 10 minutes
    errors: int = 0


@dataclass(slots=True)
class _Request:
    """One play/script call: its items left to send and the future its caller awaits."""

    done: asyncio.Future[int]
    left: int
    sent: int = 0


# --------------------------------------------------------------------------------------------
# The emulator


class TwilioEmulator:
    """One emulated Twilio call leg. Use as ``async with TwilioEmulator(url) as em: ...``."""

    def __init__(
        self,
        url: str,
        *,
        custom_parameters: Mapping[str, str] | None = None,
        stream_sid: str | None = None,
        call_sid: str | None = None,
        account_sid: str | None = None,
        headers: Mapping[str, str] | None = None,
        background_silence: bool = False,
        trace_sends: bool = False,
        connector: Connector | None = None,
    ) -> None:
        self.url = url
        self.custom_parameters = dict(custom_parameters or {})
        self.stream_sid = stream_sid or _new_sid("MZ")
        self.call_sid = call_sid or _new_sid("CA")
        self.account_sid = account_sid or _new_sid("AC")
        self.headers = dict(headers or {})
        self._connector = connector or aiohttp_connector()
        self._background = background_silence
        # records
        self.stats = EmulatorStats()
        self._buffer = PlaybackBuffer(self._queue_echo, SAMPLE_RATE, MAX_BUFFER_S)
        self.received: list[ReceivedMedia] = self._buffer.received
        self.played: list[PlayedSpan] = self._buffer.played
        self.clears: list[float] = self._buffer.clears
        self.marks_echoed: list[MarkEcho] = []
        self.protocol_errors: list[ProtocolIssue] = []
        self.send_trace: list[tuple[int, float, float]] | None = [] if trace_sends else None
        """With ``trace_sends``: (chunk, scheduled time, send time) per media frame."""
        self.t_start = 0.0  # loop time the ``start`` message went out
        self.closed_at: float | None = None
        # state
        self._ws: WsTransport | None = None
        self._seq = 0
        self._chunk = 0
        self._send_lock = asyncio.Lock()
        self._src: deque[tuple[bytes | str, _Request | None]] = deque()
        self._src_ready = asyncio.Event()
        self._halt = asyncio.Event()
        self._stopped = False
        self._echo_out: deque[MarkEcho] = deque()
        self._echo_task: asyncio.Task[None] | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._changed: asyncio.Event | None = None

    # ---- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> TwilioEmulator:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def connect(self) -> None:
        """Open the WebSocket, send ``connected`` and ``start``, start pacing and reading."""
        if self._ws is not None:
            raise RuntimeError("already connected")
        loop = asyncio.get_running_loop()
        self._ws = await self._connector(self.url, self.headers)
        start = {
            "accountSid": self.account_sid,
            "streamSid": self.stream_sid,
            "callSid": self.call_sid,
            "tracks": ["inbound"],
            "customParameters": self.custom_parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": SAMPLE_RATE, "channels": 1},
        }
        try:
            await self._ws.send_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            self.t_start = loop.time()
            await self._send({"event": "start", "start": start})
        except BaseException:
            self._stopped = True
            await self._ws.close()
            raise
        self._reader_task = loop.create_task(self._reader())
        self._pump_task = loop.create_task(self._pump())

    async def stop(self) -> None:
        """Hang up as Twilio does: stop media, send ``stop``, close the socket. Pending
        ``play`` calls return the number of frames they got out."""
        if self._stopped:
            return
        self._stopped = True
        await self._halt_pump()
        if self._ws is not None and self.closed_at is None:
            stop = {"accountSid": self.account_sid, "callSid": self.call_sid}
            with contextlib.suppress(ConnectionError):
                await self._send({"event": "stop", "stop": stop})
        await self.close()

    async def close(self) -> None:
        """Close without sending ``stop`` (a dropped connection). Idempotent."""
        self._stopped = True
        await self._halt_pump()
        self._buffer.close()
        if self._echo_task is not None:
            self._echo_task.cancel()
            await asyncio.gather(self._echo_task, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._reader_task is not None:
            await self._reader_task

    @property
    def closed(self) -> bool:
        return self.closed_at is not None

    # ---- sending caller audio ---------------------------------------------------------------

    async def play(self, pcm: npt.ArrayLike | bytes) -> int:
        """Send 8 kHz int16 PCM as paced media (padded with silence to whole 20 ms frames).
        Returns the number of frames sent once the last one is out."""
        return await self.play_ulaw(ulaw_encode(pcm))

    async def play_ulaw(self, ulaw: bytes) -> int:
        """Send already µ-law-encoded audio as paced media (pre-encode once for a bench)."""
        return await self._submit(_frames(ulaw))

    async def send_silence(self, seconds: float) -> int:
        return await self._submit([_SILENCE] * round(seconds / FRAME_S))

    async def play_script(self, segments: Iterable[Segment]) -> int:
        """Send segments in order on one schedule: PCM, seconds of silence (float/int), or a
        string of DTMF digits (sent between the media frames at that point)."""
        items: list[bytes | str] = []
        for seg in segments:
            if isinstance(seg, str):
                items.extend(_check_digit(d) for d in seg)
            elif isinstance(seg, float | int):
                items.extend([_SILENCE] * round(seg / FRAME_S))
            else:
                items.extend(_frames(ulaw_encode(seg)))
        return await self._submit(items)

    def set_background_silence(self, enabled: bool = True) -> None:
        """Keep sending silent media whenever nothing else is queued (a real call never pauses
        its media), so the schedule runs on while a test waits."""
        self._background = enabled
        self._src_ready.set()

    async def dtmf(self, digit: str) -> None:
        """Send one ``dtmf`` event now (independent of queued audio)."""
        digit = _check_digit(digit)
        await self._send({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}})

    # ---- waiting and results ----------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds (re-checked after every recorded event). Raises
        TimeoutError, or ConnectionResetError if the call ends first."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.closed:
                    raise ConnectionResetError("connection closed while waiting")
                if self._changed is None:
                    self._changed = asyncio.Event()
                await self._changed.wait()

    async def wait_marks(self, n: int, timeout: float) -> list[MarkEcho]:
        await self.wait_for(lambda: len(self.marks_echoed) >= n, timeout)
        return self.marks_echoed

    async def wait_closed(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            if self._reader_task is not None:
                await asyncio.shield(self._reader_task)

    @property
    def received_samples(self) -> int:
        return len(self._buffer.audio)

    def received_pcm(self) -> Int16Array:
        """Everything the server sent, decoded, in arrival order."""
        return ulaw_decode(bytes(self._buffer.audio))

    def played_pcm(self) -> Int16Array:
        """What the caller heard (or is scheduled to hear): received audio minus what a
        ``clear`` dropped or the buffer limit discarded."""
        pcm = self.received_pcm()
        parts = [pcm[s.first_sample : s.first_sample + s.n_samples] for s in self.played]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    @property
    def playback_end(self) -> float:
        """Loop time at which the currently queued audio will have finished playing."""
        return self._buffer.play_end

    # ---- internals: sending -----------------------------------------------------------------

    async def _send(self, msg: dict[str, Any]) -> None:
        if self._ws is None:
            raise RuntimeError("not connected")
        async with self._send_lock:
            self._seq += 1
            msg["sequenceNumber"] = str(self._seq)
            msg["streamSid"] = self.stream_sid
            await self._ws.send_text(orjson.dumps(msg).decode())

    async def _submit(self, items: Sequence[bytes | str]) -> int:
        if self._pump_task is None:
            raise RuntimeError("not connected")
        if self._halt.is_set():  # stopped, closed, or the connection failed
            raise ConnectionResetError("call is over")
        if not items:
            return 0
        req = _Request(asyncio.get_running_loop().create_future(), len(items))
        self._src.extend((item, req) for item in items)
        self._src_ready.set()
        return await req.done

    def _item_done(self, req: _Request | None, media: bool) -> None:
        if req is None:
            return
        req.sent += media
        req.left -= 1
        if req.left == 0 and not req.done.done():
            req.done.set_result(req.sent)

    async def _pump(self) -> None:
        """Media on the absolute schedule ``anchor + j * 20 ms``; after an idle gap the schedule
        restarts from now, back-to-back submissions continue it."""
        loop = asyncio.get_running_loop()
        anchor, j, last_due = loop.time(), 0, float("-inf")
        try:
            while not self._halt.is_set():
                if not self._src and not self._background:
                    self._src_ready.clear()
                    await self._src_ready.wait()
                    now = loop.time()
                    if now > last_due + FRAME_S:
                        anchor, j = now, 0
                    continue
                if self._src:
                    head, req = self._src[0]
                    if isinstance(head, str):  # DTMF in a script: out at once, no media slot
                        self._src.popleft()
                        await self.dtmf(head)
                        self._item_done(req, media=False)
                        continue
                due = anchor + j * FRAME_S
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                if self._halt.is_set():
                    break
                if self._src:
                    head, req = self._src[0]
                    if isinstance(head, str):
                        continue
                    self._src.popleft()
                    payload = head
                elif self._background:
                    payload, req = _SILENCE, None
                else:
                    continue
                await self._send_media(payload, due, loop.time())
                j, last_due = j + 1, due
                self._item_done(req, media=True)
        except ConnectionError:
            self._halt.set()
            self._drop_queued(ConnectionResetError("connection lost while sending media"))

    async def _send_media(self, payload: bytes, due: float, now: float) -> None:
        self._chunk += 1
        media = {
            "track": "inbound",
            "chunk": str(self._chunk),
            "timestamp": str(round((due - self.t_start) * 1000)),
            "payload": base64.b64encode(payload).decode("ascii"),
        }
        late = now - due
        if late > LATE_S:
            self.stats.late_sends += 1
        self.stats.max_late_s = max(self.stats.max_late_s, late)
        await self._send({"event": "media", "media": media})
        self.stats.sent_frames += 1
        if self.send_trace is not None:
            self.send_trace.append((self._chunk, due, now))

    async def _halt_pump(self) -> None:
        """Our own hang-up: stop the pump; requests cut short return the frames they got out."""
        self._halt.set()
        self._src_ready.set()
        self._drop_queued(None)
        if self._pump_task is not None:
            await self._pump_task

    def _drop_queued(self, exc: BaseException | None) -> None:
        while self._src:
            _, req = self._src.popleft()
            if req is not None and not req.done.done():
                if exc is None:
                    req.done.set_result(req.sent)
                else:
                    req.done.set_exception(exc)

    # ---- internals: receiving and the playback buffer ----------------------------------------

    async def _reader(self) -> None:
        assert self._ws is not None
        loop = asyncio.get_running_loop()
        try:
            while (data := await self._ws.recv()) is not None:
                self._handle(data, loop.time())
                self._notify()
        except ConnectionError as exc:
            self._issue(loop.time(), f"connection error: {exc}", "")
        finally:
            self.closed_at = loop.time()
            self._halt.set()
            self._src_ready.set()
            self._drop_queued(ConnectionResetError("connection closed by server"))
            self._buffer.close()
            self._notify()

    def _notify(self) -> None:
        ev = self._changed
        if ev is not None:
            self._changed = None
            ev.set()

    def _issue(self, now: float, reason: str, raw: str | bytes) -> None:
        text = raw if isinstance(raw, str) else repr(raw)
        self.protocol_errors.append(ProtocolIssue(now, reason, text[:200]))
        self.stats.errors += 1

    def _handle(self, data: str | bytes, now: float) -> None:
        if isinstance(data, bytes):
            return self._issue(now, "binary frame (Twilio expects JSON text)", data)
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            return self._issue(now, "invalid JSON", data)
        if not isinstance(msg, dict):
            return self._issue(now, "message is not a JSON object", data)
        event = msg.get("event")
        if event not in ("media", "mark", "clear"):
            return self._issue(now, f"unknown event {event!r}", data)
        if msg.get("streamSid") != self.stream_sid:
            return self._issue(now, f"{event}: missing or wrong streamSid", data)
        body = msg.get(event)
        if event == "clear":
            return self._buffer.clear(now)
        if not isinstance(body, dict):
            return self._issue(now, f"{event}: missing '{event}' object", data)
        if event == "mark":
            name = body.get("name")
            if not isinstance(name, str):
                return self._issue(now, "mark: missing name", data)
            return self._buffer.mark(name, now)
        payload = body.get("payload")
        if not isinstance(payload, str):
            return self._issue(now, "media: missing payload", data)
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return self._issue(now, "media: payload is not base64", data)
        if not audio:
            return self._issue(now, "media: empty payload", data)
        self._on_media(audio, now)

    def _on_media(self, audio: bytes, now: float) -> None:
        self.stats.recv_frames += 1
        self.stats.recv_bytes += len(audio)
        if not self._buffer.media(audio, now):
            self.stats.dropped_samples += len(audio)
            self._issue(now, "media: over 10 minutes buffered, audio discarded (31931)", "")

    def _queue_echo(self, echo: MarkEcho) -> None:
        """Echoes leave strictly in the order queued, through one drainer task."""
        self._echo_out.append(echo)
        if self._echo_task is None or self._echo_task.done():
            self._echo_task = asyncio.get_running_loop().create_task(self._drain_echoes())

    async def _drain_echoes(self) -> None:
        loop = asyncio.get_running_loop()
        while self._echo_out:
            echo = self._echo_out.popleft()
            try:
                await self._send({"event": "mark", "mark": {"name": echo.name}})
            except ConnectionError:
                self._echo_out.clear()
                return
            echo.sent = loop.time()
            self.marks_echoed.append(echo)
            self._notify()


def _frames(ulaw: bytes) -> list[bytes]:
    if len(ulaw) % FRAME_SAMPLES:
        ulaw += b"\xff" * (FRAME_SAMPLES - len(ulaw) % FRAME_SAMPLES)
    return [ulaw[i : i + FRAME_SAMPLES] for i in range(0, len(ulaw), FRAME_SAMPLES)]


def _check_digit(digit: str) -> str:
    if len(digit) != 1 or digit not in DTMF_DIGITS:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return digit
