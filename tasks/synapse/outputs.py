"""Readers of what the `synapses` and `connectome` stages wrote, for the demo, the command line
and scientists: the chunk tables in one table, and the connectome's totals and strongest edges."""

from __future__ import annotations

import json

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.objects import get, list_keys
from petavox.tasks.core.shards import shards_of
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.connectome import take
from petavox.tasks.synapse.table import columns_from_parquet


def read_chunk_tables(output_url: str, context: StorageContext) -> synapse_table.Table:
    """Every chunk's table in one, by synapse id (for a volume whose synapses fit in memory)."""
    table = synapse_table.read_tables(output_url, "chunks/", context)
    order = np.argsort(table["synapse_id"], kind="stable")
    return {name: column[order] for name, column in table.items()}


def summarize(output_url: str, top: int = 10, context: StorageContext = StorageContext()) -> dict:
    """Totals from the shards' summaries and the `top` strongest connections (by synapses, then
    total size), reading one edge file at a time."""
    totals = {"synapses": 0, "connections": 0, "edges": 0, "segments": 0}
    keys = sorted(list_keys(output_url, "summary/", context))
    if not keys:
        raise InputError(
            f"{output_url} has no connectome (summary/ is empty); run "
            "petavox connectome on the synapses output first"
        )
    for key in keys:
        for name, value in json.loads(get(output_url, key, context) or b"{}").items():
            totals[name] += value
    best: dict[str, np.ndarray] = {}
    for key in sorted(list_keys(output_url, "edges/", context)):
        edges = columns_from_parquet(get(output_url, key, context) or b"")
        merged = {n: np.concatenate([best[n], edges[n]]) if best else edges[n] for n in edges}
        order = np.lexsort(
            (merged["post_id"], merged["pre_id"], -merged["total_size"], -merged["synapses"])
        )[:top]
        best = take(merged, order)
    strongest = [
        (int(a), int(b), int(n), int(s))
        for a, b, n, s in zip(
            *(best.get(c, []) for c in ("pre_id", "post_id", "synapses", "total_size"))
        )
    ]
    return {**totals, "strongest": strongest}


def segment_synapses(
    output_url: str, ids: np.ndarray, context: StorageContext
) -> tuple[np.ndarray, np.ndarray]:
    """Synapses in and out of each of `ids` (sorted, distinct) from the connectome's statistics,
    reading only the shards that hold them (0 for a segment without synapses)."""
    from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

    info = get(output_url, "annotations/info", context)
    if info is None:
        raise InputError(
            f"{output_url} has no connectome (annotations/info is missing); run petavox "
            "connectome on the synapses output first, or leave the connectome out"
        )
    spec = ShardingSpecification.from_dict(json.loads(info)["by_id"]["sharding"])
    ids = np.asarray(ids, np.uint64)
    synapses_in, synapses_out = np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64)
    for shard in np.unique(shards_of(ids, spec)).tolist():
        data = get(output_url, f"stats/{shard}.parquet", context)
        if data is None:
            raise FileNotFoundError(
                f"{output_url}/stats/{shard}.parquet is missing; rerun connectome"
            )
        stats = columns_from_parquet(data)
        where = np.searchsorted(ids, stats["segment_id"])
        mine = where < len(ids)
        mine[mine] = ids[where[mine]] == stats["segment_id"][mine]
        synapses_in[where[mine]] = stats["synapses_in"][mine]
        synapses_out[where[mine]] = stats["synapses_out"][mine]
    return synapses_in, synapses_out
