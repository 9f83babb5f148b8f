"""The `connectome` stage's tasks: shuffle the per-chunk synapse tables by segment shard, write
each shard's outputs, then the annotation layer's spatial index by cell.

Work folder (intermediate), each object written by one task:

- ``volume/{shard}/{chunk id}.npz``: voxel counts of a segmentation chunk's ids in that shard;
- ``{pre,post,id}/{shard}/{reader}-{part}.parquet``: a reader task's rows whose pre id, post
  id or synapse id is in that shard (flushed every `flush_rows` rows: bounded memory);
- ``extent/{reader}.json``: rows read and the bounding box of their points (nm);
- ``cells/{task}/{shard}.npz``: a shard's annotations in the spatial cells that task owns;
- ``limits/{task}.json``: the most annotations in one cell, per spatial level.

Output folder: ``table/pre_shard={k}/part.parquet`` (the synapse table, rows of presynaptic
segments in shard k and the rows without one whose synapse id is in shard k, sorted by pre_id,
synapse_id), ``edges/{k}.parquet`` (pre_id, post_id,
synapses, total_size; pre in shard k), ``stats/{k}.parquet`` (segment_id, out_degree,
in_degree, synapses_out, synapses_in[, volume]; segments in shard k), ``summary/{k}.json``
and ``annotations/`` (the precomputed annotation layer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Chunk, task_index
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get, get_arrays, list_keys, put, put_arrays, put_json
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.core.shards import shard_files
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.connectome import (
    RECORD,
    SpatialGrid,
    Table,
    annotation_info,
    cell_owner,
    connected,
    edge_list,
    encode_multiple,
    mix64,
    pack_by_id,
    pack_related,
    records,
    segment_stats,
    sum_counts,
    take,
)
from petavox.tasks.synapse.table import columns_to_parquet

POINTS = ("pre_", "post_", "")  # the table's three points: pre_x.., post_x.., x..
TABLE_KINDS = ("pre", "post", "id")  # the shuffle's buckets: rows by pre id, post id, synapse id


def work_buckets(work_url: str, sharding: dict, context: StorageContext, kind: str) -> ShardBuckets:
    """The work folder's buckets by segment shard: ``volume`` (.npz voxel counts) or one of
    `TABLE_KINDS` (.parquet rows)."""
    return ShardBuckets(
        work_url=work_url,
        sharding=sharding,
        context=context,
        folder=f"{kind}/",
        suffix=".npz" if kind == "volume" else ".parquet",
    )


@dataclass(frozen=True, kw_only=True)
class VolumeCountJob:
    """Voxels per segment id in one chunk of the segmentation, scattered by shard."""

    source: Layer
    buckets: ShardBuckets  # `work_buckets(..., "volume")`
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        labels = self.source.read(chunk.write_box, fill_missing=self.fill_missing)
        ids, counts = np.unique(labels, return_counts=True)
        ids, counts = ids[ids != 0].astype(np.uint64), counts[ids != 0].astype(np.int64)
        for shard, mine in self.buckets.split(ids):
            arrays = {"ids": ids[mine], "counts": counts[mine]}
            self.buckets.scatter_arrays(shard, chunk.id, arrays)
        return {"segments": len(ids)}


@dataclass(frozen=True, kw_only=True)
class ShuffleJob:
    """Reader k of `readers` takes every `readers`-th chunk table (sorted by key) and writes
    its rows into buckets by shard of pre_id, post_id (nonzero only) and synapse_id.

    Rows without a presynaptic partner (pre_id 0) go to the pre bucket of their synapse id's
    shard: in the shard of id 0 they would be a fixed share of all synapses in one task."""

    synapses_url: str
    work_url: str
    sharding: dict
    readers: int
    context: StorageContext
    flush_rows: int = 1 << 18

    def run(self, chunk: Chunk) -> dict:
        reader = task_index(chunk)
        keys = sorted(
            k
            for k in list_keys(self.synapses_url, "chunks/", self.context)
            if k.endswith(".parquet")
        )
        buckets = {kind: self.buckets(kind) for kind in TABLE_KINDS}
        buffers: dict[tuple[str, int], list[Table]] = {}
        buffered = rows = parts = 0
        lower, upper = np.full(3, np.inf), np.full(3, -np.inf)
        for key in keys[reader :: self.readers]:
            table = synapse_table.from_parquet(get(self.synapses_url, key, self.context) or b"")
            rows += len(table["synapse_id"])
            for p in POINTS:
                xyz = np.stack([table[f"{p}x"], table[f"{p}y"], table[f"{p}z"]], axis=1)
                if len(xyz):
                    lower, upper = np.minimum(lower, xyz.min(0)), np.maximum(upper, xyz.max(0))
            posted = take(table, np.flatnonzero(table["post_id"] != 0))
            pre_key = np.where(table["pre_id"] != 0, table["pre_id"], table["synapse_id"])
            for kind, rows_of, key in (
                ("pre", table, pre_key),
                ("post", posted, posted["post_id"]),
                ("id", table, table["synapse_id"]),
            ):
                for shard, mine in buckets[kind].split(key):
                    buffers.setdefault((kind, shard), []).append(take(rows_of, mine))
                buffered += len(key)
            if buffered >= self.flush_rows:
                self._flush(buckets, buffers, reader, parts)
                buffers, buffered, parts = {}, 0, parts + 1
        self._flush(buckets, buffers, reader, parts)
        box = None if rows == 0 else [lower.tolist(), upper.tolist()]
        put_json(self.work_url, f"extent/{reader}.json", {"rows": rows, "box": box}, self.context)
        return {"synapses": rows}

    def buckets(self, kind: str) -> ShardBuckets:
        return work_buckets(self.work_url, self.sharding, self.context, kind)

    @staticmethod
    def _flush(
        buckets: dict[str, ShardBuckets],
        buffers: dict[tuple[str, int], list[Table]],
        reader: int,
        part: int,
    ) -> None:
        for (kind, shard), tables in buffers.items():
            data = synapse_table.to_parquet(synapse_table.concat(tables))
            buckets[kind].scatter(shard, f"{reader}-{part}", data)


def load_grid(work_url: str, readers: int, finest: float, context: StorageContext) -> SpatialGrid:
    """The spatial grid over the points the readers saw (whole nm; a 1 nm box if none)."""
    lower, upper = np.full(3, np.inf), np.full(3, -np.inf)
    for reader in range(readers):
        data = get(work_url, f"extent/{reader}.json", context)
        if data is None:
            raise FileNotFoundError(f"{work_url}/extent/{reader}.json is missing; rerun connectome")
        box = json.loads(data)["box"]
        if box is not None:
            lower, upper = np.minimum(lower, box[0]), np.maximum(upper, box[1])
    if not np.isfinite(lower).all():
        lower, upper = np.zeros(3), np.zeros(3)
    lo = np.floor(lower)
    return SpatialGrid(
        lower=tuple(lo.tolist()), upper=tuple((np.floor(upper) + 1).tolist()), finest=finest
    )


def check_found(synapses_url: str, context: StorageContext) -> None:
    """After the shuffle: an InputError if there was no chunk table at all."""
    if not any(k.endswith(".parquet") for k in list_keys(synapses_url, "chunks/", context)):
        raise InputError(
            f"{synapses_url}/chunks/ has no synapse tables (*.parquet); run "
            "petavox synapses first, or point connectome at its output"
        )


@dataclass(frozen=True, kw_only=True)
class ShardJob:
    """Shard k: the table partition, edges, statistics, summary and the annotation layer's
    by-id and relationship shards of its segments; its annotations bucketed by spatial cell."""

    work_url: str
    output_url: str
    sharding: dict
    readers: int
    spatial_tasks: int
    finest: float
    volumes: bool
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        shard, ctx = task_index(chunk), self.context
        pre = self.read_bucket("pre", shard)
        pre = take(pre, np.lexsort((pre["synapse_id"], pre["pre_id"])))
        table = synapse_table.to_parquet(pre)
        put(self.output_url, f"table/pre_shard={shard}/part.parquet", table, ctx)
        out_edges = edge_list(pre)
        put(self.output_url, f"edges/{shard}.parquet", columns_to_parquet(out_edges), ctx)
        post = self.read_bucket("post", shard)
        volumes = self.read_volumes(shard) if self.volumes else None
        stats = segment_stats(out_edges, edge_list(post), volumes)
        put(self.output_url, f"stats/{shard}.parquet", columns_to_parquet(stats), ctx)
        summary = {
            "synapses": len(pre["synapse_id"]),
            "connections": int(connected(pre).sum()),
            "edges": len(out_edges["pre_id"]),
            "segments": len(stats["segment_id"]),
        }
        put_json(self.output_url, f"summary/{shard}.json", summary, ctx)
        rows = self.read_bucket("id", shard)
        self.write_indexes(rows, pre, post)
        self._bucket_cells(rows, shard)
        return summary

    def read_bucket(self, kind: str, shard: int) -> Table:
        """The rows the shuffle put in bucket `shard` of `kind`, in one table."""
        buckets = work_buckets(self.work_url, self.sharding, self.context, kind)
        return synapse_table.read_tables(self.work_url, buckets.prefix(shard), self.context)

    def read_volumes(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """Voxels per segment of this shard, summed over the segmentation's chunks."""
        buckets = work_buckets(self.work_url, self.sharding, self.context, "volume")
        parts = [get_arrays(self.work_url, k, self.context) for k in buckets.keys(shard)]
        ids = [np.zeros(0, np.uint64)] + [p["ids"] for p in parts]
        counts = [np.zeros(0, np.int64)] + [p["counts"] for p in parts]
        return sum_counts(np.concatenate(ids), np.concatenate(counts))

    def write_indexes(self, rows: Table, pre: Table, post: Table) -> None:
        """This shard's part of the annotation layer's by-id and relationship indexes."""
        spec = ShardingSpecification.from_dict(self.sharding)
        annotations = join_url(self.output_url, "annotations")
        indexes = (("by_id", rows, ""), ("rel_pre", pre, "pre"), ("rel_post", post, "post"))
        for folder, table, relationship in indexes:
            packed = pack_related(table, relationship) if relationship else pack_by_id(table)
            files = shard_files(spec, packed.keys, packed.data, packed.offsets)
            del packed
            for name, data in files.items():
                put(annotations, f"{folder}/{name}", data, self.context)
            del files

    def _bucket_cells(self, ids: Table, shard: int) -> None:
        grid = load_grid(self.work_url, self.readers, self.finest, self.context)
        rows, levels, cells = grid.cells(ids)
        owners = cell_owner(levels, cells, self.spatial_tasks)
        recs = records(ids).view(np.uint8).reshape(-1, RECORD.itemsize)
        for task in np.unique(owners):
            mine = np.flatnonzero(owners == task)
            put_arrays(
                self.work_url,
                f"cells/{task}/{shard}.npz",
                {
                    "ids": ids["synapse_id"][rows[mine]],
                    "records": recs[rows[mine]],
                    "levels": levels[mine],
                    "cells": cells[mine],
                },
                self.context,
            )


