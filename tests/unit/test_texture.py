"""`morphology.texture`: the in-plane pair sums of any chunking add up to the whole volume's,
and equal a direct count of the steps between neighbours inside each segment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from petavox.tasks.morphology.surface_cells import block_box
from petavox.tasks.morphology.texture import pair_sums, sum_by_id

SHAPE = (30, 26, 12)


def volume(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.random(SHAPE), 1.5)
    seg, _ = ndimage.label(noise > np.percentile(noise, 65))
    return seg.astype(np.uint64) * np.uint64(2**40 + 3), rng.integers(0, 256, SHAPE, np.uint8)


def chunked(seg: np.ndarray, image: np.ndarray, chunk) -> tuple[np.ndarray, ...]:
    parts = []
    for start in itertools.product(*(range(0, s, c) for s, c in zip(seg.shape, chunk))):
        stop = tuple(min(a + c, s) for a, c, s in zip(start, chunk, seg.shape))
        lo, hi = block_box(start, stop, seg.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        parts.append(pair_sums(seg[box], image[box], np.subtract(stop, start)))
    return sum_by_id(*(np.concatenate([p[k] for p in parts]) for k in range(3)))


def direct(seg: np.ndarray, image: np.ndarray, sid: int) -> tuple[int, int]:
    """Pairs and Σ|step| of x- and y-neighbours both in segment `sid`."""
    image, pairs, steps = image.astype(np.int64), 0, 0
    for axis in (0, 1):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        both = (seg[tuple(a)] == sid) & (seg[tuple(b)] == sid)
        pairs += int(both.sum())
        steps += int(np.abs(image[tuple(a)] - image[tuple(b)])[both].sum())
    return pairs, steps


@pytest.mark.parametrize("chunk", [(8, 8, 4), (30, 5, 12), (7, 13, 5)])
def test_any_chunking_gives_the_direct_counts(chunk):
    seg, image = volume()
    ids, pairs, steps = chunked(seg, image, chunk)
    whole = chunked(seg, image, SHAPE)
    assert all(np.array_equal(a, b) for a, b in zip((ids, pairs, steps), whole))
    present = np.unique(seg)
    assert len(ids) >= 5 and set(ids.tolist()) <= set(present.tolist()) - {0}
    for sid, n, total in zip(ids.tolist(), pairs.tolist(), steps.tolist()):
        assert (n, total) == direct(seg, image, sid)


def test_pairs_across_a_membrane_or_in_z_are_not_counted():
    seg = np.zeros((2, 1, 2), np.uint64)
    seg[0, 0, :] = 5  # a column in z: its only pair is across sections
    seg[1, 0, 0] = 6  # x-neighbour of 5, another segment
    image = np.array([[[10, 200]], [[90, 0]]], np.uint8)
    ids, pairs, steps = pair_sums(seg, image, seg.shape)
    assert ids.tolist() == [] and pairs.tolist() == [] and steps.tolist() == []
    seg[1, 0, 0] = 5
    ids, pairs, steps = pair_sums(seg, image, seg.shape)
    assert (ids.tolist(), pairs.tolist(), steps.tolist()) == ([5], [1], [80])
