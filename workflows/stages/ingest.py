"""Plan the `ingest` stage: an image stack becomes a precomputed layer, one task per box."""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import LayerSpec
from petavox.tasks.core.sources import open_source
from petavox.tasks.image.ingest_jobs import IngestJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import IngestParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.sizing import task_shape

VERSION = 1


def default_encoding(layer_type: str, dtype: np.dtype) -> str:
    if layer_type == "segmentation" and dtype.name in ("uint32", "uint64"):
        return "compressed_segmentation"
    return "raw"


def plan_ingest(params: IngestParams, catalog: Catalog) -> StagePlan:
    source = open_source(params.input, params.axes)
    dtype = np.dtype(params.dtype) if params.dtype else np.dtype(source.dtype)
    storage_chunk = Vec3.of(params.storage_chunk)
    chunk_shape = task_shape(
        params.chunk_shape,
        storage_chunk,
        source.shape,
        dtype.itemsize,
        name="ingest chunk_shape",
        step_name="storage_chunk",
    )
    spec = LayerSpec(
        layer_type=params.layer_type,
        dtype=dtype.name,
        size=source.shape,
        resolution=params.resolution,
        chunk_size=storage_chunk,
        voxel_offset=Vec3.of(params.voxel_offset),
        encoding=params.encoding or default_encoding(params.layer_type, dtype),  # type: ignore[arg-type]
    )
    url = catalog.url(params.output)
    target = catalog.plan_layer(url, spec)
    bounds = Box.from_shape(source.shape, params.voxel_offset)
    spec_hash = {
        **params.hashed_fields(),
        "output": url,
        "source_shape": list(source.shape),
        "source_dtype": np.dtype(source.dtype).name,
        "task_shape": list(chunk_shape),  # chunk ids are only comparable on the same grid
    }
    return StagePlan(
        label=f"ingest → {params.output}",
        stage="ingest",
        identity=identity("ingest", VERSION, spec_hash),
        spec=spec_hash,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=params.voxel_offset),
        job=IngestJob(source, target, Vec3.of(params.voxel_offset)),
        resources=params.resources,
        layer_infos={url: target.info},
    )
