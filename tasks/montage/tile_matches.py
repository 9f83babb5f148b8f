"""Matches between overlapping tiles of one section: a coarse offset, then patches on the seam.

For each pair of tiles whose stage positions say they overlap, the coarse step finds the whole
pixel offset of the second tile in the first's frame: the normalised cross-correlation over the
overlap at every offset within `max_offset` of the stage's (computed with FFTs, each offset
normalised over its own overlap, so a narrow overlap is scored fairly: a plain phase
correlation of two tiles that share a fifth of their area locks onto their shared edges). Then
patches along the overlap, cut where the coarse offset puts them, give sub-pixel point matches
(`align`'s patch matcher, with rectangular patches for a narrow overlap).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from petavox.tasks.align.flow import hann, match_patch, phase_shift
from petavox.tasks.montage.tile_render import CubicSampler

CONSISTENT_PX = 4  # a coarse offset this far from the spanning tree's is searched again


@dataclass(frozen=True, kw_only=True)
class MatchParams:
    max_offset: float = 50.0  # largest error of a tile's stage position relative to a neighbour
    patch: int = 32  # side of a seam patch along the seam (px)
    min_overlap: int = 8  # narrowest overlap worth matching (px)
    upsample: int = 20  # sub-pixel precision 1/upsample
    min_score: float = 0.2  # a coarse offset whose correlation is lower matches nothing


@dataclass(frozen=True)
class TileMatches:
    """Points of tile `first` (n, 2) whose content is at `second_points` (n, 2) of tile
    `second`, each with a confidence; `offset` is the coarse offset and `score` its NCC."""

    first: int
    second: int
    first_points: np.ndarray
    second_points: np.ndarray
    confidence: np.ndarray
    offset: np.ndarray
    score: float


def _overlap(offset: np.ndarray, first: tuple, second: tuple) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) in the first tile's frame of its overlap with a second tile at `offset`."""
    lo = np.maximum(0, offset)
    hi = np.minimum(np.asarray(first[:2]), offset + np.asarray(second[:2]))
    return lo, hi


def overlapping_pairs(stage: np.ndarray, shapes: list[tuple], params: MatchParams) -> list:
    """(i, j), i < j, of the tiles whose rectangles could share `min_overlap` px in both
    directions when each stage position may be off by up to `max_offset` / 2."""
    pairs = []
    for i in range(len(stage)):
        for j in range(i + 1, len(stage)):
            lo, hi = _overlap(stage[j] - stage[i], shapes[i], shapes[j])
            if ((hi - lo) + params.max_offset >= params.min_overlap).all():
                pairs.append((i, j))
    return pairs


def _correlate(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Σ a(p) b(p − s) for every whole offset s of b in a's frame ('full': s from −(b−1))."""
    from scipy.signal import fftconvolve

    return fftconvolve(a, b[::-1, ::-1], mode="full")


def coarse_offset(
    first: np.ndarray, second: np.ndarray, guess: np.ndarray, params: MatchParams
) -> tuple[np.ndarray, float]:
    """(offset of `second`'s first pixel in `first`'s frame, its NCC) searched within
    `params.max_offset` of `guess`, over overlaps of at least `min_overlap` px each way."""
    a, b = first.astype(np.float64), second.astype(np.float64)
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
        (np.abs(gx - guess[0]) <= params.max_offset)
        & (np.abs(gy - guess[1]) <= params.max_offset)
        & (hi_x - lo_x >= params.min_overlap)
        & (hi_y - lo_y >= params.min_overlap)
        & (var > 1e-6)
    )
    if not allowed.any():
        return np.asarray(np.rint(guess), np.int64), 0.0
    scored = np.where(allowed, ncc, -np.inf)
    k = np.unravel_index(int(np.argmax(scored)), scored.shape)
    return np.array([sx[k[0]], sy[k[1]]], np.int64), float(scored[k])


