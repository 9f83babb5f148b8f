"""Image texture of each segment: the mean absolute intensity step between in-plane neighbours
that both lie in the segment, counted chunk by chunk in integers.

A pair of voxels one step apart in x or in y belongs to the lower voxel's chunk, so a chunk reads
one more voxel past its high faces (the block of `surface_cells.block_box`) and counts the pairs
whose lower voxel is in its write box. Both sums are integers, so any chunking gives the same
totals. Pairs across a membrane are left out (their two voxels are in different segments), so
the figure is the segment's own grain: smooth cytoplasm, a vessel's bright lumen, myelin's dark
lamellae. In-plane only: serial sections are anisotropic, and a step across sections mixes in
the alignment's error.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sum_by_id(ids: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sorted distinct `ids` and, per id, the exact int64 sum of each column."""
    ids = np.asarray(ids, np.uint64)
    if not len(ids):
        return (ids, *(np.zeros(0, np.int64) for _ in columns))
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sums = (np.add.reduceat(np.asarray(c, np.int64)[order], starts) for c in columns)
    return (ids[starts], *sums)


def pair_sums(
    seg: np.ndarray, image: np.ndarray, write_shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, pairs, Σ|step|) over the in-plane pairs a chunk owns; `seg` and `image` (x, y, z)
    cover its block (`write_shape` and one more voxel on each high face inside the volume)."""
    seg, image = np.asarray(seg), np.asarray(image).astype(np.int64)
    wx, wy, wz = (int(v) for v in write_shape)
    found_ids, found_pairs, found_steps = [], [], []
    for axis in (0, 1):  # summed per axis, then together: half the pairs in memory at once
        size = (wx, wy)[axis]
        n = min(size, seg.shape[axis] - 1)  # the last voxel has no neighbour at the volume's end
        low = [slice(0, wx), slice(0, wy), slice(0, wz)]
        high = list(low)
        low[axis], high[axis] = slice(0, n), slice(1, n + 1)
        a, b = seg[tuple(low)], seg[tuple(high)]
        same = (a == b) & (a != 0)
        steps = np.abs(image[tuple(low)][same] - image[tuple(high)][same])
        ids, pairs, total = sum_by_id(a[same], np.ones(len(steps), np.int64), steps)
        found_ids.append(ids)
        found_pairs.append(pairs)
        found_steps.append(total)
    ids, pairs, steps = sum_by_id(
        np.concatenate(found_ids), np.concatenate(found_pairs), np.concatenate(found_steps)
    )
    return ids, pairs, steps
