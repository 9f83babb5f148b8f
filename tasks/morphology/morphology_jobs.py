"""The `morphology` stage's tasks: per chunk, each segment's parts (voxel statistics, surface
cells, texture pairs) scattered by segment shard; per shard, the parts merged into the segments'
rows of the table, with their skeletons' features and their synapses joined.

Work folder: ``{shard}/{chunk id}.npz``, a chunk's parts of the segments in that shard (one
object per chunk and shard, written by one task). Output: ``segment_shard={k}/part.parquet``
under the table's folder, the rows of the segments in shard k (a Hive-partitioned Parquet
dataset: ``pyarrow.dataset`` or pandas read the folder as one table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.geometry import Box, Chunk, task_index
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays, put
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.morphology.surface_cells import block_box, cell_counts
from petavox.tasks.morphology.table import add_skeletons, add_synapses, shard_table
from petavox.tasks.morphology.texture import pair_sums
from petavox.tasks.morphology.voxel_stats import VoxelPart, chunk_part
from petavox.tasks.skeleton.skeleton_reads import read_skeletons
from petavox.tasks.synapse.outputs import segment_synapses
from petavox.tasks.synapse.table import columns_to_parquet

#: a chunk's part arrays: per-segment rows of three kinds, each kind's rows keyed by its ids
VOXEL_KEYS = ("voxel_ids", "count", "low", "high", "sums")
CELL_KEYS = ("cell_ids", "cases", "counts")
TEXTURE_KEYS = ("texture_ids", "pairs", "steps")


def table_key(shard: int) -> str:
    """The object of shard `shard`'s rows under the table's folder."""
    return f"segment_shard={shard}/part.parquet"


@dataclass(frozen=True, kw_only=True)
class MorphologyChunkJob:
    """One chunk's parts of every segment in it (its write box; the surface cells and texture
    pairs read one more voxel past its high faces), scattered by the segments' shards."""

    source: Layer  # the segmentation
    image: Layer | None  # integer intensities on the segmentation's voxels
    buckets: ShardBuckets
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box, volume = chunk.write_box, self.source.bounds(0)
        block = Box(*block_box(box.start, box.stop, volume.stop))
        seg = self.source.read(block, fill_missing=self.fill_missing)
        if self.image is not None:
            image = self.image.read(block, fill_missing=self.fill_missing)
        else:
            image = np.zeros(seg.shape, np.uint8)
        inner = tuple(slice(0, n) for n in box.shape)
        voxels = chunk_part(seg[inner], image[inner], box.start)
        kinds = (
            (VOXEL_KEYS, (voxels.ids, voxels.count, voxels.low, voxels.high, voxels.sums)),
            (CELL_KEYS, cell_counts(seg, box.start, box.stop, volume.start, volume.stop)),
            (TEXTURE_KEYS, pair_sums(seg, image, box.shape)),
        )
        shares: dict[int, dict[str, np.ndarray]] = {}
        for keys, arrays in kinds:
            for shard, rows in self.buckets.split(arrays[0]):
                share = shares.setdefault(shard, {"origin": np.asarray(box.start, np.int64)})
                share.update({k: a[rows] for k, a in zip(keys, arrays)})
        for shard, share in shares.items():
            for keys, arrays in kinds:  # every kind's arrays in every share, if empty
                for k, a in zip(keys, arrays):
                    share.setdefault(k, a[:0])
            self.buckets.scatter_arrays(shard, chunk.id, share)
        return {"segments": len(voxels.ids)}


def voxel_part(share: dict[str, np.ndarray]) -> VoxelPart:
    origin = tuple(int(v) for v in share["origin"])
    return VoxelPart(origin, *(share[k] for k in VOXEL_KEYS))


@dataclass(frozen=True, kw_only=True)
class MorphologyShardJob:
    """Task k of `buckets.grid()`: the rows of the segments in shard k, written as one Parquet
    object; it reads only bucket k, and the skeletons and synapse statistics of its ids."""

    buckets: ShardBuckets
    table_url: str
    resolution: tuple[float, float, float]
    has_image: bool
    skeletons: Layer | None = None  # the segmentation layer, when it has skeletons
    connectome_url: str | None = None  # the connectome's folder (stats/, annotations/info)

    def run(self, chunk: Chunk) -> dict:
        shard, work, context = task_index(chunk), self.buckets.work_url, self.buckets.context
        shares = [get_arrays(work, key, context) for key in self.buckets.keys(shard)]
        table = shard_table(
            [voxel_part(s) for s in shares],
            [tuple(s[k] for k in CELL_KEYS) for s in shares],
            [tuple(s[k] for k in TEXTURE_KEYS) for s in shares],
            self.resolution,
            self.has_image,
        )
        ids = table["segment_id"]
        skeletons = read_skeletons(self.skeletons, ids) if self.skeletons is not None else {}
        add_skeletons(table, skeletons)
        if self.connectome_url is not None:
            add_synapses(table, segment_synapses(self.connectome_url, ids, context))
        else:
            add_synapses(table, None)
        put(self.table_url, table_key(shard), columns_to_parquet(table), context)
        return {"segments": len(ids), "skeletons": len(skeletons)}
