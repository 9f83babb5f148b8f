"""Stage `agglomerate`: merge supervoxels from their region graph alone, at any threshold.

`segment` (watershed mode) writes the supervoxels and their region graph; this stage reads
only those (never the boundary map, never the watershed) and runs the same merge steps as
`segment` (`petavox.workflows.agglomerate_plans`), so at the segment's threshold it writes the
same segmentation. With one threshold it writes the supervoxel → segment table and the
segmentation. With several and a ground truth it is a sweep: it measures the supervoxel ×
ground-truth table once, agglomerates the whole graph in the driver at every threshold (a
ground truth covers the volume, so its graph is small: that of a proofread crop) and scores
each from the table, with no layer written; it prints the scores and writes them as JSON and
a PNG.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Annotated, Literal

import numpy as np
from pydantic import BeforeValidator, Field

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.objects import get, put, put_json
from petavox.tasks.core.storage import StorageContext, join_url, normalize_url
from petavox.tasks.evaluate.report import report_location
from petavox.tasks.evaluate.threshold_sweep import format_rows, sweep_png, sweep_row
from petavox.tasks.segment.agglomerate_jobs import MergeRule, read_mapping
from petavox.tasks.segment.edits import Edits
from petavox.tasks.segment.whole_graph import read_graph, sweep_mappings
from petavox.workflows.agglomerate_plans import (
    AGGLOMERATION_KEY,
    GraphManifest,
    agglomerate_plans,
    agglomeration_record,
    mapping_plan,
    merge_rule,
    read_manifest,
    relabel_plan,
)
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import StageParams
from petavox.workflows.plan import StagePlan
from petavox.workflows.stage import Positional, Stage
from petavox.workflows.stages.evaluate import TableSum, plan_scores

log = logging.getLogger("petavox")

#: per threshold, (supervoxels, their segments)
Mappings = dict[float, tuple[np.ndarray, np.ndarray]]


def thresholds(value: object) -> object:
    """A threshold, a list, ``"0.5,0.6,0.7"`` or the range ``"0.5:0.8:0.1"`` (both ends in)."""
    if not isinstance(value, str):
        return value if isinstance(value, list) else [value]
    if ":" in value:
        try:
            lo, hi, step = (float(p) for p in value.split(":"))
        except ValueError:
            raise ValueError(f"{value!r}: a range is START:STOP:STEP, e.g. 0.5:0.8:0.1") from None
        if step <= 0 or hi < lo:
            raise ValueError(f"{value!r}: a range needs STEP > 0 and STOP ≥ START")
        count = round((hi - lo) / step) + 1
        return [round(lo + i * step, 10) for i in range(count)]
    return [p.strip() for p in value.split(",") if p.strip()]


Thresholds = Annotated[
    list[Annotated[float, Field(ge=0, le=1)]], BeforeValidator(thresholds), Field(min_length=1)
]


class AgglomerateParams(StageParams):
    """Supervoxels + their region graph → a segmentation at a merge threshold, or a sweep."""

    stage: Literal["agglomerate"] = "agglomerate"
    input: str = Field(
        "supervoxels", description="supervoxel layer a watershed-mode segment wrote: name or URL"
    )
    output: str = Field(
        "agglomeration", description="segmentation layer to write (one threshold): name or URL"
    )
    merge_threshold: Thresholds = Field(
        description="merge while 1 - mean affinity is below this; several (0.5,0.6,0.7 or "
        "0.5:0.8:0.1) with a ground truth: score each, write no layer"
    )
    merge_size_penalty: float = Field(0.0, ge=0, description="as segment's merge_size_penalty")
    merge_size_floor: int = Field(4096, gt=0, description="as segment's merge_size_floor")
    ground_truth: str | None = Field(
        None, description="ground-truth layer: score each threshold (ARAND, VOI split / merge)"
    )
    ignore: list[int] = Field([0], description="ground-truth labels left out of the scores")
    edits: str | None = Field(
        None,
        description="a proofreader's joins and splits (JSON, README 'Proofreading'), applied "
        "on top of the merges: a path or URL",
    )
    report: str = Field(
        "agglomerate_scores.json",
        description="where the scores go (with a PNG beside): key under the run output, or URL",
    )


def output_layer(catalog: Catalog, url: str, supervoxels: Layer, record: dict) -> Layer:
    """The segmentation layer: stored as the supervoxels are (chunks, encoding, shards), so the
    graph's chunks are whole storage chunks (and shards) of it too."""
    bounds = supervoxels.bounds(0)
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        size=bounds.shape,
        resolution=supervoxels.resolution(0),
        chunk_size=supervoxels.chunk_size(0),
        voxel_offset=bounds.start,
        encoding="compressed_segmentation",
        sharding=supervoxels.scale(0).get("sharding", "none"),
        extra=((AGGLOMERATION_KEY, record),),
    )
    return catalog.plan_layer(url, spec)


