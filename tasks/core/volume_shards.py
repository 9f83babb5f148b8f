"""Sharded volume scales: which storage chunks a shard holds, whole shards encoded, and the
sharding spec petavox picks.

A sharded precomputed scale (``neuroglancer_uint64_sharded_v1``) keys each storage chunk by the
compressed Morton code of its grid position (x, y, z bits interleaved, each axis only while it
has bits left). With the identity hash, the low ``preshift_bits + minishard_bits`` bits of the
code are a chunk's place inside its shard and the next ``shard_bits`` its shard. When those
bits cover the whole code, every shard is the same aligned box of 2^a × 2^b × 2^c chunks
(clipped at the volume's far faces), as Neuroglancer and cloud-volume compute it
(`image_shard_shape_from_spec`). petavox writes such scales only, and each shard whole, from one
task: a shard file cannot be updated in part without rewriting it, and two tasks writing parts
of one shard would each drop the other's chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from petavox.tasks.core.errors import LayerMismatchError
from petavox.tasks.core.geometry import Box, Vec3

#: uncompressed bytes of one shard that `auto` aims for: one task holds a shard (or several)
#: of every scale it writes, so this bounds a writing task's memory from below
AUTO_SHARD_BYTES = 2**28
#: chunks listed per minishard index (one range read finds a chunk's place in its shard)
MINISHARD_CHUNKS = 64


def morton_bits(grid_size: Vec3) -> Vec3:
    """Bits of the compressed Morton code per axis for a grid of `grid_size` chunks."""
    return Vec3(*(math.ceil(math.log2(n)) if n > 1 else 0 for n in grid_size))


def morton_codes(positions: np.ndarray, grid_size: Vec3) -> np.ndarray:
    """Compressed Morton codes (uint64) of chunk grid positions (n × 3), as Neuroglancer keys
    a sharded scale's chunks (cloud-volume's `compressed_morton_code`)."""
    from cloudvolume.datasource.precomputed.common import compressed_morton_code

    positions = np.asarray(positions, np.int64).reshape(-1, 3)
    if len(positions) == 0:
        return np.zeros(0, np.uint64)
    return np.asarray(compressed_morton_code(positions, tuple(grid_size)), np.uint64)


def shard_shape(inner_bits: int, size: Vec3, chunk: Vec3) -> Vec3:
    """A shard's extent in voxels when the code has `inner_bits` bits below the shard number
    (they go to the axes in Morton order, each while it has bits left; cloud-volume's
    `image_shard_shape_from_spec`)."""
    from cloudvolume.datasource.precomputed.sharding import image_shard_shape_from_spec

    bits = {"preshift_bits": inner_bits, "minishard_bits": 0}
    return Vec3.of(int(v) for v in image_shard_shape_from_spec(bits, size, chunk))


def _bits(inner: int, total: int) -> dict[str, int]:
    """Preshift, minishard and shard bits of identity-hashed shards of 2^inner chunks, over a
    code of `total` bits: at most `MINISHARD_CHUNKS` chunks per minishard index."""
    minishard = max(0, inner - int(math.log2(MINISHARD_CHUNKS)))
    return {
        "preshift_bits": inner - minishard,
        "minishard_bits": minishard,
        "shard_bits": total - inner,
    }


@dataclass(frozen=True)
class VolumeSharding:
    """The sharding of one scale: its spec, storage chunk size and bounds."""

    spec: dict[str, Any]
    chunk: Vec3
    bounds: Box

    @classmethod
    def of_scale(cls, scale: dict[str, Any]) -> VolumeSharding:
        bounds = Box.from_shape(scale["size"], scale["voxel_offset"])
        return cls(scale["sharding"], Vec3.of(scale["chunk_sizes"][0]), bounds)

    @property
    def grid_size(self) -> Vec3:
        return self.bounds.shape.ceildiv(self.chunk)

    @property
    def inner_bits(self) -> int:
        return int(self.spec["preshift_bits"]) + int(self.spec["minishard_bits"])

    @cached_property
    def shape(self) -> Vec3:
        """A shard's extent in voxels (before clipping at the far faces)."""
        return shard_shape(self.inner_bits, self.bounds.shape, self.chunk)

    def problem(self) -> str | None:
        """Why petavox cannot write whole shards of this scale, or None."""
        spec = self.spec
        if spec.get("@type") != "neuroglancer_uint64_sharded_v1":
            return f"sharding type {spec.get('@type')!r} is not neuroglancer_uint64_sharded_v1"
        if spec.get("hash") != "identity":
            return f"its chunks are hashed ({spec.get('hash')}), so a shard is not a box"
        needed = sum(morton_bits(self.grid_size))
        if self.inner_bits + int(spec["shard_bits"]) < needed:
            return (
                f"preshift_bits + minishard_bits + shard_bits = "
                f"{self.inner_bits + int(spec['shard_bits'])} do not cover the {needed} bits of "
                "its chunk positions, so far-apart chunks share a shard"
            )
        return None

    def check_writable(self, where: str) -> None:
        problem = self.problem()
        if problem:
            raise LayerMismatchError(
                f"{where} is sharded in a way petavox cannot write: {problem}; write to a new "
                "layer (sharding auto or none)"
            )

    def is_whole(self, box: Box) -> bool:
        """True when `box` covers whole shards (clipped at the bounds) and nothing else."""
        return box.is_aligned(self.shape, self.bounds.start, self.bounds)

    def shard_boxes(self, box: Box) -> list[Box]:
        """The shards (clipped to the bounds) that `box` touches."""
        return box.cells(self.shape, self.bounds)

    def codes(self, chunk_starts: list[Vec3]) -> np.ndarray:
        """The Morton code (the key inside the sharded index) of each storage chunk."""
        origin = np.asarray(self.bounds.start)
        positions = (np.asarray(chunk_starts, np.int64) - origin) // np.asarray(self.chunk)
        return morton_codes(positions, self.grid_size)


