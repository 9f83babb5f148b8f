"""Stage `evaluate`: stream contingency tables over chunks, then score (and write) the sum.

Each task returns the contingency table of its chunk; the driver merges tables as they arrive,
so memory holds one table of (segment, ground-truth object) pairs, never a volume. The stage
writes the scores as JSON; `petavox evaluate --seg --gt` prints them instead and writes nothing.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Literal

from pydantic import Field

from petavox.tasks.core.errors import LayerMismatchError
from petavox.tasks.core.geometry import Chunk, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import join_url
from petavox.tasks.evaluate.evaluate_jobs import ContingencyJob
from petavox.tasks.evaluate.metrics import Contingency, merge_all, scores
from petavox.tasks.evaluate.report import report_location, write_report
from petavox.workflows.catalog import Catalog
from petavox.workflows.cli_options import add_runtime_options, runtime_from_args
from petavox.workflows.params import Resources, StageParams
from petavox.workflows.plan import DriverHooks, StagePlan
from petavox.workflows.stage import Stage

VERSION = 1
DEFAULT_CHUNK = Vec3(256, 256, 64)


class EvaluateParams(StageParams):
    """Scores a segmentation against a ground-truth layer; writes the scores as JSON."""

    stage: Literal["evaluate"] = "evaluate"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    ground_truth: str = Field(description="ground-truth layer: name or URL")
    ignore: list[int] = Field([0], description="ground-truth labels left out of the scores")
    report: str = Field(
        "evaluation.json", description="where the scores go: key under the run output, or URL"
    )


class TableSum:
    """Merges chunk tables in batches: memory holds one merged table plus a batch, no volume."""

    BATCH = 32

    def __init__(self) -> None:
        self.tables = [Contingency.empty()]

    def add(self, _chunk: Chunk, table: Contingency) -> None:
        self.tables.append(table)
        if len(self.tables) > self.BATCH:
            self.tables = [merge_all(self.tables)]

    def total(self) -> Contingency:
        self.tables = [merge_all(self.tables)]
        return self.tables[0]


def check_layers(seg: Layer, gt: Layer) -> None:
    for layer in (seg, gt):
        if layer.layer_type != "segmentation" and layer.dtype.kind not in "ui":
            raise LayerMismatchError(
                f"{layer.url} is a {layer.dtype} {layer.layer_type} layer; evaluate needs integer "
                "labels"
            )
    if seg.bounds(0) != gt.bounds(0):
        raise LayerMismatchError(
            f"segmentation {seg.url} covers {seg.bounds(0)} but ground truth {gt.url} covers "
            f"{gt.bounds(0)}; score layers of the same bounds"
        )
    if seg.resolution(0) != gt.resolution(0):
        raise LayerMismatchError(
            f"segmentation resolution {seg.resolution(0)} differs from ground truth "
            f"{gt.resolution(0)}"
        )


def plan_scores(
    seg: Layer,
    gt: Layer,
    ignore_gt: tuple[int, ...],
    tables: TableSum,
    *,
    chunk_shape: Vec3 = DEFAULT_CHUNK,
    label: str = "evaluate",
    resources: Resources | None = None,
    global_step: Callable[[], None] | None = None,
) -> StagePlan:
    """The chunk tables of `seg` against `gt`, summed into `tables` on the driver (no ledger:
    the sum lives in the driver, so an evaluation always runs whole)."""
    check_layers(seg, gt)
    chunk = gt.chunk_size(0)
    shape = Vec3(*(max(c, (s // c) * c) for s, c in zip(chunk_shape, chunk)))
    bounds = gt.bounds(0)
    return StagePlan(
        label=label,
        stage="evaluate",
        version=VERSION,
        spec={"segmentation": seg.url, "ground_truth": gt.url, "ignore": list(ignore_gt)},
        grid=ChunkGrid(bounds, shape, 0, origin=bounds.start),
        job=ContingencyJob(seg=seg, gt=gt, ignore_gt=ignore_gt),
        resources=resources or Resources(),
        hooks=DriverHooks(on_result=tables.add),
        global_step=global_step,
        use_ledger=False,
    )


def plan_evaluate(params: EvaluateParams, catalog: Catalog) -> list[StagePlan]:
    seg = catalog.layer(catalog.url(params.input))
    gt = catalog.layer(catalog.url(params.ground_truth))
    folder, key = report_location(catalog.root, params.report)
    tables = TableSum()

    def report() -> None:
        result = scores(tables.total())
        write_report(
            folder,
            key,
            segmentation=seg.url,
            ground_truth=gt.url,
            ignore=list(params.ignore),
            scores=result,
            context=catalog.context,
        )
        tables.tables = [Contingency.empty()]

    plan = plan_scores(
        seg,
        gt,
        tuple(params.ignore),
        tables,
        label=f"evaluate {params.input} against {params.ground_truth}",
        resources=params.resources,
        global_step=report,
    )
    return [replace(plan, report=join_url(folder, key))]


class ScoresCommand:
    """`petavox evaluate --seg URL --gt URL`: the scores as JSON on stdout, nothing written."""

    help = "adapted Rand error and VOI of a segmentation, as JSON"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--seg", required=True, help="segmentation layer URL")
        parser.add_argument("--gt", required=True, help="ground-truth layer URL")
        parser.add_argument(
            "--ignore",
            type=int,
            nargs="*",
            default=[0],
            help="ground-truth labels to leave out (default 0)",
        )
        add_runtime_options(parser)

    def run(self, args: argparse.Namespace) -> int:
        # the command executes, so it imports the executor (planning above never does)
        from petavox.workflows.config import RayConfig, StorageConfig
        from petavox.workflows.pipeline import score_layers

        runtime = runtime_from_args(args)
        result = score_layers(
            args.seg,
            args.gt,
            ray=RayConfig(**runtime["ray"]),
            storage=StorageConfig(**runtime["storage"]),
            ignore_gt=tuple(args.ignore),
            progress=not args.quiet,
        )
        print(json.dumps(result.to_dict()))
        return 0


STAGE = Stage(
    name="evaluate",
    order=60,
    params=EvaluateParams,
    planner=plan_evaluate,
    command=ScoresCommand(),
)
