"""The webKnossos agglomerate file, read back byte by byte with h5py against the documented
layout (no webKnossos reader of HDF5 agglomerate files installs from pip: the `webknossos`
package reads agglomerate attachments as Zarr v3 only)."""

from __future__ import annotations

import tracemalloc

import h5py
import numpy as np
import pytest

from petavox.tasks.core.errors import InputError
from petavox.tasks.segment.webknossos_agglomerate import (
    ID_CHUNK,
    Agglomeration,
    write_agglomerate_file,
)

DATASETS = {  # name: (dtype, number of dimensions), for uint64 supervoxels
    "segment_to_agglomerate": (np.uint64, 1),
    "agglomerate_to_segments_offsets": (np.uint64, 1),
    "agglomerate_to_segments": (np.uint64, 1),
    "agglomerate_to_positions": (np.int32, 2),
    "agglomerate_to_edges_offsets": (np.uint64, 1),
    "agglomerate_to_edges": (np.uint64, 2),
    "agglomerate_to_affinities": (np.float32, 1),
}


def read(path) -> dict[str, np.ndarray]:
    """Every dataset but segment_to_agglomerate, whole."""
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in DATASETS if name != "segment_to_agglomerate"}


def test_the_documented_example_comes_out_exactly(tmp_path):
    """The worked example of webKnossos' agglomerate spec: segments 1-7, edges (1,2), (2,3),
    (3,4), (5,6), (1,7); agglomerates {1,2,3,4,7} and {5,6}."""
    pairs = [(1, 2), (2, 3), (3, 4), (5, 6), (1, 7)]
    affinity = {(1, 2): 124.0, (2, 3): 0.0, (3, 4): 250.5, (5, 6): 80.0, (1, 7): 65.5}
    svs = np.arange(1, 8, dtype=np.uint64)
    agg = Agglomeration(
        supervoxels=svs[::-1],  # any order
        segments=np.array([10, 10, 10, 10, 30, 30, 10])[::-1],  # any segment ids
        positions=np.stack([svs * 10, svs * 20, svs * 30], axis=1)[::-1],
        edges=np.array(pairs, np.uint64),
        affinities=np.array([affinity[p] for p in pairs]),
    )
    write_agglomerate_file(tmp_path / "a.hdf5", agg)
    got = read(tmp_path / "a.hdf5")
    with h5py.File(tmp_path / "a.hdf5", "r") as f:
        assert set(f) == set(DATASETS)
        np.testing.assert_array_equal(f["segment_to_agglomerate"][()], [0, 1, 1, 1, 1, 2, 2, 1])
    np.testing.assert_array_equal(got["agglomerate_to_segments_offsets"], [0, 0, 5, 7])
    np.testing.assert_array_equal(got["agglomerate_to_segments"], [1, 2, 3, 4, 7, 5, 6])
    np.testing.assert_array_equal(got["agglomerate_to_edges_offsets"], [0, 0, 4, 5])
    np.testing.assert_array_equal(
        got["agglomerate_to_edges"], [[0, 1], [0, 4], [1, 2], [2, 3], [0, 1]]
    )
    np.testing.assert_array_equal(
        got["agglomerate_to_affinities"], np.float32([124.0, 65.5, 0.0, 250.5, 80.0])
    )
    order = np.array([1, 2, 3, 4, 7, 5, 6])
    np.testing.assert_array_equal(
        got["agglomerate_to_positions"], np.stack([order * 10, order * 20, order * 30], axis=1)
    )


