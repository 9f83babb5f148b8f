"""Stage `segment`: per-chunk segmentation, stitching, and (watershed) global agglomeration.

One config stage becomes several runner plans, each with its own ledger entry, so a run killed
midway resumes at the step (and the chunk) where it stopped:

1. segment: watershed fragments (or cc components) per chunk, in the chunk's own id range,
   into a `fragments` layer in the work folder;
2. stitch: match objects across faces, resolve equivalences up an octree, relabel the
   fragments into the `supervoxels` layer (in cc mode: into the output itself);
3. graph (watershed): the supervoxels' region graph, chunk contacts then up the same octree,
   into the supervoxel layer's ``region_graph/`` (`petavox.tasks.segment.region_graph`);
4. agglomerate (watershed): mean-affinity merges from the graph alone, the supervoxel →
   segment table and the relabelled output (`petavox.workflows.agglomerate_plans`; the
   `agglomerate` stage reruns just these at another threshold).

No step rewrites a layer in place (a chunk written twice is the same chunk). The follow-up
identities derive from the segment identity, which leaves out the merge rule.

Two guards only warn (`petavox.workflows.segment_checks`): the membrane share of a sample of
the input, before dispatch; the largest segment's share of the output, after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import ClassVar, Literal

from pydantic import Field

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import ChunkGrid, Vec3, octree_level_grid, octree_levels
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import join_url
from petavox.tasks.segment.equivalence import IdSpace
from petavox.tasks.segment.label_counts import TOP_K
from petavox.tasks.segment.segment_jobs import SegmentJob
from petavox.tasks.segment.stitch_jobs import MAPS as STITCH_MAPS
from petavox.tasks.segment.stitch_jobs import MatchJob, RelabelJob, ResolveJob
from petavox.tasks.segment.watershed import WatershedParams
from petavox.workflows.agglomerate_plans import (
    AGGLOMERATION_KEY,
    GraphManifest,
    agglomeration_record,
    merge_rule,
    segment_merges,
    supervoxels_beside,
)
from petavox.workflows.catalog import Catalog
from petavox.workflows.domain_fit import with_model_defaults
from petavox.workflows.params import (
    NonNegativeTriple,
    PositiveTriple,
    VolumeWriterParams,
    layer_sharding,
)
from petavox.workflows.plan import ChunkJob, DriverHooks, Output, StagePlan, identity
from petavox.workflows.segment_checks import (
    Knob,
    check_boundary,
    check_halo,
    check_input,
    size_hooks,
)
from petavox.workflows.sizing import writing_task_shape
from petavox.workflows.stage import Positional, Stage

log = logging.getLogger("petavox")

VERSION = 2  # 2: supervoxels, region graph, agglomeration from it
BYTES_PER_VOXEL = 16  # sizing weight: watershed holds ~50 bytes per voxel, so aim at ~16 M voxels


class SegmentParams(VolumeWriterParams):
    """Boundary map or affinities → one global id per object, segmented per chunk and stitched."""

    stage: Literal["segment"] = "segment"
    input: str = Field(
        "boundary",
        description="boundary map (1 channel, float 0-1 or uint8, high = membrane) or "
        "affinities (3 channels x,y,z, high = connected): layer name or URL",
    )
    output: str = Field("segmentation", description="layer name under the run output, or a URL")
    supervoxels: str | None = Field(
        None,
        description="watershed mode: layer of the stitched fragments before merging, with their "
        "region graph (default: beside the output, 'supervoxels' for the output "
        "'segmentation', else '<output>_supervoxels')",
    )
    mode: Literal["watershed", "cc"] = Field(
        "watershed",
        description="watershed: seeded watershed + mean-affinity agglomeration; "
        "cc: connected components of boundary < boundary_threshold",
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~16 M voxels)"
    )
    halo: NonNegativeTriple = Field(
        (32, 32, 32),
        description="context read around each chunk in watershed mode, X,Y,Z (≥ 2 each)",
    )
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk size of the output layer (default: the input's)"
    )
    smoothing: float = Field(0.5, ge=0, description="Gaussian sigma on the boundary map (voxels)")
    seed_threshold: float = Field(
        0.15,
        ge=0,
        le=1,
        description="boundary below this seeds the watershed (distance seeds: is foreground)",
    )
    seeds: Literal["threshold", "distance"] = Field(
        "threshold",
        description="threshold: components of boundary < seed_threshold; distance: maxima of "
        "the distance transform of that foreground (robust to membrane gaps; use for CNN maps)",
    )
    seed_radius: float = Field(
        3.0, gt=0, description="distance seeds: at most one seed per this radius (x voxels)"
    )
    merge_threshold: float = Field(
        0.875, ge=0, le=1, description="agglomerate while 1 - mean affinity is below this"
    )
    merge_size_penalty: float = Field(
        0.0,
        ge=0,
        description="added to the merge score per doubling of the smaller region's voxels above "
        "merge_size_floor: large regions then need a stronger contact to merge (0: none)",
    )
    merge_size_floor: int = Field(4096, gt=0, description="no size penalty up to this many voxels")
    boundary_threshold: float = Field(
        0.5, ge=0, le=1, description="cc mode: voxels with boundary below this are foreground"
    )
    connectivity: Literal[6, 18, 26] = Field(6, description="cc mode: voxel connectivity")
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")

    HASHED_UNLESS_DEFAULT: ClassVar[frozenset[str]] = VolumeWriterParams.HASHED_UNLESS_DEFAULT | {
        "merge_size_penalty",
        "merge_size_floor",
    }


def merge_knob(params: SegmentParams) -> Knob:
    """The parameter that sets how much the mode merges, with its value (for warnings)."""
    if params.mode == "cc":
        return ("boundary_threshold", params.boundary_threshold)
    return ("merge_threshold", params.merge_threshold)


@dataclass(frozen=True, kw_only=True)
class Steps:
    """What the steps of one segment plan share: the layers, grid, ids, work folder, identity."""

    params: SegmentParams
    source: Layer
    target: Layer
    fragments: Layer  # chunk-local ids (work folder)
    stitched: Layer  # global ids after stitching: the supervoxels (the target in cc mode)
    grid: ChunkGrid  # the segment step's grid (with the halo)
    ids: IdSpace
    work: str
    root: str  # the run's output root (the agglomeration's work folder goes under it)
    segment_identity: str
    tuned: str = ""  # which parameters came from the input's model, for the label

    @property
    def chunks(self) -> ChunkGrid:
        grid = self.grid
        return ChunkGrid(grid.bounds, grid.chunk_shape, 0, origin=grid.origin)

    @property
    def depth(self) -> Vec3:
        """Thickness of the face slabs that stitching compares (half the halo, at least 1)."""
        return Vec3(*(max(1, h // 2) for h in self.grid.halo))

    @property
    def levels(self) -> int:
        return octree_levels(self.grid)

    def level_grid(self, level: int) -> ChunkGrid:
        return octree_level_grid(self.chunks, level)

    def plan(
        self, stage: str, label: str, level: int, job: ChunkJob, writes: Layer | None = None
    ) -> StagePlan:
        """A follow-up step; `writes` is the layer its chunks go to, if any."""
        step, what = label.split(":", 1)
        return StagePlan(
            label=f"{step} {self.params.output}:{what}",
            stage=stage,
            version=VERSION,
            spec={"segment": self.segment_identity, "level": level},
            grid=self.level_grid(level),
            job=job,
            layer_infos={writes.url: writes.info} if writes else {},
            outputs=(Output(writes.url),) if writes is self.stitched else (),
            work=(self.work,),
        )

    def relabel(self, levels: tuple[int, ...]) -> StagePlan:
        """The fragments through the stitching maps into `stitched`: the supervoxels, or the
        output in cc mode, whose plan reports the largest segment."""
        final = self.stitched is self.target
        job = RelabelJob(
            source=self.fragments,
            target=self.stitched,
            work_url=self.work,
            map_dir=STITCH_MAPS,
            levels=levels,
            top_k=TOP_K if final else 0,
        )
        plan = self.plan("stitch-relabel", "stitch: relabel", 0, job, writes=self.stitched)
        if not final:
            return plan
        hooks = size_hooks(self.target.url, merge_knob(self.params), len(plan.grid))
        return replace(plan, hooks=hooks)


def segment_spec(params: SegmentParams, catalog: Catalog, chunk_shape: Vec3, storage: Vec3) -> dict:
    """What the supervoxels depend on: every hashed field but the merge rule's."""
    merging = ("merge_threshold", "merge_size_penalty", "merge_size_floor")
    return {
        **{k: v for k, v in params.hashed_fields().items() if k not in merging},
        "input": catalog.url(params.input),
        "output": catalog.url(params.output),
        "task_shape": list(chunk_shape),
        "storage_chunk": list(storage),
        "lineage": catalog.reads_token(),  # keys the work folder: a new input, new fragments
    }


