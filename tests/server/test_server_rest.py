"""Carrier REST hang-ups sent for real to a local server that checks them as documented."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from harken.errors import ConfigError, ProviderError
from harken.protocols.events import StreamStarted
from harken.server import config as config_mod
from harken.server.rest import HangupClient


@pytest.fixture
async def carrier_api(local_http: Any) -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "auth": request.headers.get("Authorization"),
                "ctype": request.headers.get("Content-Type"),
                "body": body,
            }
        )
        if "refuse" in request.path:
            return web.json_response({"errors": [{"title": "Call has already ended"}]}, status=422)
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    yield await local_http(app), seen


def info(call_id: str) -> StreamStarted:
    return StreamStarted(
        stream_id="s",
        call_id=call_id,
        account_id="",
        custom_parameters={},
        encoding="mulaw",
        sample_rate=8000,
        channels=1,
        tracks=("inbound",),
    )


def client(base: str, session: aiohttp.ClientSession) -> HangupClient:
    cfg = config_mod._build(
        config_mod.Config,
        {
            "carriers": {
                "telnyx": {"api_key": "KEY0123", "api_base": base},
                "plivo": {"auth_id": "MAID42", "auth_token": "tok", "api_base": base},
            }
        },
        "config",
    )
    return HangupClient(cfg, lambda: session)


async def test_telnyx_hangup_request(carrier_api: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = carrier_api
    async with aiohttp.ClientSession() as session:
        await client(base, session).send("telnyx", info("v3:abc-123"))
    (req,) = seen
    assert req["method"] == "POST"
    assert req["path"] == "/v2/calls/v3:abc-123/actions/hangup"
    assert req["auth"] == "Bearer KEY0123"
    assert req["ctype"] == "application/json"
    assert json.loads(req["body"]) == {}


async def test_plivo_hangup_request(carrier_api: tuple[str, list[dict[str, Any]]]) -> None:
    base, seen = carrier_api
    async with aiohttp.ClientSession() as session:
        await client(base, session).send("plivo", info("1234-abcd"))
    (req,) = seen
    assert req["method"] == "DELETE"
    assert req["path"] == "/v1/Account/MAID42/Call/1234-abcd/"
    assert req["auth"] == "Basic " + base64.b64encode(b"MAID42:tok").decode()


async def test_refused_hangup_is_a_provider_error(
    carrier_api: tuple[str, list[dict[str, Any]]],
) -> None:
    base, _ = carrier_api
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ProviderError) as err:
            await client(base, session).send("telnyx", info("refuse-me"))
    assert err.value.status == 422


async def test_missing_credentials_are_a_config_error() -> None:
    async with aiohttp.ClientSession() as session:
        hc = HangupClient(config_mod.Config(), lambda: session)
        with pytest.raises(ConfigError):
            await hc.send("twilio", info("CA1"))
        assert hc.for_carrier("vonage") is None
