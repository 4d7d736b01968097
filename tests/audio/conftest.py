"""Shared helpers for the audio tests."""

from __future__ import annotations

import warnings

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop as _audioop  # Python <= 3.12: the reference oracle for G.711
    except ImportError:  # pragma: no cover - Python 3.13+
        _audioop = None


@pytest.fixture
def audioop():  # type: ignore[no-untyped-def]
    if _audioop is None:  # pragma: no cover
        pytest.skip("audioop (the G.711 oracle) is gone in this Python")
    return _audioop