def auto_sharding(
    size: Vec3,
    chunk: Vec3,
    bytes_per_voxel: int,
    encoding: str,
    target_bytes: int = AUTO_SHARD_BYTES,
    compress: bool = True,
) -> dict[str, Any]:
    """A spec whose shards hold about `target_bytes` of uncompressed voxels (a power of two of
    chunks, fewer when the whole scale is smaller), written as shard boxes (identity hash).
    Chunks are gzipped inside the shard if `compress`, unless their encoding compresses (jpeg,
    png)."""
    grid = size.ceildiv(chunk)
    total = sum(morton_bits(grid))
    per_chunk = chunk.prod() * bytes_per_voxel
    inner = min(total, max(0, int(math.log2(max(1, target_bytes // per_chunk)))))
    return {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "identity",
        **_bits(inner, total),
        "minishard_index_encoding": "gzip",
        "data_encoding": "gzip" if compress and encoding not in ("jpeg", "png") else "raw",
    }


def nested_sharding(
    scale: dict[str, Any],
    bytes_per_voxel: int,
    task: Vec3,
    data_encoding: str,
    target_bytes: int = AUTO_SHARD_BYTES,
) -> dict[str, Any]:
    """A spec for `scale` whose shards nest in tasks of `task` voxels (at that scale) on its
    grid: the largest shards up to `target_bytes` that a task covers whole along every axis (a
    shard of one chunk always does, `task` being a multiple of the chunk size)."""
    size, chunk = Vec3.of(scale["size"]), Vec3.of(scale["chunk_sizes"][0])
    spec = auto_sharding(size, chunk, bytes_per_voxel, scale["encoding"], target_bytes)
    spec["data_encoding"] = data_encoding
    total = sum(morton_bits(size.ceildiv(chunk)))
    for inner in range(spec["preshift_bits"] + spec["minishard_bits"], -1, -1):
        shape = shard_shape(inner, size, chunk)
        if all(t % s == 0 or t >= n for t, s, n in zip(task, shape, size)):
            return {**spec, **_bits(inner, total)}
    raise AssertionError("a one-chunk shard nests in any task")


#: a layer given no sharding is sharded (auto) above this many storage chunks
AUTO_SHARDING_CHUNKS = 2**17


def sharding_for(
    choice: str | dict,
    bounds: Box,
    chunk: Vec3,
    bytes_per_voxel: int,
    encoding: str,
    shard_bytes: int = AUTO_SHARD_BYTES,
    *,
    compress: bool = True,
) -> dict[str, Any] | None:
    """The spec a new scale gets (None: unsharded) for a layer's `choice`: "none"; "auto"
    (shards of about `shard_bytes` uncompressed); ``{"chunks_per_shard": 2^k}``; a whole spec
    (a dict with "@type", checked writable); or "default": "auto" above
    `AUTO_SHARDING_CHUNKS` storage chunks, else "none"."""
    if choice == "default":
        choice = "auto" if bounds.shape.ceildiv(chunk).prod() > AUTO_SHARDING_CHUNKS else "none"
    if choice == "none":
        return None
    size = bounds.shape
    if choice == "auto":
        return auto_sharding(size, chunk, bytes_per_voxel, encoding, shard_bytes, compress)
    if not isinstance(choice, dict):
        raise LayerMismatchError(f"sharding {choice!r} is none, auto, default or a dict")
    if "chunks_per_shard" in choice:
        count = int(choice["chunks_per_shard"])
        if count < 1 or count & (count - 1):
            raise LayerMismatchError(f"chunks_per_shard {count} is not a power of two")
        target = count * chunk.prod() * bytes_per_voxel
        return auto_sharding(size, chunk, bytes_per_voxel, encoding, target, compress)
    VolumeSharding(choice, chunk, bounds).check_writable("the layer")
    return dict(choice)
