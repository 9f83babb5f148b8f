"""Plan `segment`: per-chunk segmentation, then the stitch steps (match, resolve levels, relabel).

One config stage becomes several runner plans, each with its own ledger entry, so a run killed
during stitching resumes at the step (and the chunk) where it stopped. Stitching's identities
derive from the segment identity: re-segmenting restitches, and nothing else does.
"""

from __future__ import annotations

import math

from petavox.tasks.equivalence import IdSpace
from petavox.tasks.errors import InputError, LayerMismatchError
from petavox.tasks.geometry import ChunkGrid, Vec3
from petavox.tasks.layers import Layer, LayerSpec, planned_info
from petavox.tasks.segment import SegmentJob
from petavox.tasks.segmentation import WatershedParams
from petavox.tasks.stitch import MatchJob, RelabelJob, ResolveJob
from petavox.tasks.storage import join_url
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
        params.chunk_shape, storage_chunk, bounds.shape, BYTES_PER_VOXEL,
        name="segment chunk_shape", step_name="storage chunk",
    )  # fmt: skip
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
    info = planned_info(url, spec, catalog.info(url))
    catalog.declare(url, info)
    target = Layer(url, info, catalog.context)

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
    ws_params = WatershedParams(params.smoothing, params.seed_threshold, params.merge_threshold)
    plans = [
        StagePlan(
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
            layer_infos={url: info},
        )
    ]
    return plans + stitch_plans(params, grid, ids, target, work, depth, seg_id)


def stitch_plans(
    params: SegmentParams,
    grid: ChunkGrid,
    ids: IdSpace,
    target: Layer,
    work: str,
    depth: Vec3,
    seg_id: str,
) -> list[StagePlan]:
    """Match faces, resolve the octree levels bottom up, relabel. Nothing for a single chunk."""
    levels = math.ceil(math.log2(max(grid.grid_shape)))
    if levels == 0:
        return []
    flat = ChunkGrid(grid.bounds, grid.chunk_shape, 0, origin=grid.origin)

    def plan(stage: str, label: str, node_grid: ChunkGrid, job, extra: dict) -> StagePlan:
        spec = {"segment": seg_id, **extra}
        return StagePlan(
            label=f"stitch {params.output}: {label}",
            stage=stage,
            identity=identity(stage, VERSION, spec),
            spec=spec,
            grid=node_grid,
            job=job,
        )

    plans = [
        plan("stitch-match", "match faces", flat,
             MatchJob(target, flat, params.mode, params.connectivity, work, depth), {})
    ]  # fmt: skip
    child = flat
    for level in range(1, levels + 1):
        nodes = ChunkGrid(grid.bounds, grid.chunk_shape * 2**level, 0, origin=grid.origin)
        job = ResolveJob(level, nodes, child, ids, work, target.context)
        plans.append(plan("stitch-resolve", f"resolve level {level}/{levels}", nodes, job,
                          {"level": level}))  # fmt: skip
        child = nodes
    plans.append(plan("stitch-relabel", "relabel", flat, RelabelJob(target, levels, work), {}))
    return plans