def _seam_centres(lo: np.ndarray, hi: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Patch centres (n, 2) covering [lo, hi) with patches of `size`, half a patch apart."""
    axes = []
    for a in range(2):
        half = size[a] // 2
        first, last = lo[a] + half, hi[a] - (size[a] - half)
        step = max(size[a] // 2, 1)
        count = max(int((last - first) // step) + 1, 1)
        axes.append(np.linspace(first, max(first, last), count).round().astype(np.int64))
    gx, gy = np.meshgrid(*axes, indexing="ij")
    return np.column_stack([gx.ravel(), gy.ravel()])


def seam_matches(
    first: np.ndarray, second: np.ndarray, offset: np.ndarray, params: MatchParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first points, second points, confidence) of patches along the overlap at `offset`."""
    lo, hi = _overlap(offset, first.shape, second.shape)
    lo, hi = lo + 1, hi - 1  # a pixel of slack for the sub-pixel recut
    size = np.minimum(params.patch, hi - lo) // 2 * 2
    if (size < params.min_overlap).any():
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    window = hann(size)
    a_img, b_img = first.astype(np.float32), second.astype(np.float32)
    found_a, found_b, conf = [], [], []
    for centre in _seam_centres(lo, hi, size):
        h = size // 2
        a = a_img[centre[0] - h[0] : centre[0] + h[0], centre[1] - h[1] : centre[1] + h[1]]
        hit = match_patch(a, b_img, centre, centre - offset, window, params.upsample)
        if hit is None:
            continue
        displacement, confidence = hit
        found_a.append(centre.astype(np.float64))
        found_b.append(centre + displacement)  # where the content is in `second`
        conf.append(confidence)
    if not conf:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    return np.array(found_a), np.array(found_b), np.array(conf)


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


def match_tiles(
    tiles: list[np.ndarray], stage: np.ndarray, params: MatchParams
) -> list[TileMatches]:
    """Matches of every overlapping pair of `tiles` (arrays [x, y]) at `stage` positions.

    Coarse offsets that disagree with the tree of the best ones (`tree_positions`) by more than
    `CONSISTENT_PX` are searched again near the tree's offset; pairs the tree says do not
    overlap are dropped."""
    shapes = [t.shape for t in tiles]
    coarse = {
        (i, j): coarse_offset(tiles[i], tiles[j], stage[j] - stage[i], params)
        for i, j in overlapping_pairs(stage, shapes, params)
    }
    good = {pair: found for pair, found in coarse.items() if found[1] >= params.min_score}
    positions = tree_positions(len(tiles), good, stage)
    near = replace(params, max_offset=CONSISTENT_PX)
    out = []
    for (i, j), (offset, score) in coarse.items():
        implied = np.rint(positions[j] - positions[i])
        lo, hi = _overlap(implied, shapes[i], shapes[j])
        if ((hi - lo) < params.min_overlap).any():
            continue  # not neighbours after all
        if score < params.min_score or np.abs(offset - implied).max() > CONSISTENT_PX:
            offset, score = coarse_offset(tiles[i], tiles[j], implied, near)
        if score < params.min_score:
            points = (np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
        else:
            points = seam_matches(tiles[i], tiles[j], offset, params)
        out.append(TileMatches(i, j, *points, offset.astype(np.float64), score))
    return out


def refine_matches(
    tiles: list[np.ndarray], transforms: list, matches: list[TileMatches], params: MatchParams
) -> list[TileMatches]:
    """The seam matches measured again with the second tile's patch warped into the first's
    frame by the solved `transforms` (a `TileTransform` per tile).

    A patch match assumes the two views differ by a shift within the patch; near a corner the
    two tiles' rotations and lens distortion bend them apart (0.5-1 px errors on real EM). Once
    warped by a close solution, what is left is a small shift, measured without that bias."""
    images = [t.astype(np.float32) for t in tiles]
    splines: dict[int, CubicSampler] = {}  # the second tiles', prefiltered once each
    out = []
    for m in matches:
        if not len(m.confidence):
            out.append(m)
            continue
        first, second = transforms[m.first], transforms[m.second]
        lo, hi = _overlap(np.rint(m.offset), tiles[m.first].shape, tiles[m.second].shape)
        size = (np.minimum(params.patch, hi - lo - 2) // 2 * 2).astype(np.int64)
        half = size // 2
        window = hann(size)
        if m.second not in splines:
            splines[m.second] = CubicSampler(images[m.second])
        grid = np.stack(
            np.meshgrid(np.arange(-half[0], half[0]), np.arange(-half[1], half[1]), indexing="ij"),
            axis=-1,
        ).reshape(-1, 2)
        moved = []
        for centre in m.first_points:
            a = images[m.first][
                int(centre[0]) - half[0] : int(centre[0]) + half[0],
                int(centre[1]) - half[1] : int(centre[1]) + half[1],
            ]
            where = second.inverse(first.forward(centre + grid))
            b = splines[m.second].sample(where).reshape(a.shape)
            s = phase_shift((a - a.mean()) * window, (b - b.mean()) * window, params.upsample)
            moved.append(second.inverse(first.forward((centre + s)[None]))[0])
        out.append(replace(m, second_points=np.array(moved)))
    return out
