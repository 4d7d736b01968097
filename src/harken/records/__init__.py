"""Durable call records: what was said, heard and how fast, per call, on disk.

* :mod:`~harken.records.model`: the records (:class:`CallInfo`, :class:`TurnRecord`,
  :class:`CallEvent`, :class:`CallEnd`) and what reading gives back (:class:`CallSummary`,
  :class:`CallDetail`);
* :mod:`~harken.records.store`: the store protocol, the shared schema, :func:`open_store`;
  :mod:`~harken.records.sqlite` (default; one writer thread per process) and
  :mod:`~harken.records.postgres` (psycopg 3, the ``postgres`` extra);
* :mod:`~harken.records.recorder`: :class:`CallRecorder`, the non-blocking hot-path face;
* :mod:`~harken.records.wav`: :class:`StereoWavWriter`, caller left / agent right;
* :mod:`~harken.records.cli`: ``harken calls list|show``.

See ``docs/observability.md`` ("Call records").
"""

from __future__ import annotations

from harken.records.model import (
    CallDetail,
    CallEnd,
    CallEvent,
    CallInfo,
    CallSummary,
    Record,
    TurnRecord,
)
from harken.records.recorder import CallRecorder, RecorderStats
from harken.records.store import CallStore, open_store
from harken.records.wav import StereoWavWriter

__all__ = [
    "CallDetail",
    "CallEnd",
    "CallEvent",
    "CallInfo",
    "CallRecorder",
    "CallStore",
    "CallSummary",
    "Record",
    "RecorderStats",
    "StereoWavWriter",
    "TurnRecord",
    "open_store",
]