def rules(params: AgglomerateParams) -> list[MergeRule]:
    return [merge_rule(params, t) for t in sorted(set(params.merge_threshold))]


def plan_agglomerate(params: AgglomerateParams, catalog: Catalog) -> list[StagePlan]:
    supervoxels = catalog.layer(catalog.url(params.input))
    graph = read_manifest(catalog, supervoxels.url)
    gt = catalog.layer(catalog.url(params.ground_truth)) if params.ground_truth else None
    merge = tuple(rules(params))
    if len(merge) > 1 and gt is None:
        raise InputError(
            f"agglomerate: {len(merge)} merge thresholds need a ground truth to score them "
            "(--ground-truth); give one threshold to write a segmentation"
        )
    ctx, root = catalog.context, catalog.root
    edits = load_edits(params.edits, ctx)
    if len(merge) > 1:  # a sweep: the graph of a ground-truth volume, in the driver
        mappings = partial(swept, graph, merge, edits, ctx)
        return [score_plan(params, catalog, (supervoxels, gt), graph, mappings)]
    rule = merge[0]
    output = catalog.url(params.output)
    record = agglomeration_record(graph, rule, output)
    if edits:
        record["edits"] = {"file": params.edits, "digest": edits.digest()}
    target = output_layer(catalog, output, supervoxels, record)
    plans = [
        *agglomerate_plans(graph, rule, root, ctx, edits),
        mapping_plan(graph, rule, root, target.url, ctx, edits),
        relabel_plan(graph, rule, root, (supervoxels, target), edits),
    ]
    if gt is not None:
        table = partial(read_mapping, target.url, graph.levels, ctx)
        plans.append(
            score_plan(params, catalog, (supervoxels, gt), graph, lambda: {rule.threshold: table()})
        )
    return plans


def load_edits(location: str | None, ctx: StorageContext) -> Edits:
    """The edits file at `location` (a local path or a URL); none without one."""
    if location is None:
        return Edits()
    url = normalize_url(location)
    folder, _, name = url.rpartition("/")
    data = get(folder, name, ctx)
    if data is None:
        raise InputError(f"agglomerate: no edits file at {location}")
    return Edits.parse(data.decode(), location)


def swept(
    graph: GraphManifest, rules: tuple[MergeRule, ...], edits: Edits, ctx: StorageContext
) -> Mappings:
    """Every rule's supervoxel → segment mapping from the whole graph, in this process."""
    whole = read_graph(graph.url, graph.levels, ctx)
    found = sweep_mappings(whole, rules, edits)
    return {r.threshold: m for r, m in zip(rules, found, strict=True)}


def score_plan(
    params: AgglomerateParams,
    catalog: Catalog,
    layers: tuple[Layer, Layer],
    graph: GraphManifest,
    mappings: Callable[[], Mappings],
) -> StagePlan:
    """The supervoxel × ground-truth table (`layers`: supervoxels, ground truth; measured each
    run, in segment's tasks: it lives on the driver), then each threshold's scores from it and
    the threshold's mapping."""
    supervoxels, gt = layers
    tables = TableSum()
    folder, key = report_location(catalog.root, params.report)

    def report() -> None:
        table = tables.total()
        rows = [sweep_row(t, table, *m) for t, m in sorted(mappings().items())]
        text = format_rows(rows)
        print(f"agglomerate {supervoxels.url} against {gt.url}:\n{text}")
        record = {"supervoxels": supervoxels.url, "ground_truth": gt.url, "scores": rows}
        put_json(folder, key, record, catalog.context)
        title = f"{supervoxels.url.rsplit('/', 1)[-1]} against {gt.url.rsplit('/', 1)[-1]}"
        png = sweep_png(rows, title)
        put(folder, key.rsplit(".", 1)[0] + ".png", png, catalog.context, "image/png")
        log.info("agglomerate scores written to %s/%s", folder, key)

    thresholds = len(params.merge_threshold)
    plan = plan_scores(
        supervoxels,
        gt,
        tuple(params.ignore),
        tables,
        chunk_shape=graph.grid.chunk_shape,
        label=f"agglomerate {params.input}: score {thresholds} threshold(s) against "
        f"{params.ground_truth}",
        resources=params.resources,
        global_step=report,
    )
    return replace(plan, report=join_url(folder, key))


STAGE = Stage(
    name="agglomerate",
    order=55,
    params=AgglomerateParams,
    planner=plan_agglomerate,
    positionals=(
        Positional(
            field="input",
            metavar="SUPERVOXELS_URL",
            help="supervoxel layer with its region graph (segment writes it)",
        ),
        Positional(
            field="output",
            metavar="OUTPUT_URL",
            help="segmentation layer to write (a sweep writes its scores under it)",
        ),
    ),
)
