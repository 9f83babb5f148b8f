"""Stage `align`: estimate (per section and tile) → solve (one global task) → render → pyramid.

Each step has its own ledger entry, so a run resumes at the step and chunk where it stopped;
the solve and render identities derive from the estimate identity.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Annotated, Literal

from pydantic import Field

from petavox.tasks.align.align_jobs import (
    REPORT_JSON,
    REPORT_PNG,
    EstimateJob,
    RenderJob,
    SolveJob,
    section_grid,
)
from petavox.tasks.align.flow import FlowParams
from petavox.tasks.align.solve import SolveParams
from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import join_url
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import (
    PositiveTriple,
    VolumeWriterParams,
    layer_sharding,
)
from petavox.workflows.plan import DriverHooks, Output, StagePlan, identity
from petavox.workflows.sizing import writing_task_shape
from petavox.workflows.stage import Positional, Stage
from petavox.workflows.stages.downsample import DownsampleParams, base_spec, downsample_plan

VERSION = 2  # 2: windowed, re-cut patch matches; content motion kept (drift_window)


class AlignParams(VolumeWriterParams):
    """Serial sections → aligned stack: estimate flows, solve per-section transforms, render."""

    stage: Literal["align"] = "align"
    input: str = Field("raw", description="image layer of the stack: name or URL")
    output: str = Field("aligned", description="layer name under the run output, or a URL")
    patch: int = Field(64, ge=16, description="side of a matching patch (pixels)")
    patch_spacing: int = Field(32, ge=4, description="distance between patch centres")
    coarse: int = Field(4, ge=1, description="downsampling of the coarse (whole-tile) match")
    max_shift: int = Field(
        64, ge=0, description="largest expected shift between neighbouring sections (pixels)"
    )
    bridge: bool = Field(True, description="also match each section to z-2 (skips a bad one)")
    tile: tuple[Annotated[int, Field(gt=0)], Annotated[int, Field(gt=0)]] | None = Field(
        None, description="estimate in XY tiles of this size (default: whole sections)"
    )
    mesh_spacing: float = Field(64.0, gt=0, description="pixels between elastic mesh nodes")
    stiffness: float = Field(0.5, ge=0, description="springs between neighbouring mesh nodes")
    prior: float = Field(0.02, gt=0, description="spring of each section to no motion (drift)")
    linear_prior: float = Field(
        0.3, gt=0, description="the same for rotation/scale/shear (pixels at the section edge)"
    )
    min_confidence: float = Field(0.2, ge=0, le=1, description="patches below are ignored")
    drift_window: float | Literal["auto"] | None = Field(
        "auto",
        description="sections: motion along z slower than this period is the content's own and "
        "is kept (auto: chosen per stack; null: undo every motion, straightening the content)",
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="render: voxels per task, a multiple of the storage chunk"
    )
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk size of the output layer (default: the input's)"
    )
    mips: int = Field(2, ge=0, le=12, description="pyramid levels (factor 2,2,1) to add")
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    carry: dict[str, str] = Field(
        {},
        description="other layers in the raw frame (e.g. annotations) to render with the "
        "same transforms: {input: output}; labels by nearest pixel",
    )


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
        sharding=layer_sharding(params.sharding),
    )
    target = catalog.plan_layer(url, spec)
    estimate_spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": url,
        "lineage": catalog.reads_token(),  # keys the work folder: new input, new flows
    }
    estimate_id = identity("align-estimate", VERSION, estimate_spec)
    work = join_url(catalog.root, "intermediate", "align", estimate_id)
    estimate = estimate_plan(params, source, estimate_spec, work)
    solve = solve_plan(params, volume, estimate_id, work, catalog, url)
    chunk_shape = writing_task_shape(
        params.chunk_shape, target, volume.shape, BYTES_PER_VOXEL, name="align chunk_shape"
    )
    render_spec = {**solve.spec, "task_shape": list(chunk_shape)}
    render = StagePlan(
        label=f"align {params.input} → {params.output}: render",
        stage="align-render",
        version=VERSION,
        spec=render_spec,
        grid=ChunkGrid(volume, chunk_shape, 0, origin=volume.start),
        job=RenderJob(
            source=source, target=target, work_url=work, fill_missing=params.fill_missing
        ),
        resources=params.resources,
        layer_infos={url: target.info},
        outputs=(Output(url),),
        work=(work,),
    )
    plans = [estimate, solve, render]
    for name, out in params.carry.items():
        plans.append(carry_plan(catalog, name, out, volume, params, render_spec, work))
    if params.mips:
        for out in (params.output, *params.carry.values()):
            plans.append(downsample_plan(DownsampleParams(input=out, mips=params.mips), catalog))
    return plans


def estimate_plan(params: AlignParams, source: Layer, spec: dict, work: str) -> StagePlan:
    """Flows of each section (and tile) against the one or two before it."""
    flow = FlowParams(patch=params.patch, spacing=params.patch_spacing, coarse=params.coarse)
    job = EstimateJob(
        source=source,
        params=flow,
        margin=params.max_shift + params.patch,
        backs=(1, 2) if params.bridge else (1,),
        work_url=work,
        fill_missing=params.fill_missing,
    )
    return StagePlan(
        label=f"align {params.input}: estimate section flows",
        stage="align-estimate",
        version=VERSION,
        spec=spec,
        grid=section_grid(source.bounds(0), params.tile),
        job=job,
        resources=params.resources,
        work=(work,),
    )


def solve_plan(
    params: AlignParams, volume: Box, estimate: str, work: str, catalog: Catalog, output: str
) -> StagePlan:
    """One task: every flow → one transform per section (its identity follows the estimate's),
    and the quality report in the `output` layer's folder, summarised on the terminal."""
    solve = SolveParams(
        mesh_spacing=params.mesh_spacing,
        stiffness=params.stiffness,
        prior=params.prior,
        linear_prior=params.linear_prior,
        min_confidence=params.min_confidence,
        drift_window=params.drift_window,
    )
    return StagePlan(
        label=f"align {params.input}: solve transforms",
        stage="align-solve",
        version=VERSION,
        spec={"estimate": estimate},
        grid=ChunkGrid(volume, volume.shape, 0, origin=volume.start),
        job=SolveJob(
            volume=volume, params=solve, work_url=work, context=catalog.context, report_url=output
        ),
        resources=params.resources,
        hooks=DriverHooks(on_result=partial(print_alignment_summary, output)),
        outputs=(Output(output),),  # the report, in the layer's folder
        report=join_url(output, REPORT_JSON),
        work=(work,),
    )


def print_alignment_summary(output: str, chunk: Chunk, result: dict) -> None:
    """The solve's quality summary, on the driver's terminal (above any progress bar)."""
    from tqdm import tqdm

    s = result["summary"]
    window = "off" if s["drift_window"] is None else f"{s['drift_window']:g} sections"
    tqdm.write(
        f"alignment of {s['sections']} sections: match residual median "
        f"{s['residual_median_px']} px (max {s['residual_max_px']}), patches matched (median) "
        f"{s['matched_median']}, content motion kept over {window}"
    )
    for z, flags in s["flagged"].items():
        tqdm.write(f"  section {z}: {', '.join(flags)}")
    tqdm.write(f"  report: {join_url(output, REPORT_JSON)} (and {REPORT_PNG.split('/')[-1]})")


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
    spec = replace(base_spec(layer), sharding=layer_sharding(params.sharding))
    target = catalog.plan_layer(url, spec)
    grid = ChunkGrid(volume, Vec3.of(render_spec["task_shape"]), 0, origin=volume.start)
    unit = target.write_unit(0)
    if any(c % s for c, s in zip(grid.chunk_shape, unit)):
        what = "shard shape" if target.sharding(0) else "chunk size"
        raise InputError(
            f"align chunk_shape {tuple(grid.chunk_shape)} is not a multiple of "
            f"{url}'s {what} {tuple(unit)}; give a chunk_shape that is a multiple of both"
        )
    spec = {**render_spec, "input": layer.url, "output": url}
    return StagePlan(
        label=f"align {name} → {out}: render with the same transforms",
        stage="align-render",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=RenderJob(source=layer, target=target, work_url=work, fill_missing=params.fill_missing),
        resources=params.resources,
        layer_infos={url: target.info},
        outputs=(Output(url),),
        work=(work,),
    )


STAGE = Stage(
    name="align",
    order=30,
    params=AlignParams,
    planner=plan_align,
    positionals=(
        Positional(
            field="input", metavar="RAW_URL", help="image stack to align (serial sections along z)"
        ),
        Positional(field="output", metavar="OUTPUT_URL", help="aligned image layer URL to write"),
    ),
)
