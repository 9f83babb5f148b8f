"""Plan `align`: estimate (per section and tile) → solve (one global task) → render → pyramid.

Each step has its own ledger entry, so a run resumes at the step and chunk where it stopped;
the solve and render identities derive from the estimate identity.
"""

from __future__ import annotations

from petavox.tasks.align.align_jobs import EstimateJob, RenderJob, SolveJob, section_grid
from petavox.tasks.align.flow import FlowParams
from petavox.tasks.align.solve import SolveParams
from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import join_url
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import AlignParams, DownsampleParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.downsample import base_spec, plan_downsample
from petavox.workflows.stages.sizing import task_shape

VERSION = 1
BYTES_PER_VOXEL = 16  # render: raw read with its margin, coordinates and the output


def check_input(layer: Layer, params: AlignParams) -> None:
    if layer.num_channels != 1 or layer.layer_type != "image":
        raise LayerMismatchError(
            f"{layer.url} is not a one-channel image layer; align takes the raw EM stack"
        )
    shape = layer.bounds(0).shape
    if min(shape[0], shape[1]) < params.patch:
        raise InputError(
            f"sections of {layer.url} are {shape[0]}×{shape[1]} pixels, smaller "
            f"than the matching patch ({params.patch}); lower --patch"
        )
    if params.tile and min(params.tile) < params.patch:
        raise InputError(f"tile {params.tile} is smaller than the patch ({params.patch})")


def plan_align(params: AlignParams, catalog: Catalog) -> list[StagePlan]:
    source = catalog.layer(catalog.url(params.input))
    check_input(source, params)
    volume = source.bounds(0)
    url = catalog.url(params.output)
    storage_chunk = Vec3.of(params.storage_chunk or source.chunk_size(0))
    spec = LayerSpec(
        layer_type="image",
        dtype=source.dtype.name,
        size=volume.shape,
        resolution=source.resolution(0),
        chunk_size=storage_chunk,
        voxel_offset=volume.start,
        encoding="raw",
    )
    target = catalog.plan_layer(url, spec)

    stage_spec = {**params.hashed_fields(), "input": source.url, "output": url}
    ident = identity("align-estimate", VERSION, stage_spec)
    work = join_url(catalog.root, "intermediate", "align", ident)
    flow = FlowParams(params.patch, params.patch_spacing, params.coarse)
    backs = (1, 2) if params.bridge else (1,)
    margin = params.max_shift + params.patch
    estimate = StagePlan(
        label=f"align {params.input}: estimate section flows",
        stage="align-estimate",
        identity=ident,
        spec=stage_spec,
        grid=section_grid(volume, params.tile),
        job=EstimateJob(source, flow, margin, backs, work, params.fill_missing),
        resources=params.resources,
    )
    solve_params = SolveParams(
        params.mesh_spacing,
        params.stiffness,
        params.prior,
        params.linear_prior,
        min_confidence=params.min_confidence,
    )
    follow = {"estimate": ident}
    solve = StagePlan(
        label=f"align {params.input}: solve transforms",
        stage="align-solve",
        identity=identity("align-solve", VERSION, follow),
        spec=follow,
        grid=ChunkGrid(volume, volume.shape, 0, origin=volume.start),
        job=SolveJob(volume, solve_params, work, catalog.context),
        resources=params.resources,
    )
    chunk_shape = task_shape(
        params.chunk_shape,
        storage_chunk,
        volume.shape,
        BYTES_PER_VOXEL,
        name="align chunk_shape",
        step_name="storage chunk",
    )
    render_spec = {**follow, "task_shape": list(chunk_shape)}
    render = StagePlan(
        label=f"align {params.input} → {params.output}: render",
        stage="align-render",
        identity=identity("align-render", VERSION, render_spec),
        spec=render_spec,
        grid=ChunkGrid(volume, chunk_shape, 0, origin=volume.start),
        job=RenderJob(source, target, work, params.fill_missing),
        resources=params.resources,
        layer_infos={url: target.info},
    )
    plans = [estimate, solve, render]
    for name, out in params.carry.items():
        plans.append(carry_plan(catalog, name, out, volume, params, render_spec, work))
    if params.mips:
        for out in (params.output, *params.carry.values()):
            plans.append(plan_downsample(DownsampleParams(input=out, mips=params.mips), catalog))
    return plans


def carry_plan(
    catalog: Catalog,
    name: str,
    out: str,
    volume: Box,
    params: AlignParams,
    render_spec: dict,
    work: str,
) -> StagePlan:
    """Render another layer of the raw frame (annotations, labels) with the same transforms."""
    layer = catalog.layer(catalog.url(name))
    if layer.bounds(0) != volume:
        raise LayerMismatchError(
            f"{layer.url} covers {layer.bounds(0)}, not the stack's "
            f"{volume}; carry layers must cover the same voxels"
        )
    url = catalog.url(out)
    target = catalog.plan_layer(url, base_spec(layer))
    grid = ChunkGrid(volume, Vec3.of(render_spec["task_shape"]), 0, origin=volume.start)
    if any(c % s for c, s in zip(grid.chunk_shape, layer.chunk_size(0))):
        raise InputError(
            f"align chunk_shape {tuple(grid.chunk_shape)} is not a multiple of "
            f"{layer.url}'s chunk size {tuple(layer.chunk_size(0))}"
        )
    spec = {**render_spec, "input": layer.url, "output": url}
    return StagePlan(
        label=f"align {name} → {out}: render with the same transforms",
        stage="align-render",
        identity=identity("align-render", VERSION, spec),
        spec=spec,
        grid=grid,
        job=RenderJob(layer, target, work, params.fill_missing),
        resources=params.resources,
        layer_infos={url: target.info},
    )