def plan_segment(params: SegmentParams, catalog: Catalog) -> list[StagePlan]:
    source = catalog.layer(catalog.url(params.input))
    check_input(source)
    params, tuned = with_model_defaults(params, source)
    log.info("segment %s: %s", params.input, tuned.removeprefix(", ") or "config parameters")
    halo = check_halo(params.mode, params.halo)
    storage_chunk = Vec3.of(params.storage_chunk or source.chunk_size(0))
    bounds = source.bounds(0)
    url = catalog.url(params.output)
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        size=bounds.shape,
        resolution=source.resolution(0),
        chunk_size=storage_chunk,
        voxel_offset=bounds.start,
        encoding="compressed_segmentation",
    )
    target_spec = replace(spec, sharding=layer_sharding(params.sharding))
    target = catalog.plan_layer(url, target_spec)
    chunk_shape = writing_task_shape(
        params.chunk_shape, target, bounds.shape, BYTES_PER_VOXEL, name="segment chunk_shape"
    )
    grid = ChunkGrid(bounds, chunk_shape, halo, origin=bounds.start)
    seg_spec = segment_spec(params, catalog, chunk_shape, storage_chunk)
    seg_id = identity("segment", VERSION, seg_spec)
    work = join_url(catalog.root, "intermediate", "segment", seg_id)
    # the work layers are stored as the output is (the same tasks write them: whole shards)
    spec = replace(spec, sharding=target.scale(0).get("sharding", "none"))
    fragments = catalog.plan_layer(join_url(work, "fragments"), spec)
    stitched, graph = target, None
    if params.mode == "watershed":
        stitched, graph, target = plan_supervoxels(catalog, params, spec, target_spec, grid, seg_id)
    steps = Steps(
        params=params,
        source=source,
        target=target,
        fragments=fragments,
        stitched=stitched,
        grid=grid,
        ids=IdSpace(tuple(grid.grid_shape), (chunk_shape + halo * 2).prod() + 1),  # type: ignore[arg-type]
        work=work,
        root=catalog.root,
        segment_identity=seg_id,
        tuned=tuned,
    )
    plans = [segment_plan(steps, seg_spec), *stitch_plans(steps)]
    if graph is not None:
        plans += segment_merges(
            graph,
            merge_rule(params, params.merge_threshold),
            (steps.stitched, steps.source, steps.target),
            work=work,
            root=catalog.root,
            fill_missing=params.fill_missing,
        )
    return plans


