"""The worker's event loop choice (server.loop)."""

from __future__ import annotations

import sys

import pytest

from harken.errors import ConfigError
from harken.server.worker import loop_factory


def test_asyncio_is_asyncio_and_auto_takes_uvloop_when_installed() -> None:
    assert loop_factory("asyncio") is None
    uvloop = pytest.importorskip("uvloop")
    factory = loop_factory("auto")
    assert factory is uvloop.new_event_loop
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    assert loop_factory("auto") is None
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        loop_factory("uvloop")
