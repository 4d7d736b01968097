"""A lean Twilio Media Streams load generator: hundreds of calls on one core.

The per-call emulator of :mod:`harken.testing.twilio` (aiohttp, three tasks per call, a full
record of everything) is the faithful model for tests; it is too heavy for 500 calls on one
core. This generator speaks the same protocol with the smallest possible cost per message:

* **picows client connections** with a callback listener: no reader task, no task per call;
* **one scheduler for all calls**: every call sends a ``media`` message every 20 ms on its own
  *absolute* schedule (``slot due time = base + n * period / slots``); call phases are spread
  over ``slots`` slots of the 20 ms period, so the load is smooth. A send later than
  ``late_s`` past its due time is counted; a late call catches up (sends everything it owes,
  in order), it never skips;
* **pre-encoded messages**: each script frame's base64 payload is built once; a send formats
  only the sequence number, chunk and timestamp (in Twilio's own key order);
* **byte-count matching** for round trips (:class:`~harken.bench._measure.FrameMatcher`);
* **mark echoes** from a playback clock per call (:class:`~harken.bench._measure.PlayClock`),
  flushed on the call's own 20 ms tick, so marks cost no timers;
* for the ``vad`` scenario, the agent's reply is recognised by content (the generator knows the
  reply clip; its first 20 ms are searched for in the received audio, across chunk borders) and
  the reply latency (end of a caller utterance -> first reply audio received) is measured. The
  ``bench_vad`` agents answer *in place of* the echo, one reply frame per caller frame, so the
  byte count of the returned stream still matches the caller's and the round trip of every
  chunk is measured the same way in both scenarios.

One :class:`LoadGen` runs one level (N calls): ramp, warm-up, measurement window, grace, stop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from array import array
from binascii import a2b_base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from time import monotonic

import orjson
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

from harken.bench._measure import FrameMatcher, PlayClock
from harken.server.media import text_frame_header

FRAME_BYTES = 160  # 20 ms of 8 kHz µ-law
PERIOD_S = 0.020
_RESYNC_FRAMES = 150  # how many frames (3 s) past the expected one a chunk is looked for
_RESYNC_MISSES = 20  # unrecognised chunks in a row before a call stops checking
#: a slot due this soon is run now: uvloop's timers have millisecond resolution and can fire
#: up to a millisecond early; without the slack the scheduler would re-arm and spin until then
EARLY_S = 0.001
TEXT = WSMsgType.TEXT
# Twilio's own key order: event, sequenceNumber, media (track, chunk, timestamp, payload),
# streamSid; the message is completed by the payload and the call's closing bytes
_MEDIA = (
    b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
    b'"timestamp":"%d","payload":"%b%b'
)
_loads = orjson.loads


def _client_frame(payload: bytes) -> bytes:
    """A final text frame as a client sends it (RFC 6455 5.2), for several frames in one write.
    The masking key is zero, so the payload goes as it is: a valid frame for any server (a
    fixed key only gives up the protection against caching proxies, none on loopback)."""
    return text_frame_header(len(payload), masked=True) + b"\0\0\0\0" + payload


@dataclass(frozen=True, slots=True)
class CallerScript:
    """What every call plays, looped: 160-byte µ-law frames, and for ``vad`` where each caller
    utterance ends and the reply the agent answers with.

    ``utterance_ends``: script frame indices that carry the last speech of an utterance;
    ``utterance_starts``: those that carry the first. ``reply``: the agent's reply as µ-law
    bytes (what the server sends back at a turn end)."""

    frames: tuple[bytes, ...]
    utterance_ends: frozenset[int] = frozenset()
    reply: bytes = b""
    utterance_starts: frozenset[int] = frozenset()
    #: the server echoes these frames byte for byte (µ-law -> PCM -> µ-law is the identity on
    #: every code ``ulaw_encode`` produces), so returned audio can be recognised by content
    verbatim: bool = False
    payloads: tuple[bytes, ...] = field(init=False)
    has_turns: bool = field(init=False)  # utterance starts or ends to time (vad)
    _runs: dict[tuple[int, int], bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.frames or any(len(f) != FRAME_BYTES for f in self.frames):
            raise ValueError("a caller script is a non-empty sequence of 160-byte frames")
        object.__setattr__(self, "payloads", tuple(base64.b64encode(f) for f in self.frames))
        object.__setattr__(self, "has_turns", bool(self.utterance_ends or self.utterance_starts))
        object.__setattr__(self, "_runs", {})

    def b64_run(self, first: int, count: int) -> bytes:
        """Base64 of ``count`` consecutive script frames from index ``first`` (looped)."""
        n = len(self.frames)
        first %= n
        if count == 1:
            return self.payloads[first]
        runs = self._runs
        run = runs.get((first, count))
        if run is None:
            audio = b"".join(self.frames[(first + i) % n] for i in range(count))
            run = runs[(first, count)] = base64.b64encode(audio)
        return run


@dataclass(slots=True)
class Totals:
    """Counters of one level, filled by the calls and the scheduler."""

    w0: float = float("inf")  # measurement window [w0, w1) on the monotonic clock
    w1: float = float("inf")
    connected: int = 0
    connect_failed: int = 0
    dropped: int = 0  # closed by the far end before the level ended
    sent_frames: int = 0
    window_frames: int = 0  # frames sent inside the window: the expected echo
    echoed_bytes: int = 0  # received bytes attributed to frames sent inside the window
    unmatched_bytes: int = 0  # received beyond what was sent (should stay 0)
    skipped_frames: int = 0  # frames the server dropped (stale live audio), found by content
    late_sends: int = 0  # inside the window
    max_late_s: float = 0.0
    marks_echoed: int = 0
    clears: int = 0
    bad_messages: int = 0
    replies: int = 0  # reply starts recognised (any time)
    turns: int = 0  # utterances that ended inside the window
    replied_turns: int = 0  # ... answered before the caller's next utterance began
    early_replies: int = 0  # replies that began while the caller was still speaking
    extra_replies: int = 0  # replies in a pause whose turn already had one
    rtts: array[float] = field(default_factory=lambda: array("d"))
    reply_latencies: array[float] = field(default_factory=lambda: array("d"))


class LeanCall(WSListener):
    """One emulated Twilio call: the picows listener *is* the call (no task)."""

    __slots__ = (
        "account_sid",
        "call_sid",
        "clock",
        "closed",
        "ending",
        "frame_k",
        "gen",
        "in_speech",
        "matcher",
        "misses",
        "offset",
        "recent",
        "resync",
        "seq",
        "slot",
        "stream_sid",
        "t_media",
        "t_start",
        "tail",
        "transport",
        "turn_end",
    )

    def __init__(self, gen: LoadGen, offset: int) -> None:
        super().__init__()
        self.gen = gen
        self.offset = offset  # where in the script this call starts
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.call_sid = "CA" + secrets.token_hex(16)
        self.account_sid = "AC" + "0" * 32
        self.tail = b'"},"streamSid":"' + self.stream_sid.encode() + b'"}'  # closes a media
        self.transport: WSTransport | None = None
        self.matcher = FrameMatcher(FRAME_BYTES)
        self.clock = PlayClock()
        self.seq = 0
        self.frame_k = 0
        self.slot = -1
        self.t_start = 0.0
        self.t_media = 0.0
        self.closed = False
        self.ending = False
        self.recent = b""  # vad: the last received bytes, to find a reply straddling chunks
        self.resync = gen.script.verbatim  # recognise the echo by content (see _resync)
        self.misses = 0
        self.turn_end = -1.0  # send time of the last utterance end, while unanswered
        self.in_speech = False  # the caller is inside an utterance (by the script)

    # --- sending -----------------------------------------------------------------------------

    def _send(self, payload: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed:
            t.send(TEXT, payload)

    def begin(self) -> None:
        """Send ``connected`` and ``start`` (the call is then scheduled by the caller)."""
        self.seq = 1
        self._send(b'{"event":"connected","protocol":"Call","version":"1.0.0"}')
        start = {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": self.stream_sid,
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "customParameters": {},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
        }
        self.t_start = monotonic()
        self._send(orjson.dumps(start))

    def send_media(self, due: float) -> None:
        """The scheduler's call: one media frame, due at ``due``."""
        gen = self.gen
        script = gen.script
        k = self.frame_k
        self.frame_k = k + 1
        if k == 0:
            self.t_media = due  # media timestamps count from the first frame's slot
        self.seq += 1
        idx = (self.offset + k) % len(script.frames)
        msg = _MEDIA % (
            self.seq,
            k + 1,
            int((due - self.t_media) * 1000),
            script.payloads[idx],
            self.tail,
        )
        now = monotonic()
        t = self.transport
        if t is None or self.closed:
            return
        marks = self.clock.due(now) if self.clock.pending else None
        if marks:  # the marks whose audio has played go in the same write (one system call)
            frames = [_client_frame(msg)]
            for name in marks:
                frames.append(_client_frame(self._mark_echo(name)))
            t.underlying_transport.write(b"".join(frames))
        else:
            t.send(TEXT, msg)
        self.matcher.times.append(now)
        self.matcher.sent_frames += 1
        tot = gen.totals
        tot.sent_frames += 1
        if tot.w0 <= now < tot.w1:
            tot.window_frames += 1
            late = now - due
            if late > gen.late_s:
                tot.late_sends += 1
            if late > tot.max_late_s:
                tot.max_late_s = late
        if not script.has_turns:  # echo: nothing to time
            pass
        elif idx in script.utterance_ends:
            self.turn_end, self.in_speech = now, False
            if tot.w0 <= now < tot.w1:
                tot.turns += 1
        elif idx in script.utterance_starts:  # an unanswered turn stays unanswered
            self.turn_end, self.in_speech = -1.0, True

    def _echo_mark(self, name: str) -> None:
        self._send(self._mark_echo(name))

    def _mark_echo(self, name: str) -> bytes:
        """The mark echo message (counted as sent)."""
        self.seq += 1
        self.gen.totals.marks_echoed += 1
        return b'{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":%s}}' % (
            self.seq,
            self.stream_sid.encode(),
            orjson.dumps(name),
        )

    def hang_up(self) -> None:
        """Send ``stop`` and close, as Twilio does when the caller hangs up."""
        if self.closed or self.transport is None:
            return
        self.ending = True
        self.seq += 1
        self._send(
            b'{"event":"stop","sequenceNumber":"%d","streamSid":"%s","stop":'
            b'{"accountSid":"%s","callSid":"%s"}}'
            % (
                self.seq,
                self.stream_sid.encode(),
                self.account_sid.encode(),
                self.call_sid.encode(),
            )
        )
        self.transport.send_close()
        self.transport.disconnect()

    # --- receiving (picows callbacks) --------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closed:
            self.closed = True
            self.gen.call_closed(self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        now = monotonic()
        sched = self.gen.scheduler
        if now >= sched.next_due:  # a send slot is due: media first, then this message
            sched.poll(now)
        if frame.msg_type is not TEXT:
            if frame.msg_type is WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()
            elif frame.msg_type is WSMsgType.BINARY:
                self.gen.totals.bad_messages += 1
            return
        data = frame.get_payload_as_bytes()
        # fast path: only media messages carry a "payload" (harken's and pipecat's Twilio
        # output alike); its length is the audio's, without parsing the JSON
        i = data.find(b'"payload"')
        if i >= 0:
            start = data.find(b'"', i + 9) + 1
            end = data.find(b'"', start)
            if start > 0 and end > start:
                self._media(data, start, end, now)
                return
        try:
            msg = _loads(data)
            event = msg["event"]
            if event == "mark":
                for name in self.clock.mark(msg["mark"]["name"], now):
                    self._echo_mark(name)
            elif event == "clear":
                self.gen.totals.clears += 1
                for name in self.clock.clear(now):
                    self._echo_mark(name)
            else:
                self.gen.totals.bad_messages += 1
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.gen.totals.bad_messages += 1

    def _media(self, data: bytes, start: int, end: int, now: float) -> None:
        """A media message whose base64 payload is ``data[start:end]``."""
        n = (end - start) * 3 // 4 - (data[end - 1] == 61) - (data[end - 2] == 61)  # '='
        self.clock.media(n, now)
        gen = self.gen
        tot = gen.totals
        head = gen.reply_head
        if head:  # vad: is the agent's reply starting in this chunk?
            audio = self.recent + a2b_base64(data[start:end])
            if head in audio:
                self._reply_started(now)
            self.recent = audio[-len(head) + 1 :]
        if self.resync and n % FRAME_BYTES == 0 and self.matcher.recv_bytes % FRAME_BYTES == 0:
            self._resync(data[start:end], n // FRAME_BYTES)
        frame = self.matcher.received(n)
        if frame < 0:
            tot.unmatched_bytes += n
            return
        sent = self.matcher.times[frame]
        if tot.w0 <= sent < tot.w1:
            tot.echoed_bytes += n
            tot.rtts.append(now - sent)

    def _resync(self, payload: bytes, count: int) -> None:
        """Byte-count matching assumes every byte comes back. A server that drops stale live
        audio after a stall (harken keeps at most 60 ms of it) would make every later chunk
        look one dropped frame older per frame dropped, for the rest of the call. So a
        verbatim echo is checked by content: a chunk that is not the audio expected at its
        byte position is looked for among the frames sent after it, newest first (a server
        drops the oldest audio), the nearest first, and the frames skipped count as dropped.
        The script loops every second, so a run of over a second dropped at once is taken for
        its remainder (the pessimistic reading: the round trip looks longer, never shorter).
        A call whose echo is not verbatim stops checking after a few misses."""
        matcher, script = self.matcher, self.gen.script
        first = matcher.recv_bytes // FRAME_BYTES
        if payload == script.b64_run(self.offset + first, count):
            self.misses = 0
            return
        newest = matcher.sent_frames - count  # the latest frame this chunk can start at
        for start in range(first + 1, min(newest, first + _RESYNC_FRAMES) + 1):
            if payload == script.b64_run(self.offset + start, count):
                matcher.recv_bytes += (start - first) * FRAME_BYTES
                self.gen.totals.skipped_frames += start - first
                self.misses = 0
                return
        self.misses += 1
        if self.misses >= _RESYNC_MISSES:
            self.resync = False

    def _reply_started(self, now: float) -> None:
        """A reply began: it answers the caller's last utterance if it came in the pause after
        it; one that came while the caller spoke is an early (premature) reply."""
        tot = self.gen.totals
        tot.replies += 1
        end = self.turn_end
        if end >= 0:
            self.turn_end = -1.0
            if tot.w0 <= end < tot.w1:
                tot.replied_turns += 1
                tot.reply_latencies.append(now - end)
        elif self.in_speech:
            tot.early_replies += 1
        else:
            tot.extra_replies += 1


class Scheduler:
    """One timer for every call's media: ``slots`` phases per 20 ms period, absolute times.

    Sends come first: besides its timer, the scheduler runs from the receive callbacks as soon
    as a slot is due (:meth:`poll`, one float comparison per message), so a burst of echoes read
    in one loop iteration does not make the next slot's media late."""

    def __init__(self, slots: int = 20, period: float = PERIOD_S) -> None:
        self.slots: list[list[LeanCall]] = [[] for _ in range(slots)]
        self.step = period / slots
        self.base = 0.0
        self.n = 0  # next slot tick to run
        self.next_due = float("inf")  # when slot n is due (inf: nothing scheduled)
        self.ticks = 0
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running = False

    def add(self, call: LeanCall) -> None:
        slot = min(range(len(self.slots)), key=lambda s: len(self.slots[s]))
        call.slot = slot
        self.slots[slot].append(call)
        if self._handle is None and not self._running:
            self._loop = asyncio.get_running_loop()
            self.base = monotonic()
            self.n = slot  # the first run of this slot from now on
            self._arm()

    def remove(self, call: LeanCall) -> None:
        if call.slot >= 0:
            with contextlib.suppress(ValueError):
                self.slots[call.slot].remove(call)
            call.slot = -1

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self.next_due = float("inf")

    def poll(self, now: float) -> None:
        """Run the due slots now if there are any (called with each received message)."""
        if now >= self.next_due and not self._running:
            if self._handle is not None:
                self._handle.cancel()
                self._handle = None
            self._tick()

    def _arm(self) -> None:
        assert self._loop is not None
        # loop.time() is time.monotonic() on asyncio's loop and uvloop's (CLOCK_MONOTONIC, whole
        # milliseconds there); the due time is absolute
        self.next_due = self.base + self.n * self.step
        self._handle = self._loop.call_at(self.next_due, self._tick)

    def _tick(self) -> None:
        self.ticks += 1
        self._handle = None
        self._running = True
        slots, nslots, step, base = self.slots, len(self.slots), self.step, self.base
        n = self.n
        now = monotonic()
        budget = nslots  # at most one period per run: a generator that fell behind still
        try:  # returns to the loop between periods, so replies are read
            while budget:
                due = base + n * step
                if due > now + EARLY_S:
                    break
                for call in tuple(slots[n % nslots]):  # a send may close (and unslot) a call
                    call.send_media(due)
                n += 1
                budget -= 1
                now = monotonic()
        finally:
            self._running = False
        if not any(slots):
            self.n = n
            self.next_due = float("inf")
            return
        while not slots[n % nslots]:  # skip empty phases: no wake-up for nothing
            n += 1
        self.n = n
        self._arm()


ProgressFn = Callable[[str, float, "Totals"], None]


class LoadGen:
    """Runs one level: ``calls`` calls against ``url`` (see :meth:`run`)."""

    def __init__(
        self,
        url: str,
        script: CallerScript,
        *,
        late_s: float = 0.005,
        slots: int = 10,
        seed: int = 1,
    ) -> None:
        self.url = url
        self.script = script
        self.reply_head = script.reply[:FRAME_BYTES]
        self.late_s = late_s
        self.totals = Totals()
        self.scheduler = Scheduler(slots)
        self.calls: list[LeanCall] = []
        self._offsets = _offsets(seed, len(script.frames))
        self._all_closed: asyncio.Event | None = None

    def call_closed(self, call: LeanCall) -> None:
        self.scheduler.remove(call)
        if not call.ending:
            self.totals.dropped += 1
        if self._all_closed is not None and all(c.closed for c in self.calls):
            self._all_closed.set()

    async def _open(self, i: int, media: bool) -> None:
        offset = next(self._offsets)
        try:
            _, call = await ws_connect(
                lambda: LeanCall(self, offset),
                self.url,
                websocket_handshake_timeout=10,
                enable_auto_pong=True,
                logger_name="harken.bench",
            )
        except Exception:  # noqa: BLE001 - refused (503), reset, timed out: a failed call
            self.totals.connect_failed += 1
            return
        assert isinstance(call, LeanCall)
        self.calls.append(call)
        self.totals.connected += 1
        call.begin()
        if media:
            self.scheduler.add(call)

    async def ramp(
        self, calls: int, rate: float, media: bool = True, progress: ProgressFn | None = None
    ) -> None:
        """Open ``calls`` calls, ``rate`` per second, each starting its media at once."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        pending: set[asyncio.Task[None]] = set()
        for i in range(calls):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = loop.create_task(self._open(i, media))
            pending.add(task)
            task.add_done_callback(pending.discard)
            if progress is not None and i % 10 == 0:
                progress("ramp", (i + 1) / calls, self.totals)
        if pending:
            await asyncio.gather(*pending)

    async def hang_up_all(self, timeout: float = 5.0) -> None:
        self.scheduler.stop()
        self._all_closed = asyncio.Event()
        for call in self.calls:
            self.scheduler.remove(call)
            call.hang_up()
        if all(c.closed for c in self.calls):
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), timeout)
        for call in self.calls:  # whoever did not close in time
            if not call.closed and call.transport is not None:
                call.transport.disconnect(graceful=False)

    @property
    def live(self) -> int:
        return sum(1 for c in self.calls if not c.closed)


def _offsets(seed: int, n: int) -> Iterator[int]:
    """Deterministic, spread-out script offsets for successive calls (golden-ratio sequence)."""
    k = seed
    while True:
        k += 1
        yield int((k * 0.6180339887498949 % 1.0) * n)
