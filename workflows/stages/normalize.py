"""Stage `normalize`: 16-bit, 32-bit or float EM → uint8 by sampled percentiles (for the whole
volume, or per section), optionally CLAHE per section, chunking-independent by construction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Literal

from pydantic import Field, model_validator

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.sampling import sample_values
from petavox.tasks.core.storage import join_url
from petavox.tasks.image.normalize_jobs import (
    Masking,
    NormalizeJob,
    SectionLevelsJob,
    gather_levels,
    levels_grid_shape,
    levels_of,
)
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import PositiveTriple, VolumeWriterParams, layer_sharding
from petavox.workflows.plan import DriverHooks, Output, StagePlan, identity
from petavox.workflows.sizing import writing_task_shape
from petavox.workflows.stage import Positional, Stage

VERSION = 1
INPUT_DTYPES = ("uint8", "uint16", "uint32", "float32")
SECTIONS_PER_TASK = 16  # the levels step's slabs (fixed: the levels do not depend on chunking)
# sizing weight: the input as float64, the mask and the output per voxel (CLAHE: its blend)
BYTES_PER_VOXEL = 24


class NormalizeParams(VolumeWriterParams):
    """16-bit / 32-bit / float EM → uint8 by percentiles (global or per section), optional
    CLAHE; blank and saturated voxels become 0."""

    stage: Literal["normalize"] = "normalize"
    input: str = Field("raw", description="image layer (uint16, uint32, float32 or uint8)")
    output: str = Field("normalized", description="uint8 layer name under the output, or a URL")
    mode: Literal["global", "section"] = Field(
        "global",
        description="global: one low/high for the whole volume; section: per z section "
        "(for section-to-section brightness drift)",
    )
    low: float = Field(0.5, ge=0, lt=100, description="percentile mapped to 1")
    high: float = Field(99.5, gt=0, le=100, description="percentile mapped to 255")
    blank: float = Field(0, description="voxels at or below this are blank: 0 in the output")
    mask_saturated: bool = Field(
        True, description="voxels at the dtype's maximum (integers) are saturated: 0 in the output"
    )
    clahe: bool = Field(False, description="CLAHE per section after the rescale")
    clahe_tile: int = Field(64, ge=8, description="CLAHE tile side (pixels), tiles fixed in x, y")
    clahe_clip: float = Field(0.01, gt=0, le=1, description="CLAHE clip limit (share of a tile)")
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk size of the output layer (default: the input's)"
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~32 M)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")

    @model_validator(mode="after")
    def _order(self) -> NormalizeParams:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


def check_input(layer: Layer) -> None:
    if layer.layer_type != "image" or layer.num_channels != 1:
        raise LayerMismatchError(
            f"{layer.url} is a {layer.layer_type} layer with {layer.num_channels} channel(s); "
            "normalize takes one image channel (select one channel, or ingest it alone)"
        )
    if layer.dtype.name not in INPUT_DTYPES:
        raise LayerMismatchError(
            f"{layer.url} holds {layer.dtype.name}; normalize takes "
            f"{', '.join(INPUT_DTYPES)} (ingest with dtype: float32 or uint16)"
        )


def global_levels(layer: Layer, params: NormalizeParams, masking: Masking) -> tuple[float, float]:
    """low, high of `tasks.core.sampling`'s sample of the whole volume (the same every time)."""
    found = levels_of(
        sample_values(layer, params.fill_missing)[:, 0], masking, params.low, params.high
    )
    if found is None:
        raise InputError(
            f"normalize: the sample of {layer.url} holds almost no data the masks leave "
            "(blank or saturated); check the layer, or lower `blank` / set mask_saturated: false"
        )
    return found


def level_binding(layer: Layer, params: NormalizeParams, masking: Masking):
    """Global levels of an input an earlier stage of this run writes: sampled on the driver
    just before the first task (its data exists only then; its lineage is in the identity)."""

    @contextmanager
    def bind(job: NormalizeJob) -> Iterator[NormalizeJob]:
        yield job.with_levels(global_levels(layer, params, masking))

    return bind


