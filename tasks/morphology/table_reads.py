"""Reading a morphology table back: one partition, or the rows of some ids from only the
partitions that hold them (ids go to partitions as the stage's sharding spec puts them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

from petavox.tasks.core.objects import get
from petavox.tasks.core.shards import sharding_spec, shards_of
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.morphology.morphology_jobs import table_key
from petavox.tasks.synapse.table import columns_from_parquet

Table = dict[str, np.ndarray]


def table_sharding(shard_bits: int) -> dict:
    """The sharding spec whose shard numbers name a table's partitions (hashed ids)."""
    return sharding_spec(shard_bits, 0, "gzip")


def read_partition(table_url: str, shard: int, context: StorageContext) -> Table:
    data = get(table_url, table_key(shard), context)
    if data is None:
        raise FileNotFoundError(f"{table_url}/{table_key(shard)} is missing; rerun morphology")
    return columns_from_parquet(data)


def rows_of(table_url: str, shard_bits: int, ids: np.ndarray, context: StorageContext) -> Table:
    """The rows of `ids` (sorted, distinct) that the table has, by id ascending."""
    spec = ShardingSpecification.from_dict(table_sharding(shard_bits))
    ids = np.asarray(ids, np.uint64)
    parts = []
    for shard in np.unique(shards_of(ids, spec)).tolist():
        part = read_partition(table_url, shard, context)
        keep = np.isin(part["segment_id"], ids)
        parts.append({name: column[keep] for name, column in part.items()})
    if not parts:
        return {}
    rows = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.argsort(rows["segment_id"], kind="stable")
    return {name: column[order] for name, column in rows.items()}


def read_dataset(folder: Path) -> Table:
    """A whole partitioned table in a local folder (morphology's, classify's), one row per
    segment by id ascending, the partition column included: for volumes that fit in memory
    (tests, benchmarks, training)."""
    import pyarrow.dataset as ds

    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    columns = {n: np.asarray(table.column(n).to_numpy()) for n in table.column_names}
    order = np.argsort(columns["segment_id"], kind="stable")
    return {n: c[order] for n, c in columns.items()}
