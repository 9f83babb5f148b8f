"""Work split by segment shard: chunk tasks scatter their per-segment pieces into one bucket per
shard, then one task per shard gathers its bucket (mesh, skeletonize, connectome).

Ids go to shards by a Neuroglancer sharding spec with hashed ids, so the buckets are even
whatever the ids. Bucket k is the folder ``<work>/<folder>k/`` and holds one object per writer
(``<writer name><suffix>``); gather task k is task k of `grid()` (`task_index`) and lists
only its own folder, so no task ever holds more than its shard's pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

from petavox.tasks.core.geometry import ChunkGrid, index_grid
from petavox.tasks.core.objects import list_keys, put, put_arrays
from petavox.tasks.core.shards import shards_of
from petavox.tasks.core.storage import StorageContext


@dataclass(frozen=True, kw_only=True)
class ShardBuckets:
    work_url: str
    sharding: dict  # the spec's JSON form
    context: StorageContext
    folder: str = ""  # the buckets' parent folder under `work_url` ("" or ending in "/")
    suffix: str = ""  # of each object in a bucket, after the writer's name

    @property
    def count(self) -> int:
        return 2 ** self.sharding["shard_bits"]

    def grid(self) -> ChunkGrid:
        """One gather task per shard: task k gathers bucket k."""
        return index_grid(self.count)

    @cached_property
    def spec(self) -> ShardingSpecification:
        """The sharding spec, parsed once per process that splits ids."""
        return ShardingSpecification.from_dict(self.sharding)

    def split(self, ids: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """(shard, positions in `ids` of that shard's ids, ascending) for each shard present."""
        ids = np.asarray(ids, np.uint64)
        shards = shards_of(ids, self.spec)
        for shard in np.unique(shards):
            yield int(shard), np.flatnonzero(shards == shard)

    def prefix(self, shard: int) -> str:
        """The folder of bucket `shard`, relative to `work_url`."""
        return f"{self.folder}{shard}/"

    def key(self, shard: int, name: str) -> str:
        return f"{self.prefix(shard)}{name}{self.suffix}"

    def scatter(self, shard: int, name: str, data: bytes) -> None:
        """Write writer `name`'s share of bucket `shard`."""
        put(self.work_url, self.key(shard, name), data, self.context)

    def scatter_arrays(self, shard: int, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Write writer `name`'s share of bucket `shard` as named arrays (one .npz object)."""
        put_arrays(self.work_url, self.key(shard, name), arrays, self.context)

    def keys(self, shard: int) -> list[str]:
        """The keys in bucket `shard` (relative to `work_url`), sorted: what its gather task
        (`task_index` of its chunk) reads, and nothing else."""
        return sorted(list_keys(self.work_url, self.prefix(shard), self.context))