def output_spec(params: NormalizeParams, source: Layer) -> LayerSpec:
    """The uint8 layer: the input's geometry, its storage chunk unless one is given."""
    bounds = source.bounds(0)
    return LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=bounds.shape,
        resolution=source.resolution(0),
        chunk_size=Vec3.of(params.storage_chunk or source.chunk_size(0)),
        voxel_offset=bounds.start,
        sharding=layer_sharding(params.sharding),
    )


def plan_normalize(params: NormalizeParams, catalog: Catalog) -> list[StagePlan]:
    url_in = catalog.url(params.input)
    written_by_this_run = url_in in catalog.planned
    source = catalog.layer(url_in)
    check_input(source)
    masking = Masking.for_dtype(source.dtype, params.blank, params.mask_saturated)
    bounds = source.bounds(0)
    url = catalog.url(params.output)
    target = catalog.plan_layer(url, output_spec(params, source))
    chunk_shape = writing_task_shape(
        params.chunk_shape, target, bounds.shape, BYTES_PER_VOXEL, name="normalize chunk_shape"
    )
    stage_spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": url,
        "task_shape": list(chunk_shape),  # chunk ids are only comparable on the same grid
    }
    job = NormalizeJob(
        source=source,
        target=target,
        masking=masking,
        clahe_tile=params.clahe_tile if params.clahe else 0,
        clahe_clip=params.clahe_clip,
        fill_missing=params.fill_missing,
    )
    plans, hooks = [], DriverHooks()
    if params.mode == "section":
        levels = levels_plan(params, source, masking, catalog)
        plans.append(levels)
        job = replace(job, levels_url=levels.work[0])
    elif written_by_this_run:
        hooks = DriverHooks(bind=level_binding(source, params, masking))
    else:  # the data is there: the levels are fixed now and enter the identity
        job = job.with_levels(global_levels(source, params, masking))
        stage_spec["levels"] = list(job.levels or ())
    plans.append(
        StagePlan(
            label=f"normalize {params.input} → {params.output} ({params.mode})",
            stage="normalize",
            version=VERSION,
            spec=stage_spec,
            grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
            job=job,
            resources=params.resources,
            layer_infos={url: target.info},
            outputs=(Output(url),),
            hooks=hooks,
            work=(job.levels_url,) if job.levels_url else (),
        )
    )
    return plans


def levels_plan(
    params: NormalizeParams, source: Layer, masking: Masking, catalog: Catalog
) -> StagePlan:
    """The first step of section mode: each section's levels from its sample columns, kept in
    a work folder named by what they depend on (not the output's chunking or CLAHE)."""
    bounds = source.bounds(0)
    grid = ChunkGrid(bounds, levels_grid_shape(bounds, SECTIONS_PER_TASK), 0, origin=bounds.start)
    starts = [c.write_box.start.z for c in grid]
    levels_spec = {
        **params.model_dump(
            mode="json", include={"low", "high", "blank", "mask_saturated", "fill_missing"}
        ),
        "input": source.url,
        "lineage": catalog.reads_token(),  # keys the work folder: new input, new levels
    }
    levels_id = identity("normalize-levels", VERSION, levels_spec)
    work = join_url(catalog.root, "intermediate", "normalize", levels_id)
    return StagePlan(
        label=f"normalize {params.input}: levels per section",
        stage="normalize-levels",
        version=VERSION,
        spec=levels_spec,
        grid=grid,
        job=SectionLevelsJob(
            source=source,
            masking=masking,
            percentiles=(params.low, params.high),
            work_url=work,
            fill_missing=params.fill_missing,
        ),
        resources=params.resources,
        global_step=lambda: gather_levels(work, starts, source.context),
        work=(work,),
    )


STAGE = Stage(
    name="normalize",
    order=25,
    params=NormalizeParams,
    planner=plan_normalize,
    positionals=(
        Positional(field="input", metavar="INPUT_URL", help="uint16/uint32/float32 image layer"),
        Positional(field="output", metavar="OUTPUT_URL", help="uint8 layer URL to write"),
    ),
)
