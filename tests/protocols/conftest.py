"""Shared fixtures for the protocol tests: golden wire messages from ``fixtures/<carrier>/``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def _load(carrier: str, name: str) -> dict[str, Any]:
    with (FIXTURES / carrier / f"{name}.json").open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


@pytest.fixture
def golden() -> Callable[[str, str], dict[str, Any]]:
    """``golden(carrier, name)``: a fixture message as a dict."""
    return _load


@pytest.fixture
def wire() -> Callable[[str, str], str]:
    """``wire(carrier, name)``: a fixture message as the carrier sends it (JSON text)."""
    return lambda carrier, name: json.dumps(_load(carrier, name))
