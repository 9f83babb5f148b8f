"""OME-Zarr of a precomputed layer's pyramid: NGFF 0.4 on Zarr v2 (`ome-zarr`), NGFF 0.5 on
sharded Zarr v3 (`zarr3`). Arrays are z, y, x (c, z, y, x with channels); level k of the
multiscale is mip k.

The array metadata is tensorstore's (its zarr / zarr3 drivers create the arrays). The NGFF
group attributes are a small JSON document written here by hand: the `ome-zarr` package, which
writes them, is a test dependency only and needs a zarr/fsspec store where petavox has its own
storage clients; the tests read the result back with its reader, which checks it.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer

ZarrFormat = Literal["ome-zarr", "zarr3"]
NGFF_VERSION: dict[str, str] = {"ome-zarr": "0.4", "zarr3": "0.5"}
#: uncompressed bytes a `zarr3` shard grows to at most (a writing task holds one shard)
SHARD_BYTES = 2**26


def axes(num_channels: int) -> list[dict[str, str]]:
    space = [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"]
    return ([{"name": "c", "type": "channel"}] if num_channels > 1 else []) + space


def level_transforms(layer: Layer, mip: int) -> list[dict[str, Any]]:
    """Scale (nm per voxel) and translation of level `mip`, z, y, x (c: 1 and 0).

    NGFF puts a voxel's centre at ``index * scale + translation``. Level 0's translation is
    the voxel offset times the resolution; a coarser level's voxel centres sit at the centres
    of the level-0 voxels they summarise, hence the half-voxel term."""
    res, res0 = layer.resolution(mip), layer.resolution(0)
    offset = layer.bounds(mip).start
    scale = [float(res[a]) for a in (2, 1, 0)]
    shift = [float(offset[a] * res[a] + (res[a] - res0[a]) / 2) for a in (2, 1, 0)]
    if layer.num_channels > 1:
        scale, shift = [1.0, *scale], [0.0, *shift]
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


def ome_attributes(layer: Layer, fmt: ZarrFormat, name: str) -> dict[str, Any]:
    """The group attributes that make the store an NGFF multiscale image (a label image for a
    segmentation): ``.zattrs`` of 0.4, or the ``attributes`` of 0.5's zarr.json."""
    version = NGFF_VERSION[fmt]
    multiscale: dict[str, Any] = {
        "name": name,
        "axes": axes(layer.num_channels),
        "datasets": [
            {"path": str(mip), "coordinateTransformations": level_transforms(layer, mip)}
            for mip in range(layer.num_mips)
        ],
    }
    labels = layer.layer_type == "segmentation"
    if fmt == "ome-zarr":
        attrs: dict[str, Any] = {"multiscales": [{"version": version, **multiscale}]}
        if labels:
            attrs["image-label"] = {"version": version}
        return attrs
    ome: dict[str, Any] = {"version": version, "multiscales": [multiscale]}
    if labels:
        ome["image-label"] = {}
    return {"ome": ome}


def grow_shard(chunk: Vec3, extent: Vec3, bytes_per_voxel: int, chunks: int | None) -> Vec3:
    """A `zarr3` shard: `chunk` doubled along z, y, x in turn, to `chunks` chunks (a power of
    two) when given, else while it holds at most `SHARD_BYTES` uncompressed, each axis up to
    the level's `extent` rounded up to whole chunks (small levels are one shard)."""
    shape = list(chunk)
    if chunks is not None:  # a power of two: z, y, x doubled in turn
        for turn in range(max(0, chunks.bit_length() - 1)):
            shape[2 - turn % 3] *= 2
        return Vec3(*shape)
    whole = extent.ceildiv(chunk) * chunk  # an axis covered once, in whole chunks
    grew = True
    while grew:
        grew = False
        for axis in (2, 1, 0):
            wider = min(shape[axis] * 2, whole[axis])
            size = math.prod(shape) // shape[axis] * wider * bytes_per_voxel
            if wider > shape[axis] and size <= SHARD_BYTES:
                shape[axis] = wider
                grew = True
    return Vec3(*shape)


def zarr_order(shape: Vec3, num_channels: int) -> list[int]:
    """An x, y, z shape as the array's z, y, x (c, z, y, x) list."""
    spatial = [int(shape[2]), int(shape[1]), int(shape[0])]
    return [num_channels, *spatial] if num_channels > 1 else spatial


def array_metadata(
    layer: Layer, mip: int, fmt: ZarrFormat, chunk: Vec3, shard: Vec3 | None
) -> dict[str, Any]:
    """The tensorstore metadata of level `mip` (`shard` None: an unsharded `zarr3` array)."""
    channels, dtype = layer.num_channels, layer.dtype
    shape = zarr_order(layer.bounds(mip).shape, channels)
    if fmt == "ome-zarr":
        return {
            "zarr_format": 2,
            "shape": shape,
            "chunks": zarr_order(chunk, channels),
            "dtype": dtype.str,
            "compressor": {"id": "blosc", "cname": "zstd", "clevel": 5, "shuffle": 1},
            "fill_value": 0,
            "order": "C",
            "filters": None,
            "dimension_separator": "/",
        }
    inner = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "zstd"}]
    codecs: list[dict[str, Any]] = inner
    if shard is not None:
        index = [{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]
        sharding = {
            "chunk_shape": zarr_order(chunk, channels),
            "codecs": inner,
            "index_codecs": index,
        }
        codecs = [{"name": "sharding_indexed", "configuration": sharding}]
    grid = zarr_order(shard if shard is not None else chunk, channels)
    return {
        "zarr_format": 3,
        "node_type": "array",
        "shape": shape,
        "data_type": dtype.name,
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": grid}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": codecs,
        "dimension_names": [a["name"] for a in axes(channels)],
    }


def object_keys(fmt: ZarrFormat, mip: int, box: Box, unit: Vec3, channels: int) -> list[str]:
    """The keys of the objects (chunks, or shards of `zarr3`) of level `mip` that a write of
    `box` (array coordinates, x, y, z, aligned to `unit`) stores, as the two drivers name
    them: ``0/z/y/x`` (Zarr v2 with "/" separators), ``0/c/z/y/x`` (Zarr v3)."""
    first, last = box.start // unit, box.stop.ceildiv(unit)
    lead = f"{mip}/" if fmt == "ome-zarr" else f"{mip}/c/"
    lead += "0/" if channels > 1 else ""
    return [
        f"{lead}{z}/{y}/{x}"
        for z in range(first.z, last.z)
        for y in range(first.y, last.y)
        for x in range(first.x, last.x)
    ]


def to_zarr(data: np.ndarray) -> np.ndarray:
    """An x, y, z(, c) array as z, y, x (c, z, y, x)."""
    return data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)
