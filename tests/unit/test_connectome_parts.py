"""Connectome pieces against plain references: the annotation encodings decoded per
Neuroglancer's spec, shard partitioning, edges and statistics, the spatial-index levels."""

from __future__ import annotations

import numpy as np
import pytest
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification
from synapse_data import (
    decode_multiple,
    decode_single,
    random_synapses,
    reference_edges,
    reference_stats,
)

from petavox.tasks.core.geometry import index_grid
from petavox.tasks.core.shards import shard_of, sharding_spec, shards_of
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.connectome import (
    SpatialGrid,
    cell_owner,
    edge_list,
    encode_multiple,
    pack_by_id,
    pack_related,
    records,
    segment_stats,
    take,
)
from petavox.tasks.synapse.connectome_jobs import ShuffleJob


def test_single_and_multiple_encodings_decode_to_the_table():
    table = random_synapses(200, seed=1)
    encoded = pack_by_id(table).as_dict()
    assert sorted(encoded) == sorted(int(i) for i in table["synapse_id"])
    for i in range(200):
        geometry, size, confidence, (pre, post) = decode_single(
            encoded[int(table["synapse_id"][i])]
        )
        want = [table[f"{p}_{a}"][i] for p in ("pre", "post") for a in "xyz"]
        np.testing.assert_allclose(geometry, want, rtol=1e-6)
        assert size == table["size"][i]
        assert confidence == pytest.approx(table["confidence"][i], rel=1e-6)
        assert pre == ([int(table["pre_id"][i])] if table["pre_id"][i] else [])
        assert post == ([int(table["post_id"][i])] if table["post_id"][i] else [])
    recs, ids = decode_multiple(encode_multiple(records(table)[:7], table["synapse_id"][:7]))
    np.testing.assert_array_equal(ids, table["synapse_id"][:7])
    np.testing.assert_allclose(recs[:, 3], table["post_x"][:7], rtol=1e-6)
    assert recs[:, 6].view("<u4").tolist() == table["size"][:7].tolist()


def test_related_index_lists_each_segments_annotations():
    table = random_synapses(300, seed=2)
    for relationship in ("pre", "post"):
        index = pack_related(table, relationship).as_dict()
        column = table[f"{relationship}_id"]
        assert set(index) == {int(s) for s in column if s}
        for segment, data in index.items():
            _, ids = decode_multiple(data)
            assert sorted(ids.tolist()) == sorted(table["synapse_id"][column == segment].tolist())


def test_shards_partition_ids_as_the_sharding_spec_does():
    spec = ShardingSpecification.from_dict(sharding_spec(3, 2, "gzip"))
    ids = np.random.default_rng(3).integers(0, 2**64 - 1, 500, dtype=np.uint64)
    ids = np.concatenate([ids, ids[:50], np.zeros(3, np.uint64)])  # repeats and 0
    shards = shards_of(ids, spec)
    assert shards.tolist() == [shard_of(int(i), spec) for i in ids]
    assert set(shards.tolist()) == set(range(8))  # hashed: every shard gets some


def test_edges_and_stats_equal_a_plain_groupby():
    table = random_synapses(2000, seed=4, segments=25)
    edges = edge_list(table)
    got = {
        (int(a), int(b)): (int(n), int(s))
        for a, b, n, s in zip(
            edges["pre_id"], edges["post_id"], edges["synapses"], edges["total_size"]
        )
    }
    assert got == reference_edges(table)
    assert len(got) > 100 and 0 not in {k for pair in got for k in pair}
    keys = list(zip(edges["pre_id"], edges["post_id"]))
    assert keys == sorted(keys)
    stats = segment_stats(edges, edges)
    got_stats = {
        int(s): tuple(
            int(stats[c][i]) for c in ("out_degree", "in_degree", "synapses_out", "synapses_in")
        )
        for i, s in enumerate(stats["segment_id"])
    }
    assert got_stats == reference_stats(table)
    # a shard's view: only its segments' out edges and in edges
    mine = stats["segment_id"][::3]
    sub = segment_stats(
        take(edges, np.isin(edges["pre_id"], mine)),
        take(edges, np.isin(edges["post_id"], mine)),
        (np.sort(mine), np.arange(len(mine)) + 10),
    )
    assert set(sub["segment_id"].tolist()) == set(mine.tolist())
    assert sub["volume"].tolist() == (np.argsort(np.argsort(mine)) + 10).tolist()


def test_spatial_levels_cover_the_box_and_put_each_annotation_in_one_level():
    grid = SpatialGrid(lower=(0.0, 0.0, 0.0), upper=(20000.0, 20000.0, 8000.0), finest=3000)
    levels = grid.levels
    assert levels[0][0].tolist() == [1, 1, 1]
    for shape, size in levels:
        np.testing.assert_allclose(shape * size, [20000, 20000, 8000])
    assert max(levels[-1][1]) <= 3000 and max(levels[-2][1]) > 3000
    table = random_synapses(20000, seed=5)
    rows, level, cells = grid.cells(table)
    assert set(rows.tolist()) == set(range(20000))
    per_row_levels = {}
    for r, lv in zip(rows.tolist(), level.tolist()):
        assert per_row_levels.setdefault(r, lv) == lv  # one level per annotation
    # every endpoint lies in one of its row's cells
    sizes = np.stack([s for _, s in levels])[level]
    for p in ("pre", "post"):
        point = np.stack([table[f"{p}_{a}"][rows] for a in "xyz"], axis=1)
        inside = (np.floor(point / sizes) == cells).all(axis=1)
        assert set(rows[inside].tolist()) == set(range(20000))
    # levels hold about equal annotations per cell: shares follow the cell counts
    counts = np.bincount(list(per_row_levels.values()), minlength=len(levels))
    cell_counts = np.array([s.prod() for s, _ in levels])
    np.testing.assert_allclose(counts / 20000, cell_counts / cell_counts.sum(), atol=0.02)
    owners = cell_owner(level, cells, 4)
    assert set(owners.tolist()) == {0, 1, 2, 3}


def test_shuffle_spreads_rows_without_a_presynaptic_partner_by_synapse_id(tmp_path):
    """pre_id 0 is not a segment: those rows go to their synapse id's shard, not all to the
    shard of 0 (a fixed share of every synapse in one task)."""
    table = random_synapses(400, seed=5)
    table["pre_id"][:300] = 0
    synapses, work = tmp_path / "synapses", tmp_path / "work"
    (synapses / "chunks").mkdir(parents=True)
    (synapses / "chunks" / "0_0_0.parquet").write_bytes(synapse_table.to_parquet(table))
    sharding = sharding_spec(3, 2, "gzip")
    job = ShuffleJob(
        synapses_url=synapses.as_uri(),
        work_url=work.as_uri(),
        sharding=sharding,
        readers=1,
        context=StorageContext(),
    )
    job.run(next(iter(index_grid(1))))
    spec = ShardingSpecification.from_dict(sharding)
    want_shard = shards_of(
        np.where(table["pre_id"] != 0, table["pre_id"], table["synapse_id"]), spec
    )
    got = {}
    for path in sorted(work.glob("pre/*/*.parquet")):
        part = synapse_table.from_parquet(path.read_bytes())
        got.update(dict.fromkeys(part["synapse_id"].tolist(), int(path.parent.name)))
    assert got == dict(zip(table["synapse_id"].tolist(), want_shard.tolist()))
    assert len(set(want_shard[:300].tolist())) == 8
