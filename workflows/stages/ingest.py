"""Stage `ingest`: an image stack becomes a precomputed layer, one task per box."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from petavox.tasks.core.errors import InputError, ValueRangeError
from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layer_sources import LayerSource
from petavox.tasks.core.layers import LayerSpec
from petavox.tasks.core.sampling import sample_source_values
from petavox.tasks.core.sources import VolumeSource, open_source
from petavox.tasks.image.ingest_jobs import IngestJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.fingerprint import fingerprint
from petavox.workflows.params import (
    PositiveTriple,
    Resolution,
    Triple,
    VolumeWriterParams,
    layer_sharding,
)
from petavox.workflows.plan import Output, StagePlan
from petavox.workflows.sizing import writing_task_shape
from petavox.workflows.stage import Positional, Stage

VERSION = 1


class IngestParams(VolumeWriterParams):
    """Image stack (TIFF/PNG slices, multi-page TIFF, .npy, .h5) or a Zarr/N5/OME-Zarr volume
    to a precomputed layer."""

    stage: Literal["ingest"] = "ingest"
    input: str = Field(
        description="slice folder, .tif stack, .npy, file.h5:dataset (local path or file://), "
        "or a Zarr/N5/OME-Zarr/precomputed volume (folder or URL; see README Formats)"
    )
    output: str = Field("raw", description="layer name under the run output, or a full URL")
    axes: str = Field("zyx", description="axis order of the stored array (slice folders: zyx)")
    layer_type: Literal["image", "segmentation"] = Field("image", description="layer type")
    resolution: Resolution | None = Field(
        None, description="voxel size in nm, X,Y,Z (default for a Zarr/N5/OME-Zarr volume: its own)"
    )
    voxel_offset: Triple = Field(
        (0, 0, 0),
        description="position of voxel 0 in the volume, X,Y,Z (default for a Zarr/N5/OME-Zarr "
        "volume: its own)",
    )
    dtype: str | None = Field(None, description="layer dtype (default: the source's)")
    encoding: Literal["raw", "jpeg", "compressed_segmentation"] | None = Field(
        None,
        description="chunk encoding (default: raw; compressed_segmentation for uint32/64 labels)",
    )
    storage_chunk: PositiveTriple = Field((64, 64, 64), description="chunk size of the layer")
    chunk_shape: PositiveTriple | None = Field(
        None,
        description="voxels per task, a multiple of storage_chunk (of the shard shape when "
        "sharded; default: ~64 M voxels, at least one shard)",
    )

    @field_validator("axes")
    @classmethod
    def _axes(cls, value: str) -> str:
        if sorted(value) != ["x", "y", "z"]:
            raise ValueError(f"{value!r} is not an order of the letters x, y, z (e.g. zyx)")
        return value


def default_encoding(layer_type: str, dtype: np.dtype) -> str:
    if layer_type == "segmentation" and dtype.name in ("uint32", "uint64"):
        return "compressed_segmentation"
    return "raw"


def default_dtype(source_dtype: np.dtype) -> np.dtype:
    """The layer dtype of a source when the config gives none: its own, but float32 for any
    float (precomputed layers hold no float64 or float16)."""
    dtype = np.dtype(source_dtype)
    return np.dtype("float32") if np.issubdtype(dtype, np.floating) else dtype


def check_dtype_fits(source: VolumeSource, dtype: np.dtype) -> None:
    """Refuse, before any work, a layer dtype that a sample of the source already shows cannot
    hold its values (each task checks its own box again: the sample may miss the extremes)."""
    if dtype == source.dtype or not np.issubdtype(dtype, np.integer):
        return
    values = sample_source_values(source)
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values
    if values.size == 0:
        return
    lo, hi, info = values.min(), values.max(), np.iinfo(dtype)
    fractional = values.dtype.kind == "f" and not np.array_equal(values, np.round(values))
    if lo >= info.min and hi <= info.max and not fractional:
        return
    found = f"values {lo:g}..{hi:g}" + (", fractional," if fractional else "")
    keep = default_dtype(source.dtype).name
    raise ValueRangeError(
        f"source {source.url}: {found} (in a sample of the source) do not fit the layer dtype "
        f"{dtype.name}; ingest as {keep} (leave dtype unset) and run petavox normalize "
        f"RAW_URL OUTPUT_URL to map it to uint8 by percentiles (see 'Contrast normalisation')"
    )


def _source_geometry(
    params: IngestParams, source: VolumeSource, catalog: Catalog
) -> tuple[tuple[float, float, float], Triple]:
    """The layer's resolution and voxel offset: as given, else a volume source's own. Notes
    the source's lineage (an input like a layer: edited files give the stage a new one)."""
    offset = params.voxel_offset
    if isinstance(source, LayerSource):
        catalog.note_read(source.url, catalog.lineage(source.url, source.layer.info))
        if "voxel_offset" not in params.model_fields_set:
            offset = tuple(source.voxel_offset)  # type: ignore[assignment]
        return params.resolution or source.resolution, offset
    location = source.location.resolve()
    catalog.note_read(f"file://{location}", "files:" + fingerprint(location))
    if params.resolution is None:
        raise InputError(
            f"ingest {params.input}: an image stack has no voxel size; give resolution X,Y,Z "
            "in nm (--resolution 8,8,30)"
        )
    return params.resolution, offset


