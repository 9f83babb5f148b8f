"""The `skeletonize` stage's tasks: pieces per chunk, then one skeleton per segment per bucket.

Segment ids are split into buckets by their shard number under the stage's sharding spec
(hashed ids, so buckets are even). A chunk task writes one object per bucket it has pieces for,
``{bucket}/{chunk id}.npz`` in the stage's work folder; merge task k lists folder ``k/`` and so
holds only its own bucket's pieces. It writes each segment's skeleton into the layer's skeleton
folder: one file per id (unsharded), or the one shard file of its bucket (sharded).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    synthesize_shard_files,
)

from petavox.tasks.core.geometry import Box, Chunk, task_index
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays, put
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.skeleton.skeletons import (
    Cleanup,
    Teasar,
    chunk_skeletons,
    merge_pieces,
    pack,
    unpack,
)


@dataclass(frozen=True, kw_only=True)
class SkeletonizeChunkJob:
    """Skeletonize one chunk (read with one more voxel on its high faces); pieces by bucket."""

    source: Layer
    buckets: ShardBuckets  # ids to buckets by the stage's sharding spec
    params: Teasar
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        read = Box(box.start, box.stop + 1).intersection(self.source.bounds(0))
        labels = self.source.read(read, fill_missing=self.fill_missing)
        skeletons = chunk_skeletons(
            labels, tuple(read.start), self.source.resolution(0), self.params
        )
        items = list(skeletons.items())
        ids = np.array([label for label, _ in items], np.uint64)
        for bucket, where in self.buckets.split(ids):
            group = dict(items[i] for i in where)
            self.buckets.scatter_arrays(bucket, chunk.id, pack(group))
        return {"pieces": len(skeletons)}


@dataclass(frozen=True, kw_only=True)
class SkeletonMergeJob:
    """Chunk k of an `index_grid` merges bucket k's pieces and writes its skeletons."""

    buckets: ShardBuckets
    skeleton_url: str
    sharded: bool
    cleanup: Cleanup

    def run(self, chunk: Chunk) -> dict:
        work, context = self.buckets.work_url, self.buckets.context
        pieces: dict[int, list] = {}
        for key in self.buckets.keys(task_index(chunk)):
            for label, skel in unpack(get_arrays(work, key, context)):
                pieces.setdefault(label, []).append(skel)
        encoded = {
            label: merge_pieces(label, parts, self.cleanup).to_precomputed()
            for label, parts in pieces.items()
        }
        if self.sharded and encoded:
            spec = ShardingSpecification.from_dict(self.buckets.sharding)
            for name, data in synthesize_shard_files(spec, encoded).items():
                put(self.skeleton_url, name, data, context)
        elif not self.sharded:
            for label, data in encoded.items():
                put(self.skeleton_url, str(label), data, context)
        return {"skeletons": len(encoded)}
