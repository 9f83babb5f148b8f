"""Stage planners: params + catalog → a `StagePlan`, validating inputs without writing anything."""

from __future__ import annotations

from collections.abc import Callable

from petavox.workflows.catalog import Catalog
from petavox.workflows.config import StageParams
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.align import plan_align
from petavox.workflows.stages.connectome import plan_connectome
from petavox.workflows.stages.downsample import plan_downsample
from petavox.workflows.stages.evaluate import plan_evaluate_stage
from petavox.workflows.stages.infer import plan_infer
from petavox.workflows.stages.ingest import plan_ingest
from petavox.workflows.stages.mesh import plan_mesh
from petavox.workflows.stages.segment import plan_segment
from petavox.workflows.stages.skeletonize import plan_skeletonize
from petavox.workflows.stages.synapses import plan_synapses

Planner = Callable[[StageParams, Catalog], StagePlan | list[StagePlan]]

PLANNERS: dict[str, Planner] = {
    "ingest": plan_ingest,  # type: ignore[dict-item]
    "downsample": plan_downsample,  # type: ignore[dict-item]
    "align": plan_align,  # type: ignore[dict-item]
    "infer": plan_infer,  # type: ignore[dict-item]
    "segment": plan_segment,  # type: ignore[dict-item]
    "evaluate": plan_evaluate_stage,  # type: ignore[dict-item]
    "mesh": plan_mesh,  # type: ignore[dict-item]
    "skeletonize": plan_skeletonize,  # type: ignore[dict-item]
    "synapses": plan_synapses,  # type: ignore[dict-item]
    "connectome": plan_connectome,  # type: ignore[dict-item]
}


def plan_stage(params: StageParams, catalog: Catalog) -> list[StagePlan]:
    """The runner plans of one config stage, in order (a stage may take several steps)."""
    plans = PLANNERS[params.stage](params, catalog)  # type: ignore[attr-defined]
    return plans if isinstance(plans, list) else [plans]
