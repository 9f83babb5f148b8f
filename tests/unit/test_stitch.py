"""Face matching rules of the stitch step (pure functions, no storage)."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.segment.equivalence import unique_pairs
from petavox.tasks.segment.stitch_jobs import adjacent_pairs, half_offsets, overlap_matches


@pytest.mark.parametrize(("connectivity", "count"), [(6, 3), (18, 9), (26, 13)])
def test_half_offsets_hold_one_of_each_opposite_pair(connectivity, count):
    offsets = half_offsets(connectivity)
    assert len(offsets) == count
    assert not any(tuple(-v for v in d) in offsets for d in offsets)


def test_adjacent_pairs_follow_the_connectivity():
    labels = np.zeros((2, 2, 1), np.uint64)
    labels[0, 0, 0], labels[1, 1, 0] = 5, 7  # touch only along an xy diagonal
    assert len(adjacent_pairs(labels, 6)) == 0
    np.testing.assert_array_equal(adjacent_pairs(labels, 18), [[5, 7]])
    labels[1, 0, 0] = 9  # face neighbour of both
    assert adjacent_pairs(labels, 6).tolist() == [[5, 9], [7, 9]]


def test_overlap_matches_need_a_majority_of_both_objects():
    mine = np.array([1, 1, 1, 1, 2, 2, 3, 3], np.uint64)
    theirs = np.array([8, 8, 8, 9, 9, 9, 9, 0], np.uint64)
    # 1~8: 3 of 4 and 3 of 3; 2~9: 2 of 2 but only 2 of 4 of 9; 3 overlaps nothing labelled
    assert overlap_matches(mine, theirs, 0.5).tolist() == [[1, 8]]


def test_unique_pairs_equals_numpy_unique_rows():
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, 2**40, (500, 2)).astype(np.uint64)
    pairs[250:] = pairs[:250]
    rows, inverse = unique_pairs(pairs)
    want, want_inverse = np.unique(pairs, axis=0, return_inverse=True)
    np.testing.assert_array_equal(rows, want)
    np.testing.assert_array_equal(inverse, want_inverse.ravel())
