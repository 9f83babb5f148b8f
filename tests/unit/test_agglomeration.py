"""Mean-affinity agglomeration: the node algorithm against a plain global greedy and waterz."""

from __future__ import annotations

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


def greedy_reference(graph: RegionGraph, threshold: float) -> dict[int, int]:
    """The textbook loop: merge the globally best pair until the best score reaches threshold."""
    stats = {tuple(e): [s, c] for e, s, c in zip(graph.edges.tolist(), graph.sums, graph.counts)}
    root = {i: i for i in graph.ids().tolist()}
    while stats:
        (a, b), (s, c) = min(stats.items(), key=lambda kv: (1 - kv[1][0] / kv[1][1], kv[0]))
        if 1 - s / c >= threshold:
            break
        keep, gone = min(a, b), max(a, b)
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
