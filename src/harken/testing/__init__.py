"""Test and bench tools (carrier emulators, recording stages). Not used on a live call."""

from __future__ import annotations

from harken.testing._playback import MarkEcho, PlaybackBuffer, PlayedSpan, ReceivedMedia
from harken.testing._ws import Connector, WsTransport, aiohttp_connector
from harken.testing.stages import Recorder
from harken.testing.twilio import (
    EmulatorStats,
    ProtocolIssue,
    TwilioEmulator,
    ulaw_decode,
    ulaw_encode,
)

__all__ = [
    "Connector",
    "EmulatorStats",
    "MarkEcho",
    "PlaybackBuffer",
    "PlayedSpan",
    "ProtocolIssue",
    "ReceivedMedia",
    "Recorder",
    "TwilioEmulator",
    "WsTransport",
    "aiohttp_connector",
    "ulaw_decode",
    "ulaw_encode",
]