def plan_supervoxels(
    catalog: Catalog,
    params: SegmentParams,
    spec: LayerSpec,
    target_spec: LayerSpec,
    grid: ChunkGrid,
    seg_id: str,
) -> tuple[Layer, GraphManifest, Layer]:
    """Watershed mode: (the supervoxel layer, its graph's manifest, the output planned again
    with the record of its agglomeration)."""
    url, source = catalog.url(params.output), catalog.url(params.input)
    supervoxels = supervoxels_beside(url, params.supervoxels and catalog.url(params.supervoxels))
    if supervoxels == url:
        raise InputError(f"segment: supervoxels and output are both {url}; name them apart")
    stitched = catalog.plan_layer(supervoxels, spec)
    chunks = ChunkGrid(grid.bounds, grid.chunk_shape, 0, origin=grid.origin)
    graph = GraphManifest(supervoxels=supervoxels, affinities=source, grid=chunks, identity=seg_id)
    catalog.declare(graph.url, graph.info())  # for an `agglomerate` planned after this stage
    rule = merge_rule(params, params.merge_threshold)
    record = (AGGLOMERATION_KEY, agglomeration_record(graph, rule, url))
    return stitched, graph, catalog.plan_layer(url, replace(target_spec, extra=(record,)))


def segment_plan(steps: Steps, spec: dict) -> StagePlan:
    """Fragments (or components) per chunk, each in its chunk's id range."""
    params, source = steps.params, steps.source
    fill = params.fill_missing
    resolution = source.resolution(0)
    watershed = WatershedParams(
        smoothing=params.smoothing,
        seed_threshold=params.seed_threshold,
        seeds=params.seeds,
        seed_radius=params.seed_radius,
        voxel_size=tuple(r / resolution[0] for r in resolution),  # type: ignore[arg-type]
    )
    job = SegmentJob(
        source=source,
        target=steps.fragments,
        grid=steps.grid,
        ids=steps.ids,
        mode=params.mode,
        params=watershed,
        boundary_threshold=params.boundary_threshold,
        connectivity=params.connectivity,
        work_url=steps.work,
        depth=steps.depth,
        fill_missing=params.fill_missing,
    )
    return StagePlan(
        label=f"segment {params.input} → {params.output} ({params.mode}{steps.tuned})",
        stage="segment",
        version=VERSION,
        spec=spec,
        grid=steps.grid,
        job=job,
        resources=params.resources,
        layer_infos={steps.fragments.url: steps.fragments.info},
        # figures, not identity: a look at the input before dispatch that only warns
        hooks=DriverHooks(before=partial(check_boundary, source, merge_knob(params), fill)),
        work=(steps.work,),
    )


