"""Stage `downsample`: a mip pyramid, several mips per task, in place or into a new layer."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, planned_info, pyramid_info
from petavox.tasks.image.downsample_jobs import DownsampleJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import PositiveTriple, StageParams, Triple
from petavox.workflows.plan import Output, StagePlan
from petavox.workflows.sizing import task_shape
from petavox.workflows.stage import Positional, Stage

VERSION = 1


class DownsampleParams(StageParams):
    """Adds a mip pyramid to a layer: averaging for images, mode for segmentations."""

    stage: Literal["downsample"] = "downsample"
    input: str = Field("raw", description="layer to downsample: name under the output, or URL")
    output: str | None = Field(None, description="layer that gets the pyramid (default: input)")
    factor: PositiveTriple = Field((2, 2, 1), description="downsampling factor per mip, X,Y,Z")
    mips: int = Field(3, ge=1, le=12, description="number of new mips to make")
    method: Literal["auto", "average", "mode"] = Field(
        "auto", description="auto: average for images, mode for segmentations"
    )
    chunk_shape: PositiveTriple | None = Field(
        None,
        description="mip-0 voxels per task, a multiple of storage chunk × factor^mips "
        "(default: ~64 M voxels)",
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    bounds: tuple[Triple, Triple] | None = Field(
        None,
        description="only this box, [[x0,y0,z0],[x1,y1,z1]] in mip-0 voxels (grown to whole tasks)",
    )

    @field_validator("bounds")
    @classmethod
    def _bounds(cls, value: tuple[Triple, Triple] | None) -> tuple[Triple, Triple] | None:
        if value is not None and any(b <= a for a, b in zip(*value)):
            raise ValueError(f"bounds {value} are empty: each stop must exceed its start")
        return value


def base_spec(layer: Layer) -> LayerSpec:
    """The mip-0 description of an existing layer, for a copy that gets its own pyramid:
    sharded (auto) if the layer is, else as `sharding_for`'s default."""
    scale = layer.scale(0)
    return LayerSpec(
        layer_type=layer.layer_type,  # type: ignore[arg-type]
        dtype=layer.dtype.name,
        size=Vec3.of(scale["size"]),
        resolution=tuple(scale["resolution"]),  # type: ignore[arg-type]
        chunk_size=layer.chunk_size(0),
        voxel_offset=Vec3.of(scale["voxel_offset"]),
        encoding=scale["encoding"],
        num_channels=layer.num_channels,
        sharding="auto" if "sharding" in scale else "default",
    )


def restrict(layer: Layer, box: Box, chunk_shape: Vec3) -> Box:
    """`box` grown to whole tasks of the layer's grid; an error if it leaves the layer."""
    full = layer.bounds(0)
    if not full.contains(box):
        raise InputError(
            f"bounds {box} lie outside layer {layer.url}, which covers {full}; "
            "give bounds inside the layer"
        )
    origin = full.start
    start = origin + ((box.start - origin) // chunk_shape) * chunk_shape
    stop = origin + (box.stop - origin).ceildiv(chunk_shape) * chunk_shape
    return Box(start, stop).intersection(full)


def check_aligned(source: Layer, bounds: Box, coarsest: Vec3) -> None:
    """Refuse a layer whose start is off the coarsest mip's grid: tasks start there, so two
    neighbouring tasks would each write half of the voxels on their border at every coarser
    mip (and the first block would pool the wrong voxels together)."""
    start = bounds.start
    if all(a % f == 0 for a, f in zip(start, coarsest)):
        return
    raise InputError(
        f"layer {source.url} starts at voxel {tuple(start)}, not a multiple of the coarsest "
        f"mip's factor {tuple(coarsest)}: its tasks would share coarse voxels. Ingest it with a "
        "voxel offset that is a multiple of it (e.g. 0), or ask for fewer mips"
    )


def task_step(source: Layer, target: Layer, scale: Vec3) -> tuple[Vec3, str]:
    """The smallest task (and what it is called) that writes whole storage chunks at every new
    mip (`scale`: the coarsest one's factor) and, for a copy, whole shards of its mip 0."""
    step, name = source.chunk_size(0) * scale, "storage chunk × factor^mips"
    if target.url != source.url and (sharding := target.sharding(0)) is not None:
        sharding.check_writable(f"{target.url} scale {target.scale(0)['key']}")
        step = Vec3(*(math.lcm(a, b) for a, b in zip(step, sharding.shape)))
        name += f" and the shard shape of {target.url}"
    return step, name


def downsample_plan(params: DownsampleParams, catalog: Catalog) -> StagePlan:
    """The one step of `downsample` (align plans it too, for the pyramids of its outputs)."""
    source = catalog.layer(catalog.url(params.input))
    target_url = catalog.url(params.output or params.input)
    factor = Vec3.of(params.factor)
    if target_url == source.url:
        base_info = source.info
    else:
        base_info = planned_info(target_url, base_spec(source), catalog.info(target_url))
    step, step_name = task_step(
        source, Layer(target_url, base_info, catalog.context), factor**params.mips
    )
    chunk_shape = task_shape(
        params.chunk_shape,
        step,
        source.bounds(0).shape,
        source.dtype.itemsize * source.num_channels,
        name="downsample chunk_shape",
        step_name=step_name,
    )
    # new mips of a sharded layer get shards that nest in these tasks (each writes its own)
    info = pyramid_info(target_url, base_info, factor, params.mips, task=chunk_shape)
    catalog.declare(target_url, info)
    target = Layer(target_url, info, catalog.context)
    method = params.method
    if method == "auto":
        method = "mode" if source.layer_type == "segmentation" else "average"
    bounds = source.bounds(0)
    if params.bounds is not None:
        bounds = restrict(source, Box(*params.bounds), chunk_shape)
    check_aligned(source, bounds, factor**params.mips)
    spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": target_url,
        "method": method,
        "task_shape": list(chunk_shape),  # chunk ids are only comparable on the same grid
    }
    return StagePlan(
        label=f"downsample {params.input}",
        stage="downsample",
        version=VERSION,
        spec=spec,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
        job=DownsampleJob(
            source=source,
            target=target,
            factor=factor,
            mips=params.mips,
            method=method,
            fill_missing=params.fill_missing,
        ),
        resources=params.resources,
        outputs=tuple(
            Output(target_url, f"scale:{info['scales'][mip]['key']}")
            for mip in range(1, params.mips + 1)
        ),
        layer_infos={target_url: info},
    )


def plan_downsample(params: DownsampleParams, catalog: Catalog) -> list[StagePlan]:
    return [downsample_plan(params, catalog)]


STAGE = Stage(
    name="downsample",
    order=20,
    params=DownsampleParams,
    planner=plan_downsample,
    positionals=(
        Positional(field="input", metavar="INPUT_URL", help="layer to downsample"),
        Positional(
            field="output",
            metavar="OUTPUT_URL",
            help="layer that gets the pyramid (default: INPUT_URL)",
            required=False,
        ),
    ),
)
