"""Stage `ingest`: an image stack becomes a precomputed layer, one task per box."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import LayerSpec
from petavox.tasks.core.sources import open_source
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
    """Image stack (TIFF/PNG slices, multi-page TIFF, .npy, .h5) to a precomputed layer."""

    stage: Literal["ingest"] = "ingest"
    input: str = Field(
        description="slice folder, .tif stack, .npy or file.h5:dataset (local path or file://)"
    )
    output: str = Field("raw", description="layer name under the run output, or a full URL")
    axes: str = Field("zyx", description="axis order of the stored array (slice folders: zyx)")
    layer_type: Literal["image", "segmentation"] = Field("image", description="layer type")
    resolution: Resolution = Field(description="voxel size in nm, X,Y,Z")
    voxel_offset: Triple = Field((0, 0, 0), description="position of voxel 0 in the volume, X,Y,Z")
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


def plan_ingest(params: IngestParams, catalog: Catalog) -> list[StagePlan]:
    source = open_source(params.input, params.axes)
    # the source is an input like a layer: edited files give the stage a new lineage
    location = source.location.resolve()
    catalog.note_read(f"file://{location}", "files:" + fingerprint(location))
    dtype = np.dtype(params.dtype) if params.dtype else np.dtype(source.dtype)
    spec = LayerSpec(
        layer_type=params.layer_type,
        dtype=dtype.name,
        size=source.shape,
        resolution=params.resolution,
        chunk_size=Vec3.of(params.storage_chunk),
        voxel_offset=Vec3.of(params.voxel_offset),
        encoding=params.encoding or default_encoding(params.layer_type, dtype),  # type: ignore[arg-type]
        sharding=layer_sharding(params.sharding),
    )
    url = catalog.url(params.output)
    target = catalog.plan_layer(url, spec)
    chunk_shape = writing_task_shape(
        params.chunk_shape, target, source.shape, dtype.itemsize, name="ingest chunk_shape"
    )
    bounds = Box.from_shape(source.shape, params.voxel_offset)
    spec_hash = {
        **params.hashed_fields(),
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
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=params.voxel_offset),
        job=IngestJob(source=source, target=target, voxel_offset=Vec3.of(params.voxel_offset)),
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
            help="image stack: slice folder, .tif, .npy or file.h5:dataset",
        ),
        Positional(field="output", metavar="DST_URL", help="layer URL to write"),
    ),
)
