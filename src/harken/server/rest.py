"""Carrier REST hang-ups and transfers: the I/O half of :mod:`harken.protocols.rest`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from harken.errors import ConfigError, ProviderError
from harken.protocols import rest
from harken.protocols.events import StreamStarted
from harken.server.config import Config

ClientFactory = Callable[[], aiohttp.ClientSession]
Hangup = Callable[[StreamStarted], Awaitable[None]]
Transfer = Callable[[StreamStarted, str], Awaitable[None]]


class HangupClient:
    """Builds each carrier's hang-up request from the config and sends it."""

    def __init__(self, config: Config, client: ClientFactory) -> None:
        self.config = config
        self.client = client

    def request(self, carrier: str, info: StreamStarted) -> rest.HttpRequest:
        c = self.config.carriers
        call_id = info.call_id or ""
        if carrier == "twilio":
            if not (c.twilio.account_sid and c.twilio.auth_token):
                raise ConfigError("twilio hang-up needs carriers.twilio.account_sid/auth_token")
            return rest.twilio_hangup(
                c.twilio.account_sid, c.twilio.auth_token, call_id, base_url=c.twilio.api_base
            )
        if carrier == "telnyx":
            if not c.telnyx.api_key:
                raise ConfigError("telnyx hang-up needs carriers.telnyx.api_key")
            return rest.telnyx_hangup(c.telnyx.api_key, call_id, base_url=c.telnyx.api_base)
        if carrier == "plivo":
            if not (c.plivo.auth_id and c.plivo.auth_token):
                raise ConfigError("plivo hang-up needs carriers.plivo.auth_id/auth_token")
            return rest.plivo_hangup(
                c.plivo.auth_id, c.plivo.auth_token, call_id, base_url=c.plivo.api_base
            )
        raise ConfigError(f"{carrier} has no REST hang-up; the stream is closed instead")

    def transfer_request(self, carrier: str, info: StreamStarted, target: str) -> rest.HttpRequest:
        c = self.config.carriers
        call_id = info.call_id or ""
        if carrier == "twilio":
            if not (c.twilio.account_sid and c.twilio.auth_token):
                raise ConfigError("twilio transfer needs carriers.twilio.account_sid/auth_token")
            return rest.twilio_transfer(
                c.twilio.account_sid,
                c.twilio.auth_token,
                call_id,
                target,
                base_url=c.twilio.api_base,
            )
        if carrier == "telnyx":
            if not c.telnyx.api_key:
                raise ConfigError("telnyx transfer needs carriers.telnyx.api_key")
            return rest.telnyx_transfer(
                c.telnyx.api_key, call_id, target, base_url=c.telnyx.api_base
            )
        raise ConfigError(f"{carrier} has no REST transfer")

    async def send(self, carrier: str, info: StreamStarted) -> None:
        await self._send(carrier, self.request(carrier, info), "hang-up")

    async def _send(self, carrier: str, req: rest.HttpRequest, what: str) -> None:
        async with self.client().request(
            req.method, req.url, headers=list(req.headers), data=req.body or None
        ) as resp:
            if resp.status >= 300:
                text = (await resp.text())[:200]
                raise ProviderError(carrier, resp.status, f"{what} refused: {text}")

    def transfer_for_carrier(self, carrier: str) -> Transfer | None:
        if carrier not in ("twilio", "telnyx"):
            return None

        async def transfer(info: StreamStarted, target: str) -> None:
            await self._send(carrier, self.transfer_request(carrier, info, target), "transfer")

        return transfer

    def for_carrier(self, carrier: str) -> Hangup | None:
        if carrier not in ("twilio", "telnyx", "plivo"):
            return None

        async def hangup(info: StreamStarted) -> None:
            await self.send(carrier, info)

        return hangup