def sparse_agglomeration(seed: int, n: int = 400, top: int = 1 << 40) -> Agglomeration:
    """`n` supervoxels with large sparse ids in clusters (as chunk-numbered ids come), grouped
    into segments, with random touching pairs inside and across segments."""
    rng = np.random.default_rng(seed)
    bases = rng.choice(top // 4096, size=8, replace=False).astype(np.uint64) * np.uint64(4096)
    ids = np.unique(bases[rng.integers(0, 8, 3 * n)] + rng.integers(1, 3000, 3 * n).astype("u8"))
    svs = rng.permutation(ids)[:n]
    segments = rng.integers(0, n // 5, n).astype(np.uint64) * np.uint64(7919)
    pairs = np.unique(np.sort(rng.integers(0, n, (3 * n, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    return Agglomeration(
        supervoxels=svs,
        segments=segments,
        positions=rng.integers(0, 5000, (n, 3)),
        edges=svs[pairs],
        affinities=rng.random(len(pairs)),
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_a_sparse_agglomeration_reads_back_by_the_layout(tmp_path, seed):
    agg = sparse_agglomeration(seed)
    path = tmp_path / "a.hdf5"
    write_agglomerate_file(path, agg)
    got = read(path)
    with h5py.File(path, "r") as f:
        assert set(f) == set(DATASETS)
        for name, (dtype, ndim) in DATASETS.items():
            assert f[name].dtype == dtype and f[name].ndim == ndim, name
        s2a = f["segment_to_agglomerate"]
        assert s2a.shape == (int(agg.supervoxels.max()) + 1,)
        assert s2a.fillvalue == 0 and s2a.chunks == (ID_CHUNK,) and s2a.compression == "gzip"
        agglomerate_of = {int(s): int(s2a[int(s)]) for s in agg.supervoxels}
        assert s2a[0] == 0 and s2a[int(agg.supervoxels.min()) - 1] == 0
    n, k = len(agg.supervoxels), len(np.unique(agg.segments))
    offsets, segments = got["agglomerate_to_segments_offsets"], got["agglomerate_to_segments"]
    edge_offsets, edges = got["agglomerate_to_edges_offsets"], got["agglomerate_to_edges"]
    assert offsets.shape == edge_offsets.shape == (k + 2,)
    assert segments.shape == (n,) and got["agglomerate_to_positions"].shape == (n, 3)
    assert edges.shape == (len(got["agglomerate_to_affinities"]), 2)
    for o, total in ((offsets, n), (edge_offsets, len(edges))):
        assert o[0] == o[1] == 0 and o[-1] == total and (np.diff(o.astype(np.int64)) >= 0).all()
    assert (np.diff(offsets.astype(np.int64))[1:] > 0).all()  # no empty agglomerate but 0
    assert sorted(segments.tolist()) == sorted(agg.supervoxels.tolist())  # a partition
    position = {int(s): tuple(p) for s, p in zip(agg.supervoxels, agg.positions)}
    segment = dict(zip(agg.supervoxels.tolist(), agg.segments.tolist()))
    inside = {}
    for a in range(1, k + 1):
        members = segments[offsets[a] : offsets[a + 1]]
        assert (np.diff(members.astype(np.float64)) > 0).all()  # ascending
        assert {agglomerate_of[int(s)] for s in members} == {a}
        assert len({segment[int(s)] for s in members}) == 1  # one segment each
        for s, p in zip(members, got["agglomerate_to_positions"][offsets[a] : offsets[a + 1]]):
            assert tuple(p) == position[int(s)]
        local = edges[edge_offsets[a] : edge_offsets[a + 1]].astype(np.int64)
        assert ((local[:, 0] < local[:, 1]) & (local[:, 1] < len(members))).all()
        assert [tuple(e) for e in local] == sorted(tuple(e) for e in local)
        weights = got["agglomerate_to_affinities"][edge_offsets[a] : edge_offsets[a + 1]]
        for (i, j), w in zip(local, weights):
            inside[(int(members[i]), int(members[j]))] = w
    # the edges: exactly the pairs whose two supervoxels share a segment, with their affinity
    expected = {
        (min(int(a), int(b)), max(int(a), int(b))): np.float32(w)
        for (a, b), w in zip(agg.edges, agg.affinities)
        if segment[int(a)] == segment[int(b)]
    }
    assert 0 < len(expected) < len(agg.edges) and inside == expected


def test_ids_past_2_to_the_33_cost_only_their_chunks(tmp_path):
    """A few supervoxels with ids up to 2^40: the file holds their chunks alone (a dense
    segment_to_agglomerate would be 8 TiB), and nothing near that size is ever allocated."""
    big = np.array([3, 2**33 + 5, 2**33 + 6, 2**40 - 2], np.uint64)
    agg = Agglomeration(
        supervoxels=big,
        segments=np.array([1, 2, 2, 1], np.uint64),
        positions=np.zeros((4, 3), np.int64),
        edges=np.array([[big[1], big[2]], [big[0], big[1]]]),
        affinities=np.array([0.9, 0.1]),
    )
    path = tmp_path / "big.hdf5"
    tracemalloc.start()
    try:
        write_agglomerate_file(path, agg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak
    assert path.stat().st_size < 64 * 2**10, path.stat().st_size
    with h5py.File(path, "r") as f:
        s2a = f["segment_to_agglomerate"]
        assert s2a.shape == (2**40 - 1,)
        assert s2a.id.get_num_chunks() == 3  # the chunks of 3, of 2^33 + 5 and 6, of 2^40 - 2
        assert [int(s2a[int(i)]) for i in big] == [1, 2, 2, 1]
        assert s2a[2**33 + 4] == s2a[2**33 + 7] == s2a[2**36] == 0
        np.testing.assert_array_equal(f["agglomerate_to_segments"][()], big[[0, 3, 1, 2]])
        np.testing.assert_array_equal(f["agglomerate_to_edges"][()], [[0, 1]])


def test_uint32_supervoxels_are_stored_as_uint32(tmp_path):
    agg = sparse_agglomeration(3, n=50, top=1 << 30)
    write_agglomerate_file(tmp_path / "a.hdf5", agg, dtype="uint32")
    with h5py.File(tmp_path / "a.hdf5", "r") as f:
        assert f["agglomerate_to_segments"].dtype == np.uint32
        assert f["agglomerate_to_edges"].dtype == np.uint32
        assert f["segment_to_agglomerate"].dtype == np.uint64  # agglomerate ids: always uint64


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"supervoxels": np.array([1, 2, 2], np.uint64)}, "listed twice"),
        ({"supervoxels": np.array([0, 1, 2], np.uint64)}, "background"),
        ({"edges": np.array([[1, 9]], np.uint64)}, "supervoxel 9, which the mapping does not"),
        ({"segments": np.array([1, 1])}, "3 supervoxels but 2 segments"),
        ({"positions": np.full((3, 3), 2**31)}, "int32"),
    ],
)
def test_bad_input_is_refused_with_the_fix(tmp_path, change, message):
    fields = {
        "supervoxels": np.array([1, 2, 3], np.uint64),
        "segments": np.array([1, 1, 2]),
        "positions": np.zeros((3, 3)),
        "edges": np.array([[1, 2]], np.uint64),
        "affinities": np.array([0.5]),
    }
    with pytest.raises(InputError, match=message):
        write_agglomerate_file(tmp_path / "a.hdf5", Agglomeration(**{**fields, **change}))