def plan_ingest(params: IngestParams, catalog: Catalog) -> list[StagePlan]:
    source = open_source(params.input, params.axes, catalog.context)
    resolution, voxel_offset = _source_geometry(params, source, catalog)
    dtype = np.dtype(params.dtype) if params.dtype else default_dtype(source.dtype)
    check_dtype_fits(source, dtype)
    layer_type = params.layer_type
    if isinstance(source, LayerSource) and "layer_type" not in params.model_fields_set:
        layer_type = source.layer.layer_type  # e.g. an OME-Zarr's image-label: segmentation
    spec = LayerSpec(
        layer_type=layer_type,
        dtype=dtype.name,
        size=source.shape,
        resolution=resolution,
        chunk_size=Vec3.of(params.storage_chunk),
        voxel_offset=Vec3.of(voxel_offset),
        encoding=params.encoding or default_encoding(layer_type, dtype),  # type: ignore[arg-type]
        sharding=layer_sharding(params.sharding),
    )
    url = catalog.url(params.output)
    target = catalog.plan_layer(url, spec)
    chunk_shape = writing_task_shape(
        params.chunk_shape, target, source.shape, dtype.itemsize, name="ingest chunk_shape"
    )
    bounds = Box.from_shape(source.shape, voxel_offset)
    spec_hash = {
        **params.hashed_fields(),
        "layer_type": layer_type,
        "output": url,
        "source_shape": list(source.shape),
        "source_dtype": np.dtype(source.dtype).name,
        "task_shape": list(chunk_shape),  # chunk ids are only comparable on the same grid
    }
    plan = StagePlan(
        label=f"ingest → {params.output}",
        stage="ingest",
        version=VERSION,
        spec=spec_hash,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=voxel_offset),
        job=IngestJob(source=source, target=target, voxel_offset=Vec3.of(voxel_offset)),
        resources=params.resources,
        layer_infos={url: target.info},
        outputs=(Output(url),),
    )
    return [plan]


STAGE = Stage(
    name="ingest",
    order=10,
    params=IngestParams,
    planner=plan_ingest,
    positionals=(
        Positional(
            field="input",
            metavar="SRC",
            help="image stack: slice folder, .tif, .npy or file.h5:dataset; or a Zarr/N5/"
            "OME-Zarr volume (folder or URL)",
        ),
        Positional(field="output", metavar="DST_URL", help="layer URL to write"),
    ),
)
