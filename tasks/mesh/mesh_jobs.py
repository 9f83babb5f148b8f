"""The `mesh` stage's tasks: meshes per chunk, then per segment (legacy or sharded format).

Legacy: Neuroglancer's legacy precomputed meshes are files in the segmentation layer's mesh
folder: ``{id}:0:{box}`` fragments (one per chunk the segment touches) and a ``{id}:0`` manifest
listing them. Manifest tasks each own a range of ids by decimal prefix and find their
fragments by a prefix listing, so no machine ever gathers more than its own ids' names.

Sharded (``neuroglancer_multilod_draco``): a chunk task writes its meshes grouped by the shard
each id hashes to, one intermediate file per (shard, chunk); one merge task per shard reads
only its shard's files, welds each segment's pieces and writes the shard file (see
`petavox.tasks.mesh.multires`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zmesh

from petavox.tasks.core.geometry import Box, Chunk, task_index
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays, list_keys, put, put_json
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.mesh.multires import Octree, multires_mesh, shard_file, weld
from petavox.tasks.mesh.surfaces import (
    Simplification,
    chunk_meshes,
    close_at_volume_faces,
    voxel_meshes,
)

LEGACY_INFO = {"@type": "neuroglancer_legacy_mesh"}


def fragment_name(label: int, box: Box) -> str:
    """igneous's naming: ``{id}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`` (the chunk's voxel box)."""
    ranges = "_".join(f"{a}-{b}" for a, b in zip(box.start, box.stop))
    return f"{label}:0:{ranges}"


def id_prefixes(digits: int) -> list[str]:
    """Prefixes that split all ids into disjoint groups: ids shorter than `digits` whole (with
    the ``:`` after them), longer ones by their first `digits` digits."""
    short = [f"{n}:" for n in range(1, 10 ** (digits - 1))]
    return short + [str(n) for n in range(10 ** (digits - 1), 10**digits)]


@dataclass(frozen=True, kw_only=True)
class MeshForgeJob:
    """Mesh one chunk (read with one more voxel on its high faces, closed on the volume's
    faces) and write its fragments."""

    source: Layer
    mesh_url: str
    params: Simplification
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        labels, start = read_closed(self.source, chunk.write_box, self.fill_missing)
        meshes = chunk_meshes(labels, start, self.source.resolution(0), self.params)
        context = self.source.context
        for label, mesh in meshes.items():
            put(
                self.mesh_url, fragment_name(label, chunk.write_box), mesh.to_precomputed(), context
            )
        return {"fragments": len(meshes)}


def read_closed(
    source: Layer, box: Box, fill_missing: bool
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The labels a chunk meshes: `box` and one more voxel on its high faces, padded with
    background on the volume's faces; and the volume voxel where they start."""
    volume = source.bounds(0)
    read = Box(box.start, box.stop + 1).intersection(volume)
    return close_at_volume_faces(source.read(read, fill_missing=fill_missing), read, volume)


def pack(meshes: list[tuple[int, zmesh.Mesh]]) -> dict[str, np.ndarray]:
    """Meshes as flat arrays (for `put_arrays`): ids, vertex and face starts, vertices, faces."""
    return {
        "ids": np.array([label for label, _ in meshes], np.uint64),
        "vertex_starts": np.cumsum([0] + [len(m.vertices) for _, m in meshes]),
        "face_starts": np.cumsum([0] + [len(m.faces) for _, m in meshes]),
        "vertices": np.concatenate([m.vertices for _, m in meshes]).astype(np.float32),
        "faces": np.concatenate([m.faces for _, m in meshes]).astype(np.uint32),
    }


def unpack(arrays: dict[str, np.ndarray]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(id, vertices, faces) of each mesh `pack` stored."""
    v, f = arrays["vertex_starts"], arrays["face_starts"]
    return [
        (int(label), arrays["vertices"][v[i] : v[i + 1]], arrays["faces"][f[i] : f[i + 1]])
        for i, label in enumerate(arrays["ids"])
    ]


@dataclass(frozen=True, kw_only=True)
class ShardedForgeJob:
    """Mesh one chunk as `MeshForgeJob` does (in voxels) and scatter its meshes by shard:
    ``<work>/<shard>/<chunk id>``, one file per shard the chunk's ids fall in."""

    source: Layer
    buckets: ShardBuckets
    params: Simplification
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        labels, start = read_closed(self.source, chunk.write_box, self.fill_missing)
        meshes = voxel_meshes(labels, start, self.source.resolution(0), self.params)
        kept = [(label, mesh) for label, mesh in sorted(meshes.items()) if len(mesh.faces)]
        ids = np.array([label for label, _ in kept], np.uint64)
        shards = 0
        for shard, where in self.buckets.split(ids):
            self.buckets.scatter_arrays(shard, chunk.id, pack([kept[i] for i in where]))
            shards += 1
        return {"segments": len(meshes), "shards": shards}


@dataclass(frozen=True, kw_only=True)
class ShardMergeJob:
    """Chunk k of an `index_grid` writes shard k: each of its segments' chunk pieces welded into
    one mesh, its levels of detail and octree pieces, and the shard file.

    Memory is bounded by one shard's segments (their pieces, then their encoded meshes), never
    by the dataset: the task reads only its own shard's folder of intermediate files."""

    buckets: ShardBuckets
    mesh_url: str
    octree: Octree
    lods: int
    bits: int
    resolution: tuple[float, float, float]

    def run(self, chunk: Chunk) -> dict:
        work, context = self.buckets.work_url, self.buckets.context
        pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
        for key in self.buckets.keys(task_index(chunk)):
            for label, vertices, faces in unpack(get_arrays(work, key, context)):
                pieces.setdefault(label, []).append((vertices, faces))
        segments: dict[int, bytes] = {}
        manifest_sizes: dict[int, int] = {}
        for label in sorted(pieces):
            mesh = weld(pieces.pop(label))
            fragments, manifest = multires_mesh(
                mesh, self.octree, self.lods, self.bits, self.resolution
            )
            segments[label] = fragments + manifest
            manifest_sizes[label] = len(manifest)
        if segments:
            name, data = shard_file(self.buckets.sharding, segments, manifest_sizes)
            put(self.mesh_url, name, data, context)
        return {"segments": len(segments)}


@dataclass(frozen=True, kw_only=True)
class ManifestJob:
    """Chunk k of an `index_grid` writes the manifests of the ids that start with prefix k."""

    mesh_url: str
    prefixes: tuple[str, ...]
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        prefix = self.prefixes[task_index(chunk)]
        fragments: dict[str, list[str]] = {}
        for key in list_keys(self.mesh_url, prefix, self.context):
            parts = key.split(":")
            if len(parts) == 3:  # a fragment; ``{id}:0`` manifests have two parts
                fragments.setdefault(parts[0], []).append(key)
        for label, names in fragments.items():
            put_json(self.mesh_url, f"{label}:0", {"fragments": sorted(names)}, self.context)
        return {"segments": len(fragments)}
