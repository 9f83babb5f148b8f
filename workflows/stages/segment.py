"""Plan `segment`: per-chunk segmentation, stitching, and (watershed) global agglomeration.

One config stage becomes several runner plans, each with its own ledger entry, so a run killed
midway resumes at the step (and the chunk) where it stopped:

1. segment: watershed fragments (or cc components) per chunk, in the chunk's own id range;
2. stitch: match objects across faces, resolve equivalences up an octree, relabel in place;
3. agglomerate (watershed): region graph per chunk, mean-affinity merges up the same octree,
   relabel in place to the final ids.

The follow-up identities derive from the segment identity: re-segmenting redoes them all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import join_url
from petavox.tasks.segment.agglomerate_jobs import MAPS as AGGLO_MAPS
from petavox.tasks.segment.agglomerate_jobs import ContactJob, MergeJob
from petavox.tasks.segment.equivalence import IdSpace
from petavox.tasks.segment.segment_jobs import SegmentJob
from petavox.tasks.segment.stitch_jobs import MAPS as STITCH_MAPS
from petavox.tasks.segment.stitch_jobs import MatchJob, RelabelJob, ResolveJob
from petavox.tasks.segment.watershed import WatershedParams
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import SegmentParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.sizing import task_shape

VERSION = 1
BYTES_PER_VOXEL = 16  # sizing weight: watershed holds ~50 bytes per voxel, so aim at ~16 M voxels


def check_input(layer: Layer) -> None:
    if layer.num_channels not in (1, 3):
        raise LayerMismatchError(
            f"{layer.url} has {layer.num_channels} channels; segment takes a boundary map "
            "(1 channel) or affinities (3 channels)"
        )
    if layer.dtype.name not in ("uint8", "float32", "float64"):
        raise LayerMismatchError(
            f"{layer.url} holds {layer.dtype}; segment takes float32 in [0, 1] or uint8 0-255"
        )


def plan_segment(params: SegmentParams, catalog: Catalog) -> list[StagePlan]:
    source = catalog.layer(catalog.url(params.input))
    check_input(source)
    watershed = params.mode == "watershed"
    halo = Vec3.of(params.halo) if watershed else Vec3(0, 0, 0)
    if watershed and min(halo) < 2:
        raise InputError(
            f"segment halo {tuple(halo)}: watershed mode matches objects across chunk faces "
            "in the halo, so every axis needs a halo of at least 2 (16 or more is better)"
        )
    storage_chunk = Vec3.of(params.storage_chunk or source.chunk_size(0))
    bounds = source.bounds(0)
    chunk_shape = task_shape(
        params.chunk_shape,
        storage_chunk,
        bounds.shape,
        BYTES_PER_VOXEL,
        name="segment chunk_shape",
        step_name="storage chunk",
    )
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
    target = catalog.plan_layer(url, spec)

    grid = ChunkGrid(bounds, chunk_shape, halo, origin=bounds.start)
    ids = IdSpace(tuple(grid.grid_shape), (chunk_shape + halo * 2).prod() + 1)  # type: ignore[arg-type]
    seg_spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": url,
        "task_shape": list(chunk_shape),
        "storage_chunk": list(storage_chunk),
    }
    seg_id = identity("segment", VERSION, seg_spec)
    work = join_url(catalog.root, "intermediate", "segment", seg_id)
    depth = Vec3(*(max(1, h // 2) for h in halo))
    resolution = source.resolution(0)
    ws_params = WatershedParams(
        params.smoothing,
        params.seed_threshold,
        params.seeds,
        params.seed_radius,
        tuple(r / resolution[0] for r in resolution),
    )  # type: ignore[arg-type]
    segment_plan = StagePlan(
        label=f"segment {params.input} → {params.output} ({params.mode})",
        stage="segment",
        identity=seg_id,
        spec=seg_spec,
        grid=grid,
        job=SegmentJob(
            source,
            target,
            grid,
            ids,
            params.mode,
            ws_params,
            params.boundary_threshold,
            params.connectivity,
            work,
            depth,
            params.fill_missing,
        ),
        resources=params.resources,
        layer_infos={url: target.info},
    )
    steps = Steps(params.output, seg_id, ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start))
    plans = [segment_plan, *stitch_plans(steps, params, ids, target, work, depth)]
    if watershed:
        plans += agglomeration_plans(steps, params, source, target, work)
    return plans


@dataclass(frozen=True)
class Steps:
    """What the follow-up steps of one segment plan share: names, identity root, chunk grid."""

    output: str
    segment_identity: str
    chunks: ChunkGrid

    @property
    def levels(self) -> int:
        return math.ceil(math.log2(max(self.chunks.grid_shape)))

    def level_grid(self, level: int) -> ChunkGrid:
        grid = self.chunks
        return ChunkGrid(grid.bounds, grid.chunk_shape * 2**level, 0, origin=grid.origin)

    def plan(self, stage: str, label: str, level: int, job: object) -> StagePlan:
        spec = {"segment": self.segment_identity, "level": level}
        return StagePlan(
            label=f"{label.split(':')[0]} {self.output}:{label.split(':', 1)[1]}",
            stage=stage,
            identity=identity(stage, VERSION, spec),
            spec=spec,
            grid=self.level_grid(level),
            job=job,  # type: ignore[arg-type]
        )


def stitch_plans(
    steps: Steps, params: SegmentParams, ids: IdSpace, target: Layer, work: str, depth: Vec3
) -> list[StagePlan]:
    """Match faces, resolve the octree levels bottom up, relabel. Nothing for a single chunk."""
    levels = steps.levels
    if levels == 0:
        return []
    chunks = steps.chunks
    plans = [
        steps.plan(
            "stitch-match",
            "stitch: match faces",
            0,
            MatchJob(target, chunks, params.mode, params.connectivity, work, depth),
        )
    ]
    for level in range(1, levels + 1):
        job = ResolveJob(
            level, steps.level_grid(level), steps.level_grid(level - 1), ids, work, target.context
        )
        plans.append(
            steps.plan("stitch-resolve", f"stitch: resolve level {level}/{levels}", level, job)
        )
    relabel = RelabelJob(target, work, STITCH_MAPS, tuple(range(1, levels + 1)))
    plans.append(steps.plan("stitch-relabel", "stitch: relabel", 0, relabel))
    return plans


def agglomeration_plans(
    steps: Steps, params: SegmentParams, source: Layer, target: Layer, work: str
) -> list[StagePlan]:
    """Region graph and merges per chunk, merges up the octree, relabel to the final ids."""
    levels = steps.levels
    contacts = ContactJob(
        target, source, steps.chunks, params.merge_threshold, work, params.fill_missing
    )
    plans = [steps.plan("agglomerate", "agglomerate: chunk region graphs", 0, contacts)]
    for level in range(1, levels + 1):
        job = MergeJob(
            level,
            steps.level_grid(level - 1),
            steps.chunks,
            params.merge_threshold,
            work,
            target.context,
        )
        plans.append(
            steps.plan("agglomerate", f"agglomerate: merge level {level}/{levels}", level, job)
        )
    relabel = RelabelJob(target, work, AGGLO_MAPS, tuple(range(levels + 1)))
    plans.append(steps.plan("agglomerate-relabel", "agglomerate: relabel", 0, relabel))
    return plans
