"""The frame pipeline runtime: stages, composite pipelines, service lanes and calls.

See :mod:`harken.pipeline.call` for the rules the runtime keeps.
"""

from __future__ import annotations

from harken.pipeline.call import Call, CallState
from harken.pipeline.service import Lane, ServiceStage
from harken.pipeline.stage import Pipeline, Push, Stage

__all__ = ["Call", "CallState", "Lane", "Pipeline", "Push", "ServiceStage", "Stage"]
