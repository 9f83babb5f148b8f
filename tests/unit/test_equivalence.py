"""Hierarchical union-find over an octree of chunks equals one flat union-find."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from petavox.tasks.segment.equivalence import (
    IdSpace,
    apply_maps,
    components,
    resolve_node,
    sorted_map,
)


def hierarchical(edges: np.ndarray, ids: IdSpace) -> dict[int, np.ndarray]:
    """Run every level in memory the way the stitch stage does on storage; return chunk maps."""
    grid = np.array(ids.grid_shape)
    levels = int(np.ceil(np.log2(grid.max()))) if grid.max() > 1 else 0
    # level 0: each chunk holds every edge with an end in it (what level 1 gathers)
    ends = ids.chunk_index(edges.ravel()).reshape(-1, 2, 3)
    passed = {
        c: edges[(ends == c).all(axis=2).any(axis=1)]
        for c in itertools.product(*(range(n) for n in grid))
    }
    maps = []
    for level in range(1, levels + 1):
        shape = -(-grid // 2**level)
        level_maps, up = {}, {}
        for node in itertools.product(*(range(n) for n in shape)):
            children = [
                passed.get(c, np.zeros((0, 2), np.uint64))
                for c in itertools.product(*(range(2 * i, 2 * i + 2) for i in node))
            ]
            e = np.concatenate(children)
            inside = ((ids.chunk_index(e.ravel()).reshape(-1, 2, 3) >> level) == node).all(axis=2)
            touching = inside.any(axis=1)
            mapping, up[node] = resolve_node(e[touching], inside[touching])
            level_maps[node] = sorted_map(mapping)
        maps.append(level_maps)
        passed = up
    return maps


def final_ids(labels: np.ndarray, ids: IdSpace, maps) -> np.ndarray:
    out = labels.copy()
    for i, lab in enumerate(labels):
        chunk = ids.chunk_index(np.array([lab]))[0]
        chain = [m[tuple(chunk >> (lvl + 1))] for lvl, m in enumerate(maps)]
        out[i] = apply_maps(np.array([lab], np.uint64), chain)[0]
    return out


@settings(max_examples=60, deadline=None)
@given(
    grid=st.tuples(*(st.integers(1, 5),) * 3),
    n_edges=st.integers(0, 80),
    seed=st.integers(0, 2**31),
)
def test_hierarchy_equals_flat_union_find(grid, n_edges, seed):
    rng = np.random.default_rng(seed)
    ids = IdSpace(grid, 10)
    n_chunks = int(np.prod(grid))
    labels = np.array([c * 10 + k for c in range(n_chunks) for k in range(1, 4)], dtype=np.uint64)
    # edges between labels of nearby chunks (as face matching makes) and some far ones
    a = rng.choice(labels, n_edges)
    b = rng.choice(labels, n_edges)
    edges = np.stack([a, b], axis=1).reshape(-1, 2)
    edges = edges[(edges[:, 0] // 10) != (edges[:, 1] // 10)]  # matches cross chunk faces
    maps = hierarchical(edges, ids)
    got = final_ids(labels, ids, maps)
    flat_ids, flat_roots = components(edges, extra=labels)
    want = flat_roots[np.searchsorted(flat_ids, labels)]
    np.testing.assert_array_equal(got, want)
    # relabelling twice changes nothing
    np.testing.assert_array_equal(final_ids(got, ids, maps), got)


def test_id_space_round_trip_and_overflow():
    ids = IdSpace((3, 4, 5), 1000)
    index = (2, 3, 4)
    label = ids.offset(index) + 17
    assert tuple(ids.chunk_index(np.array([label]))[0]) == index
    with pytest.raises(ValueError, match="overflow"):
        IdSpace((2**20, 2**20, 2**10), 2**20)


def test_components_root_is_smallest_id():
    ids, roots = components(np.array([[5, 3], [3, 9], [7, 8]], np.uint64), extra=[11])
    assert dict(zip(ids.tolist(), roots.tolist())) == {3: 3, 5: 3, 9: 3, 7: 7, 8: 7, 11: 11}
