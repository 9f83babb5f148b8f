"""Mean-affinity agglomeration: the node algorithm against a plain global greedy and waterz."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petavox.tasks.segment.agglomeration import RegionGraph, agglomerate_node, contact_graph
from petavox.tasks.segment.equivalence import apply_maps
from petavox.tasks.segment.watershed import (
    WatershedParams,
    affinities_from_boundary,
    watershed_fragments,
)

NONE_OPEN = np.zeros(0, np.uint64)


def greedy_reference(
    graph: RegionGraph, threshold: float, penalty: float = 0.0, floor: int = 1
) -> dict[int, int]:
    """The textbook loop: merge the globally best pair until the best score reaches threshold.

    Score: 1 − mean affinity + penalty · max(0, log2(smaller region's voxels / floor)).
    """
    stats = {tuple(e): [s, c] for e, s, c in zip(graph.edges.tolist(), graph.sums, graph.counts)}
    size = dict(zip(graph.size_ids.tolist(), graph.sizes.tolist()))
    root = {i: i for i in graph.ids().tolist()}

    def score(edge: tuple[int, int], s: float, c: int) -> float:
        smaller = min(size[edge[0]], size[edge[1]]) if penalty else 1
        return 1 - s / c + penalty * max(0.0, math.log2(smaller / floor))

    while stats:
        (a, b), (s, c) = min(stats.items(), key=lambda kv: (score(kv[0], *kv[1]), kv[0]))
        if score((a, b), s, c) >= threshold:
            break
        keep, gone = min(a, b), max(a, b)
        if penalty:
            size[keep] += size.pop(gone)
        for i, r in root.items():
            if r == gone:
                root[i] = keep
        merged = {}
        for (x, y), (s2, c2) in stats.items():
            x, y = (keep if x == gone else x), (keep if y == gone else y)
            if x == y:
                continue
            key = (min(x, y), max(x, y))
            acc = merged.setdefault(key, [0.0, 0])
            acc[0] += s2
            acc[1] += c2
        stats = merged
    return root


def random_graph(rng: np.random.Generator, n: int, m: int) -> RegionGraph:
    a = rng.integers(1, n + 1, m)
    b = rng.integers(1, n + 1, m)
    keep = a != b
    edges = np.sort(np.stack([a[keep], b[keep]], axis=1), axis=1).astype(np.uint64)
    counts = rng.integers(1, 20, len(edges))
    sums = counts * rng.random(len(edges))
    return RegionGraph.combine([RegionGraph(edges=edges, sums=sums, counts=counts)])


def sized_graph(rng: np.random.Generator, n: int, m: int, floor: int) -> RegionGraph:
    """A random graph whose regions 1..n have sizes, half of them up to `floor`, half larger."""
    graph = random_graph(rng, n, m)
    small = rng.random(n) < 0.5
    sizes = np.where(small, rng.integers(1, floor + 1, n), rng.integers(floor, 64 * floor, n))
    graph.size_ids = np.arange(1, n + 1, dtype=np.uint64)
    graph.sizes = sizes.astype(np.int64)
    return graph


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(2, 30),
    m=st.integers(1, 80),
    seed=st.integers(0, 2**31),
    threshold=st.floats(0.05, 0.95),
)
def test_closed_node_equals_global_greedy(n, m, seed, threshold):
    graph = random_graph(np.random.default_rng(seed), n, m)
    mapping, up = agglomerate_node(graph, np.zeros(0, np.uint64), threshold)
    ids = graph.ids()
    want = greedy_reference(graph, threshold)
    got = apply_maps(ids, [mapping])
    assert dict(zip(ids.tolist(), got.tolist())) == want
    assert len(up.edges) == 0  # nothing open: nothing left for a higher node


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(3, 25),
    m=st.integers(1, 70),
    seed=st.integers(0, 2**31),
    threshold=st.floats(0.05, 0.95),
    n_open=st.integers(1, 4),
)
def test_two_steps_with_open_regions_equal_one_closed_step(n, m, seed, threshold, n_open):
    """Merging first what is decidable with some regions open, then the rest, changes nothing.

    Edges between two open regions are split in two parts (a contact spread over two chunks):
    the first node sees one part, the second node the passed-up graph plus the other part.
    Edges with a closed end are complete at the first node, as in the octree.
    """
    rng = np.random.default_rng(seed)
    graph = random_graph(rng, n, m)
    graph.counts = graph.counts + 1  # every edge has at least 2 voxel edges to split
    opened = rng.choice(np.arange(1, n + 1, dtype=np.uint64), min(n_open, n - 1), replace=False)
    split = np.isin(graph.edges, opened).all(axis=1)
    part = rng.integers(1, graph.counts)  # voxel edges seen first, 1 .. count-1
    share = part / graph.counts
    first = RegionGraph(
        edges=graph.edges,
        sums=np.where(split, graph.sums * share, graph.sums),
        counts=np.where(split, part, graph.counts),
    )
    later = RegionGraph(
        edges=graph.edges[split],
        sums=(graph.sums * (1 - share))[split],
        counts=(graph.counts - part)[split],
    )
    mapping1, up = agglomerate_node(first, opened, threshold)
    mapping2, rest = agglomerate_node(
        RegionGraph.combine([up, later]), np.zeros(0, np.uint64), threshold
    )
    ids = graph.ids()
    got = apply_maps(ids, [mapping1, mapping2])
    want = apply_maps(ids, [agglomerate_node(graph, np.zeros(0, np.uint64), threshold)[0]])
    np.testing.assert_array_equal(got, want)
    assert len(rest.edges) == 0


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(2, 30),
    m=st.integers(1, 80),
    seed=st.integers(0, 2**31),
    threshold=st.floats(0.05, 1.5),
    penalty=st.floats(0.01, 0.3),
)
def test_closed_node_with_a_size_penalty_equals_global_greedy(n, m, seed, threshold, penalty):
    graph = sized_graph(np.random.default_rng(seed), n, m, floor=100)
    mapping, up = agglomerate_node(graph, NONE_OPEN, threshold, penalty, 100)
    ids = graph.ids()
    want = greedy_reference(graph, threshold, penalty, 100)
    got = apply_maps(ids, [mapping])
    assert dict(zip(ids.tolist(), got.tolist())) == want
    assert len(up.edges) == len(up.size_ids) == 0


@settings(max_examples=80, deadline=None)
@given(
    n=st.integers(3, 25),
    m=st.integers(1, 70),
    seed=st.integers(0, 2**31),
    threshold=st.floats(0.05, 1.5),
    n_open=st.integers(1, 4),
    penalty=st.floats(0.01, 0.3),
)
def test_two_steps_with_open_regions_and_a_size_penalty_equal_one_closed_step(
    n, m, seed, threshold, n_open, penalty
):
    """As without the penalty, with the open regions' voxels split between the two nodes too.

    An open region's contacts may all lie in the second node (it has none in the first): its
    voxels in the first must still reach the second.
    """
    rng = np.random.default_rng(seed)
    graph = sized_graph(rng, n, m, floor=100)
    graph.sizes = graph.sizes + 1  # every region has at least 2 voxels to split
    opened = rng.choice(np.arange(1, n + 1, dtype=np.uint64), min(n_open, n - 1), replace=False)
    split = np.isin(graph.edges, opened).all(axis=1)
    part = np.where(split, rng.integers(0, graph.counts), graph.counts)  # 0: all in the second
    share = part / graph.counts
    seen = part > 0
    open_region = np.isin(graph.size_ids, opened)
    voxels = np.where(open_region, rng.integers(1, graph.sizes), graph.sizes)
    first = RegionGraph(
        edges=graph.edges[seen],
        sums=(graph.sums * share)[seen],
        counts=part[seen],
        size_ids=graph.size_ids,
        sizes=voxels,
    )
    later = RegionGraph(
        edges=graph.edges[split],
        sums=(graph.sums * (1 - share))[split],
        counts=(graph.counts - part)[split],
        size_ids=graph.size_ids[open_region],
        sizes=(graph.sizes - voxels)[open_region],
    )
    mapping1, up = agglomerate_node(first, opened, threshold, penalty, 100)
    assert set(opened.tolist()) <= set(up.size_ids.tolist())  # sizes of all open regions go up
    mapping2, rest = agglomerate_node(
        RegionGraph.combine([up, later]), NONE_OPEN, threshold, penalty, 100
    )
    ids = graph.ids()
    got = apply_maps(ids, [mapping1, mapping2])
    want = apply_maps(ids, [agglomerate_node(graph, NONE_OPEN, threshold, penalty, 100)[0]])
    np.testing.assert_array_equal(got, want)
    assert len(rest.edges) == 0


def test_the_size_penalty_keeps_large_regions_apart_but_not_small_fragments():
    """The same weak contact (mean affinity 0.5) joins two small fragments but not two large
    regions; a strong contact (0.9) still joins two large regions."""
    big, small = 200_000, 100
    graph = RegionGraph(
        edges=np.array([[1, 2], [3, 4], [5, 6]], np.uint64),
        sums=np.array([50.0, 50.0, 90.0]),
        counts=np.array([100, 100, 100]),
        size_ids=np.arange(1, 7, dtype=np.uint64),
        sizes=np.array([big, big, small, small, big, big]),
    )

    def merges(penalty: float) -> list[list[int]]:
        return agglomerate_node(graph, NONE_OPEN, 0.6, penalty, 4096)[0].tolist()

    assert merges(0.0) == [[2, 1], [4, 3], [6, 5]]
    # 0.5 + 0.05 · log2(200000 / 4096) = 0.78: apart; 0.1 + 0.28 = 0.38: merged
    assert merges(0.05) == [[4, 3], [6, 5]]


def test_open_regions_pass_their_sizes_up_even_without_edges():
    """Two large regions, open at a first node that holds most of their voxels but none of
    their (weak) contact: the second node must still see them large."""
    first = RegionGraph.empty(size_ids=np.array([1, 2], np.uint64), sizes=np.array([99000] * 2))
    opened = np.array([1, 2], np.uint64)
    mapping, up = agglomerate_node(first, opened, 0.6, 0.05, 4096)
    assert len(mapping) == 0 and up.size_map() == {1: 99000, 2: 99000}
    later = RegionGraph(
        edges=np.array([[1, 2]], np.uint64),
        sums=np.array([50.0]),
        counts=np.array([100]),
        size_ids=np.array([1, 2], np.uint64),
        sizes=np.array([1000, 1000]),
    )
    both = RegionGraph.combine([up, later])
    assert len(agglomerate_node(both, NONE_OPEN, 0.6, 0.05, 4096)[0]) == 0
    assert len(agglomerate_node(later, NONE_OPEN, 0.6, 0.05, 4096)[0]) == 1  # seen small


def test_a_merged_region_is_scored_with_its_new_size():
    """1 and 2 merge first (best contact); 3's contact to the merged region is then penalised by
    its size, though 3's contact to 1 alone would have passed."""
    graph = RegionGraph(
        edges=np.array([[1, 2], [1, 3]], np.uint64),
        sums=np.array([95.0, 60.0]),
        counts=np.array([100, 100]),
        size_ids=np.array([1, 2, 3], np.uint64),
        sizes=np.array([4096, 4096, 10**6]),
    )
    mapping, _ = agglomerate_node(graph, NONE_OPEN, 0.5, 0.1, 4096)
    assert mapping.tolist() == [[2, 1]]  # 0.4 + 0.1 · log2(8192 / 4096) = 0.5: not below
    assert agglomerate_node(graph, NONE_OPEN, 0.501, 0.1, 4096)[0].tolist() == [[2, 1], [3, 1]]


def test_sizes_add_up_across_graphs_with_or_without_edges():
    sizes_only = RegionGraph.empty(size_ids=np.array([1, 5], np.uint64), sizes=np.array([3, 4]))
    with_edge = RegionGraph(
        edges=np.array([[1, 2]], np.uint64),
        sums=np.array([0.5]),
        counts=np.array([1]),
        size_ids=np.array([1, 2], np.uint64),
        sizes=np.array([10, 1]),
    )
    graph = RegionGraph.combine([sizes_only, with_edge])
    assert graph.size_ids.tolist() == [1, 2, 5] and graph.sizes.tolist() == [13, 1, 4]
    assert RegionGraph.combine([sizes_only]).size_map() == {1: 3, 5: 4}
    back = RegionGraph.from_arrays(graph.arrays())
    assert back.size_map() == graph.size_map() and back.edges.tolist() == [[1, 2]]
    old = RegionGraph.from_arrays({k: v for k, v in graph.arrays().items() if "size" not in k})
    assert len(old.size_ids) == len(old.sizes) == 0  # a file written before sizes existed


def test_contact_graph_counts_the_interior_voxels_of_each_region():
    labels = np.zeros((3, 3, 3), np.uint64)
    labels[1:, 1:, 1] = 1
    labels[1:, 2, 2] = 2
    labels[0, 1:, 1] = 3  # before the interior: its voxels are the previous chunk's
    graph = contact_graph(labels, np.full((3, 3, 3, 3), 0.5, np.float32))
    np.testing.assert_array_equal(graph.edges, [[1, 2], [1, 3]])
    assert graph.size_map() == {1: 4, 2: 2}


def test_contact_graph_counts_each_voxel_edge_once():
    labels = np.zeros((3, 3, 3), np.uint64)
    labels[1:, 1:, 1] = 1
    labels[1:, 1:, 2] = 2
    affs = np.full((3, 3, 3, 3), 0.25, np.float32)
    graph = contact_graph(labels, affs)
    np.testing.assert_array_equal(graph.edges, [[1, 2]])
    assert graph.counts.tolist() == [4]  # a 2×2 contact along z
    assert graph.sums.tolist() == [1.0]


def test_one_chunk_agrees_with_waterz():
    waterz = pytest.importorskip("waterz")
    rng = np.random.default_rng(0)
    from scipy import ndimage

    boundary = ndimage.gaussian_filter(rng.random((40, 36, 30)).astype(np.float32), 2)
    boundary = (boundary - boundary.min()) / np.ptp(boundary)
    fragments = watershed_fragments(boundary, WatershedParams(smoothing=0.0, seed_threshold=0.3))
    affs = affinities_from_boundary(boundary)
    padded = np.pad(fragments, ((1, 0),) * 3)
    padded_affs = np.pad(affs, ((1, 0),) * 3 + ((0, 0),))
    mapping, _ = agglomerate_node(contact_graph(padded, padded_affs), np.zeros(0), 0.6)
    ours = apply_maps(fragments.ravel(), [mapping]).reshape(fragments.shape)
    affs_czyx = np.ascontiguousarray(affs.transpose(3, 2, 1, 0)[::-1])
    (theirs,) = waterz.agglomerate(affs_czyx, [0.6], fragments=np.ascontiguousarray(fragments.T))
    theirs = theirs.T
    pairs = np.unique(np.stack([ours.ravel(), theirs.ravel()], axis=1), axis=0)
    assert len(np.unique(fragments)) > len(np.unique(ours)) > 1  # it merged, not everything
    assert len(pairs) == len(np.unique(ours)) == len(np.unique(theirs))