@dataclass(frozen=True, kw_only=True)
class SpatialJob:
    """Task t writes the spatial-index cells it owns, each list in pseudo-random order (by a
    hash of the annotation id), and the most annotations in one of its cells per level."""

    work_url: str
    annotations_url: str
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        task = task_index(chunk)
        keys = sorted(list_keys(self.work_url, f"cells/{task}/", self.context))
        parts = [get_arrays(self.work_url, k, self.context) for k in keys]
        limits: dict[int, int] = {}
        written = 0
        if parts:
            ids = np.concatenate([p["ids"] for p in parts])
            recs = np.concatenate([p["records"] for p in parts])
            levels = np.concatenate([p["levels"] for p in parts])
            cells = np.concatenate([p["cells"] for p in parts])
            order = np.lexsort((ids, mix64(ids), cells[:, 2], cells[:, 1], cells[:, 0], levels))
            ids, recs, levels, cells = ids[order], recs[order], levels[order], cells[order]
            key = np.column_stack([levels, cells])
            starts = np.flatnonzero(np.r_[True, (key[1:] != key[:-1]).any(axis=1)])
            for a, b in zip(starts, [*starts[1:], len(ids)]):
                level, (x, y, z) = int(levels[a]), cells[a]
                put(
                    self.annotations_url,
                    f"spatial{level}/{x}_{y}_{z}",
                    encode_multiple(recs[a:b].view(RECORD).reshape(-1), ids[a:b]),
                    self.context,
                )
                limits[level] = max(limits.get(level, 0), int(b - a))
            written = len(starts)
        put_json(self.work_url, f"limits/{task}.json", limits, self.context)
        return {"cells": written}


def write_annotation_info(
    work_url: str,
    annotations_url: str,
    grid: SpatialGrid,
    sharding: dict,
    tasks: int,
    context: StorageContext,
) -> None:
    """The annotation layer's info, with each level's limit from the spatial tasks' counts."""
    limits: dict[int, int] = {}
    for task in range(tasks):
        data = get(work_url, f"limits/{task}.json", context)
        if data is None:
            raise FileNotFoundError(f"{work_url}/limits/{task}.json is missing; rerun connectome")
        for level, count in json.loads(data).items():
            limits[int(level)] = max(limits.get(int(level), 0), count)
    put_json(annotations_url, "info", annotation_info(grid, sharding, limits), context)
