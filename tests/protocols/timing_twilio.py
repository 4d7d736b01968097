"""Time the Twilio media hot path (not a test: run it by hand).

    .venv/bin/python tests/protocols/timing_twilio.py

Prints the best-of-N cost per message of parsing an inbound 20 ms ``media`` frame (160 bytes of
mu-law) into :class:`~harken.protocols.events.MediaReceived`, of building the outbound ``media``
message for the same payload, and of the bare ``orjson.loads`` + base64 decode it is built on.
"""

from __future__ import annotations

import base64
import binascii
import json
import timeit
from collections.abc import Callable

import orjson

from harken.protocols.twilio import TwilioCodec

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
START = {
    "event": "start",
    "sequenceNumber": "1",
    "streamSid": SID,
    "start": {
        "accountSid": "AC" + "0" * 32,
        "streamSid": SID,
        "callSid": "CA" + "0" * 32,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    },
}


def best_us(fn: Callable[[], object], number: int = 100_000, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def main() -> None:
    codec = TwilioCodec()
    codec.receive_text(json.dumps(START))
    payload = bytes(range(160))
    encoded = base64.b64encode(payload).decode()
    sequence = iter(range(2, 10**9))

    def inbound() -> str:
        n = str(next(sequence))
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": n,
                "media": {"track": "inbound", "chunk": n, "timestamp": n, "payload": encoded},
                "streamSid": SID,
            }
        )

    message = inbound()
    baseline = best_us(
        lambda: binascii.a2b_base64(orjson.loads(message)["media"]["payload"], strict_mode=True)
    )
    parse = best_us(lambda: codec.receive_text(message))
    build = best_us(lambda: codec.media(payload))
    print(f"orjson.loads + a2b_base64 (floor) {baseline:6.2f} us/message")
    print(f"TwilioCodec.receive_text (media)  {parse:6.2f} us/message")
    print(f"TwilioCodec.media (build)         {build:6.2f} us/message")
    per_call = (parse + build) * 50  # 50 messages per second each way
    print(f"per call (50 in + 50 out per s)   {per_call / 1e4:6.3f} % of one core")


if __name__ == "__main__":
    main()
