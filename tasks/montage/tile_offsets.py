"""Whole-pixel offsets between overlapping tiles, and tile positions from the best of them.

The offset of a second tile in the first's frame is the normalised cross-correlation's peak
over their overlap, at every offset within `max_offset` of the stage's (computed with FFTs,
each offset normalised over its own overlap, so a narrow overlap is scored fairly: a plain
phase correlation of two tiles that share a fifth of their area locks onto their shared edges).

On microscope-sized tiles only the parts of the two tiles that an allowed offset can make
overlap are correlated, and an overlap longer than `COARSE_SIDE` px is correlated part by part,
the best part's offset kept: the tiles' rotations move the content apart along a long seam
(±1° each over a 2048 px seam: up to ±35 px at its ends), which blurs a whole-seam correlation
into nothing; the seam's patch matches (`tile_matches`) find the rest.
"""

from __future__ import annotations

import itertools
import math
from typing import Protocol

import numpy as np

COARSE_SIDE = 256  # a longer overlap (px) is correlated in parts this long


class SearchParams(Protocol):
    max_offset: float
    min_overlap: int


def overlap_box(offset: np.ndarray, first: tuple, second: tuple) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) in the first tile's frame of its overlap with a second tile at `offset`."""
    lo = np.maximum(0, offset)
    hi = np.minimum(np.asarray(first[:2]), offset + np.asarray(second[:2]))
    return lo, hi


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ a(p) b(p − s) for every whole offset s of b in a's frame ('full': s from −(b−1))."""
    from scipy.signal import fftconvolve

    return fftconvolve(a, b[::-1, ::-1], mode="full")


def _ncc_search(
    a: np.ndarray, b: np.ndarray, guess: np.ndarray, reach: float, min_overlap: int
) -> tuple[np.ndarray, float]:
    """(offset of b in a's frame, NCC) with the best NCC within `reach` of `guess`."""
    ones_a, ones_b = np.ones_like(a), np.ones_like(b)
    count = _correlate(ones_a, ones_b)
    sum_a, sum_b = _correlate(a, ones_b), _correlate(ones_a, b)
    sq_a, sq_b = _correlate(a * a, ones_b), _correlate(ones_a, b * b)
    cross = _correlate(a, b)
    n = np.maximum(count, 1)
    var = (sq_a - sum_a**2 / n) * (sq_b - sum_b**2 / n)
    ncc = (cross - sum_a * sum_b / n) / np.sqrt(np.maximum(var, 1e-9))
    sx = np.arange(ncc.shape[0]) - (b.shape[0] - 1)
    sy = np.arange(ncc.shape[1]) - (b.shape[1] - 1)
    gx, gy = np.meshgrid(sx, sy, indexing="ij")
    lo_x, hi_x = np.maximum(0, gx), np.minimum(a.shape[0], gx + b.shape[0])
    lo_y, hi_y = np.maximum(0, gy), np.minimum(a.shape[1], gy + b.shape[1])
    allowed = (
        (np.abs(gx - guess[0]) <= reach)
        & (np.abs(gy - guess[1]) <= reach)
        & (hi_x - lo_x >= min_overlap)
        & (hi_y - lo_y >= min_overlap)
        & (var > 1e-6)
    )
    if not allowed.any():
        return np.asarray(np.rint(guess), np.int64), 0.0
    scored = np.where(allowed, ncc, -np.inf)
    k = np.unravel_index(int(np.argmax(scored)), scored.shape)
    return np.array([sx[k[0]], sy[k[1]]], np.int64), float(scored[k])


def _segments(lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """[lo, hi) cut along its longer side into parts at most `COARSE_SIDE` long."""
    axis = int(np.argmax(hi - lo))
    count = max(1, math.ceil(float(hi[axis] - lo[axis]) / COARSE_SIDE))
    cuts = np.linspace(lo[axis], hi[axis], count + 1).round().astype(np.int64)
    out = []
    for start, stop in itertools.pairwise(cuts):
        a, b = lo.copy(), hi.copy()
        a[axis], b[axis] = start, stop
        out.append((a, b))
    return out


def coarse_offset(
    first: np.ndarray, second: np.ndarray, guess: np.ndarray, params: SearchParams
) -> tuple[np.ndarray, float]:
    """(offset of `second`'s first pixel in `first`'s frame, its NCC) searched within
    `params.max_offset` of `guess`, over overlaps of at least `min_overlap` px each way; on an
    overlap longer than `COARSE_SIDE`, the offset of its best-correlated part."""
    reach = params.max_offset
    g = np.rint(guess).astype(np.int64)
    pad = math.ceil(reach) + 1
    best: tuple[np.ndarray, float] = (g, 0.0)
    for lo, hi in _segments(*overlap_box(g, first.shape, second.shape)):
        a_lo, a_hi = np.clip(lo - pad, 0, first.shape), np.clip(hi + pad, 0, first.shape)
        b_lo = np.clip(lo - g - pad, 0, second.shape)
        b_hi = np.clip(hi - g + pad, 0, second.shape)
        if ((a_hi - a_lo) < 1).any() or ((b_hi - b_lo) < 1).any():
            continue
        a = first[a_lo[0] : a_hi[0], a_lo[1] : a_hi[1]].astype(np.float64)
        b = second[b_lo[0] : b_hi[0], b_lo[1] : b_hi[1]].astype(np.float64)
        to_full = a_lo - b_lo  # an offset between the crops plus this is one between the tiles
        found, score = _ncc_search(a, b, guess - to_full, reach, params.min_overlap)
        if score > best[1]:
            best = (found + to_full, score)
    return best


def tree_positions(
    count: int, offsets: dict[tuple[int, int], tuple[np.ndarray, float]], stage: np.ndarray
) -> np.ndarray:
    """Tile positions (count, 2) from the best-scoring offsets alone: a maximum spanning tree of
    the pairs by score, each part of it placed from its first tile's stage position. One
    spurious offset (a corner overlap that correlated by chance) cannot bend the tree when a
    better pair reaches the same tile, and it then shows as inconsistent with the tree."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, minimum_spanning_tree

    positions = np.asarray(stage, np.float64).copy()
    if not offsets:
        return positions
    rows, cols = zip(*offsets)
    cost = [2.0 - score for _, score in offsets.values()]  # all positive: an edge is an edge
    tree = minimum_spanning_tree(coo_matrix((cost, (rows, cols)), shape=(count, count)))
    tree = tree + tree.T
    placed = np.zeros(count, bool)
    for root in range(count):
        if placed[root]:
            continue
        order, parent = breadth_first_order(tree, root, directed=False)
        for k in order[1:]:
            p = parent[k]
            if (p, k) in offsets:
                positions[k] = positions[p] + offsets[(p, k)][0]
            else:
                positions[k] = positions[p] - offsets[(k, p)][0]
        placed[order] = True
    return positions
