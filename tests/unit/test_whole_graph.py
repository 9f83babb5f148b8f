"""A sweep from one pass: the merges below each threshold of one pass at the highest are what
a pass at that threshold makes (mean affinity, with and without the size penalty, with edits)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from petavox.tasks.segment.agglomerate_jobs import MergeRule
from petavox.tasks.segment.agglomeration import RegionGraph, agglomerate_node
from petavox.tasks.segment.edits import Edits
from petavox.tasks.segment.equivalence import apply_maps
from petavox.tasks.segment.whole_graph import sweep_mappings


def sized_random_graph(seed: int, n: int, m: int) -> RegionGraph:
    """Regions 1..n with sizes around a floor of 100, m random contacts; some affinities
    repeat (uint8-like), so ties happen."""
    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, n + 1, m), rng.integers(1, n + 1, m)
    keep = a != b
    edges = np.sort(np.stack([a[keep], b[keep]], axis=1), axis=1).astype(np.uint64)
    counts = rng.integers(1, 20, len(edges))
    sums = counts * rng.integers(0, 256, len(edges)) / 255
    graph = RegionGraph.combine([RegionGraph(edges=edges, sums=sums, counts=counts)])
    graph.size_ids = np.arange(1, n + 1, dtype=np.uint64)
    graph.sizes = rng.integers(1, 6400, n).astype(np.int64)
    return graph


def one_pass(graph: RegionGraph, rule: MergeRule) -> np.ndarray:
    mapping, _ = agglomerate_node(
        graph, np.zeros(0, np.uint64), rule.threshold, rule.size_penalty, rule.size_floor
    )
    return apply_maps(graph.size_ids, [mapping])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(2, 30),
    m=st.integers(1, 90),
    thresholds=st.lists(st.floats(0.05, 1.2), min_size=1, max_size=6),
    penalty=st.sampled_from([0.0, 0.1]),
)
def test_one_pass_gives_every_thresholds_own_result(seed, n, m, thresholds, penalty):
    graph = sized_random_graph(seed, n, m)
    rules = tuple(MergeRule(t, penalty, 100) for t in thresholds)
    for rule, (ids, segments) in zip(rules, sweep_mappings(graph, rules), strict=True):
        np.testing.assert_array_equal(ids, graph.size_ids)
        np.testing.assert_array_equal(segments, one_pass(graph, rule))


def test_edits_in_a_sweep_split_before_merging_and_join_after():
    graph = RegionGraph(
        edges=np.array([[1, 2], [2, 3], [4, 5]], np.uint64),
        sums=np.array([9.0, 9.0, 1.0]),
        counts=np.array([10, 10, 10]),
        size_ids=np.arange(1, 6, dtype=np.uint64),
        sizes=np.full(5, 10),
    )
    rules = (MergeRule(0.5), MergeRule(0.95))
    plain = sweep_mappings(graph, rules)
    assert plain[0][1].tolist() == [1, 1, 1, 4, 5] and plain[1][1].tolist() == [1, 1, 1, 4, 4]
    edits = Edits(joins=((3, 5),), splits=(((1,), (2,)),))
    edited = sweep_mappings(graph, rules, edits)
    assert edited[0][1].tolist() == [1, 2, 2, 4, 2]  # 1 cut from 2; 3's segment joined 5
    assert edited[1][1].tolist() == [1, 2, 2, 2, 2]
