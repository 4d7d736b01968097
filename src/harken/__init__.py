"""harken: a Python runtime for real-time voice AI agents on the phone and in the browser."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
