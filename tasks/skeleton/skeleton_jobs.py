"""The `skeletonize` stage's tasks: pieces per chunk, then one skeleton per segment per bucket.

Segment ids are split into buckets by their shard number under the stage's sharding spec
(hashed ids, so buckets are even). A chunk task writes one object per bucket it has pieces for,
``{bucket}/{chunk id}.npz`` in the stage's work folder; merge task k lists folder ``k/`` and so
holds only its own bucket's pieces. It writes each segment's skeleton into the layer's skeleton
folder: one file per id (unsharded), or the one shard file of its bucket (sharded).
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    synthesize_shard_files,
)

from petavox.tasks.core.geometry import Box, Chunk
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays, list_keys, put, put_arrays
from petavox.tasks.core.shards import shard_of
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.skeleton.skeletons import (
    Cleanup,
    Teasar,
    chunk_skeletons,
    merge_pieces,
    pack,
    unpack,
)


@dataclass(frozen=True)
class SkeletonizeChunkJob:
    """Skeletonize one chunk (read with one more voxel on its high faces); pieces by bucket."""

    source: Layer
    work_url: str
    params: Teasar
    sharding: dict  # the spec that assigns ids to buckets (JSON form)
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        read = Box(box.start, box.stop + 1).intersection(self.source.bounds(0))
        labels = self.source.read(read, fill_missing=self.fill_missing)
        skeletons = chunk_skeletons(
            labels, tuple(read.start), self.source.resolution(0), self.params
        )
        spec = ShardingSpecification.from_dict(self.sharding)
        buckets: dict[int, dict] = {}
        for label, skel in skeletons.items():
            buckets.setdefault(shard_of(label, spec), {})[label] = skel
        for bucket, group in buckets.items():
            put_arrays(self.work_url, f"{bucket}/{chunk.id}.npz", pack(group), self.source.context)
        return {"pieces": len(skeletons)}


@dataclass(frozen=True)
class SkeletonMergeJob:
    """Chunk k of an `index_grid` merges bucket k's pieces and writes its skeletons."""

    work_url: str
    skeleton_url: str
    sharding: dict
    sharded: bool
    cleanup: Cleanup
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        bucket = chunk.write_box.start[0]
        pieces: dict[int, list] = {}
        for key in sorted(list_keys(self.work_url, f"{bucket}/", self.context)):
            for label, skel in unpack(get_arrays(self.work_url, key, self.context)):
                pieces.setdefault(label, []).append(skel)
        encoded = {
            label: merge_pieces(label, parts, self.cleanup).to_precomputed()
            for label, parts in pieces.items()
        }
        if self.sharded and encoded:
            spec = ShardingSpecification.from_dict(self.sharding)
            for name, data in synthesize_shard_files(spec, encoded).items():
                put(self.skeleton_url, name, data, self.context)
        elif not self.sharded:
            for label, data in encoded.items():
                put(self.skeleton_url, str(label), data, self.context)
        return {"skeletons": len(encoded)}
