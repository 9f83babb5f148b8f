"""Plan the `downsample` stage: several mips per task, in place or into a new layer."""

from __future__ import annotations

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, planned_info, pyramid_info
from petavox.tasks.image.downsample_jobs import DownsampleJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import DownsampleParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.sizing import task_shape

VERSION = 1


def base_spec(layer: Layer) -> LayerSpec:
    """The mip-0 description of an existing layer, for a copy that gets its own pyramid."""
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


def plan_downsample(params: DownsampleParams, catalog: Catalog) -> StagePlan:
    source = catalog.layer(catalog.url(params.input))
    target_url = catalog.url(params.output or params.input)
    factor = Vec3.of(params.factor)
    if target_url == source.url:
        base_info = source.info
    else:
        base_info = planned_info(target_url, base_spec(source), catalog.info(target_url))
    info = pyramid_info(target_url, base_info, factor, params.mips)
    catalog.declare(target_url, info)
    target = Layer(target_url, info, catalog.context)

    step = source.chunk_size(0) * factor**params.mips
    chunk_shape = task_shape(
        params.chunk_shape,
        step,
        source.bounds(0).shape,
        source.dtype.itemsize * source.num_channels,
        name="downsample chunk_shape",
        step_name="storage chunk × factor^mips",
    )
    method = params.method
    if method == "auto":
        method = "mode" if source.layer_type == "segmentation" else "average"
    bounds = source.bounds(0)
    if params.bounds is not None:
        bounds = restrict(source, Box(*params.bounds), chunk_shape)
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
        identity=identity("downsample", VERSION, spec),
        spec=spec,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
        job=DownsampleJob(source, target, factor, params.mips, method, params.fill_missing),
        resources=params.resources,
        layer_infos={target_url: info},
    )
