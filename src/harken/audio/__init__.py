"""Media-plane DSP: pure, synchronous, numpy-based (no asyncio, no I/O).

Curated public API; everything else in the submodules is private.
"""

from __future__ import annotations
