"""Stage planners: params + catalog → a `StagePlan`, validating inputs without writing anything."""

from __future__ import annotations

from collections.abc import Callable

from petavox.workflows.catalog import Catalog
from petavox.workflows.config import StageParams
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.downsample import plan_downsample
from petavox.workflows.stages.ingest import plan_ingest

Planner = Callable[[StageParams, Catalog], StagePlan]

PLANNERS: dict[str, Planner] = {
    "ingest": plan_ingest,  # type: ignore[dict-item]
    "downsample": plan_downsample,  # type: ignore[dict-item]
}


def plan_stage(params: StageParams, catalog: Catalog) -> StagePlan:
    return PLANNERS[params.stage](params, catalog)  # type: ignore[attr-defined]