def stitch_plans(steps: Steps) -> list[StagePlan]:
    """Match faces, resolve the octree levels bottom up, relabel into `stitched` (a single
    chunk: a copy)."""
    levels, params, work = steps.levels, steps.params, steps.work
    maps = tuple(range(1, levels + 1))
    last = steps.relabel(maps)
    if levels == 0:
        return [last]
    match = MatchJob(
        layer=steps.fragments,
        grid=steps.chunks,
        mode=params.mode,
        connectivity=params.connectivity,
        work_url=work,
        depth=steps.depth,
    )
    plans = [steps.plan("stitch-match", "stitch: match faces", 0, match)]
    for level in range(1, levels + 1):
        job = ResolveJob(
            level=level,
            grid=steps.level_grid(level),
            child_grid=steps.level_grid(level - 1),
            ids=steps.ids,
            work_url=work,
            context=steps.fragments.context,
        )
        label = f"stitch: resolve level {level}/{levels}"
        plans.append(steps.plan("stitch-resolve", label, level, job))
    return [*plans, last]


STAGE = Stage(
    name="segment",
    order=50,
    params=SegmentParams,
    planner=plan_segment,
    positionals=(
        Positional(
            field="input",
            metavar="BOUNDARY_URL",
            help="boundary map (1 channel, high = membrane) or affinities (3 channels)",
        ),
        Positional(field="output", metavar="OUTPUT_URL", help="segmentation layer URL to write"),
    ),
)
