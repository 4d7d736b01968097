"""The VAD's configuration and its per-call speech state machine (pure, synchronous).

:class:`SpeechSegmenter` turns per-window speech probabilities into speech start/stop events
with media timestamps; :class:`VadParams` configures it and the gates in
:mod:`harken.speech.vad`. Nothing here knows about models, batching or pipelines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from harken.errors import ConfigError

__all__ = ["WINDOW_MS", "SpeechSegmenter", "VadParams"]

#: Silero's window at 8 and 16 kHz (256 and 512 samples)
WINDOW_MS: Final = 32.0


@dataclass(frozen=True, slots=True)
class VadParams:
    """VAD configuration. Window counts are durations rounded to whole 32 ms windows."""

    #: speech probability at or above which a window counts as speech
    threshold: float = 0.5
    #: probability below which a window counts as silence (default ``threshold - 0.15``)
    neg_threshold: float | None = None
    #: speech starts after this much speech (windows >= threshold and >= min_volume_dbfs)
    start_ms: float = 160.0
    #: speech stops after this much silence, measured from the refined end of speech
    stop_ms: float = 200.0
    #: quieter windows never start speech
    min_volume_dbfs: float = -45.0
    #: False: every window goes to the model (the "model-only" baseline)
    gate: bool = True
    #: a window opens the gate this far above the noise floor...
    gate_margin_db: float = 9.0
    #: ...and above this absolute level; during speech, windows this far above the floor keep
    #: it open (hysteresis: quiet word endings still reach the model)
    gate_min_dbfs: float = -62.0
    gate_hold_db: float = 4.5
    #: how fast the noise floor may rise (it falls at once)
    floor_rise_db_s: float = 2.0
    #: the gate stays open this long after the last loud window
    hangover_ms: float = 96.0
    #: audio before the gate opened that goes to the model with the opening window
    preroll_ms: float = 64.0
    #: a model gap this long resets the LSTM state (a fresh onset)
    reset_after_ms: float = 1000.0
    #: boundaries move to the energy edge (8 ms resolution) when it is this close
    refine_ms: float = 288.0
    #: once the model has confirmed speech, loud windows skip it (counted as speech)...
    skip_speech: bool = True
    #: ...except for a probe this often (one window)
    probe_ms: float = 320.0
    #: once a run longer than ``start_ms`` has been heard since the gate opened, a loud run
    #: resuming after a short dip (the gate still open) skips the model after this much
    resume_ms: float = 32.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("VadParams.threshold must be in (0, 1)")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ConfigError("VadParams.neg_threshold must be in [0, threshold]")
        for name in (
            "start_ms",
            "stop_ms",
            "hangover_ms",
            "preroll_ms",
            "reset_after_ms",
            "refine_ms",
            "probe_ms",
            "resume_ms",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"VadParams.{name} must be >= 0")

    @property
    def negative(self) -> float:
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(0.01, self.threshold - 0.15)

    def windows(self, ms: float) -> int:
        """A duration in whole 32 ms windows."""
        return round(ms / WINDOW_MS)


class SpeechSegmenter:
    """The per-call speech state machine (pure, synchronous; one window at a time).

    Each window brings the model's probability, its level, its start time, whether it was loud
    (above the gate's threshold) and an energy edge: for a loud window, where its loud run began;
    for a quiet one, where the last loud run ended (NaN when unknown). Silero's probability rises
    a little late on soft onsets and stays up ~100 ms after speech ends; the energy edges, when
    close enough (``refine_ms``), give the boundaries to 8 ms, and silence is counted from the
    refined end, so a clean stop is reported ``stop_ms`` after the speech really ended.
    """

    __slots__ = (
        "_neg",
        "_refine",
        "_run",
        "_run_ts",
        "_silent",
        "_start_n",
        "_stop_s",
        "_stop_ts",
        "_thr",
        "_vol",
        "_win_s",
        "speaking",
    )

    def __init__(self, params: VadParams) -> None:
        self._thr = params.threshold
        self._neg = params.negative
        self._vol = params.min_volume_dbfs
        self._start_n = max(1, params.windows(params.start_ms))
        self._stop_s = max(WINDOW_MS, params.stop_ms) / 1000.0 - 1e-6
        self._refine = params.refine_ms / 1000.0
        self._win_s = WINDOW_MS / 1000.0
        self.speaking = False
        self._run = 0
        self._run_ts = 0.0
        self._silent = 0
        self._stop_ts = 0.0

    def step(
        self, prob: float, level_db: float, ts: float, loud: bool = False, edge: float = math.nan
    ) -> float | None:
        """Feed one window starting at media time ``ts``; returns the event's media time when
        the state flips (read :attr:`speaking` for which way), else None."""
        if not self.speaking:
            if prob >= self._thr and level_db >= self._vol:
                if self._run == 0:
                    # a loud run that began shortly before: the onset is there
                    self._run_ts = edge if loud and 0.0 <= ts - edge <= self._refine else ts
                self._run += 1
                if self._run >= self._start_n:
                    self.speaking = True
                    self._run = 0
                    self._silent = 0
                    return self._run_ts
            elif prob < self._neg:
                self._run = 0
            return None
        if prob < self._neg:
            if self._silent == 0:
                # the model's silence lags the energy: start counting where the loud part ended
                self._stop_ts = edge if not loud and 0.0 <= ts - edge <= self._refine else ts
            self._silent += 1
            if ts + self._win_s - self._stop_ts >= self._stop_s:
                self.speaking = False
                self._silent = 0
                return self._stop_ts
        else:
            self._silent = 0
        return None

    def reset(self) -> None:
        self.speaking = False
        self._run = self._silent = 0
