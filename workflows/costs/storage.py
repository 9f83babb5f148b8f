"""How many bytes a volume layer's voxels take when stored, and which requests reach them.

petavox writes file:// chunks uncompressed (and file:// shards with raw chunks); on object
stores cloud-volume gzips raw chunks, and shards gzip their chunks (`data_encoding`). So a raw
layer on file:// stores exactly its voxel bytes; everything else is an estimate from the ratios
below (stored bytes / voxel bytes), each with where it comes from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import local_path

#: gzip of EM images: "real EM keeps 85 % of its size" (README.md "Sharded layers" findings,
#: benchmarks/bench_sharding.py on FIB-SEM, 2026-12-05); boundary maps are taken to compress
#: alike (not measured)
GZIP_IMAGE = 0.85
#: gzip of raw label chunks (uint8-uint64 segmentations stored raw): assumed, not measured
GZIP_LABELS = 0.10
#: compressed_segmentation of uint64 labels: 1,112,064 stored bytes for 33,554,432 voxel bytes
#: on the demo's segmentation (`petavox demo`, 256×256×64, file://, 2026-12-05); synthetic
#: neurites, so real EM segmentations (more, smaller segments per block) will take more
COMPRESSED_SEGMENTATION = 0.033
#: jpeg of uint8 EM at quality 90: assumed, not measured
JPEG = 0.20
#: a shard file's indexes add this share (16 bytes per minishard, 24 per chunk): neglected
RATIO_NOTE = "stored/voxel bytes: raw on file:// exact; other encodings and gzip estimated"


def stored_ratio(layer: Layer, mip: int = 0) -> float:
    """Stored bytes per voxel byte of the layer's scale `mip`."""
    scale = layer.scale(mip)
    encoding = scale["encoding"]
    if encoding == "compressed_segmentation":
        return COMPRESSED_SEGMENTATION
    if encoding in ("jpeg", "png"):
        return JPEG
    local = local_path(layer.url) is not None
    gzipped = scale.get("sharding", {}).get("data_encoding", "raw") == "gzip" or (
        "sharding" not in scale and not local
    )
    if not gzipped:
        return 1.0
    return GZIP_LABELS if layer.layer_type == "segmentation" else GZIP_IMAGE


def voxel_bytes(layer: Layer) -> int:
    """Bytes of one voxel, all channels."""
    return np.dtype(layer.dtype).itemsize * layer.num_channels


@dataclass(frozen=True, kw_only=True)
class Traffic:
    """Objects, requests and bytes of one volume layer a step reads (`what` "read") or writes
    (`what` "write": the objects of scale `key`, exact)."""

    url: str
    what: str
    objects: int = 0  # written
    gets: int = 0
    puts: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    key: str = ""

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v or k in ("url", "what")}
