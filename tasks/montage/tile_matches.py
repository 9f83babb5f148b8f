"""Matches between overlapping tiles of one section: a coarse offset, then patches on the seam.

For each pair of tiles whose stage positions say they overlap, `tile_offsets` finds the whole
pixel offset of the second tile in the first's frame. Then patches along the overlap, cut
where the offset puts them, give sub-pixel point matches (`align`'s patch matcher, with
rectangular patches for a narrow overlap)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from petavox.tasks.align.flow import hann, match_patch, phase_shift
from petavox.tasks.montage.tile_offsets import coarse_offset, overlap_box, tree_positions
from petavox.tasks.montage.tile_render import CubicSampler

CONSISTENT_PX = 4  # a coarse offset this far from the spanning tree's is searched again
GUIDE_SCALE = 8  # a seam at least 2× this many patches long is matched coarsely first
GUIDE_MIN_CONFIDENCE = 0.3  # coarse patch matches trusted to guide the fine ones
WARP_STEP = 8  # px between the exactly mapped points of a re-measured patch
GUIDE_OUTLIER_PX = 3.0  # a coarse match this far off the guide's affine is left out of it


@dataclass(frozen=True, kw_only=True)
class MatchParams:
    max_offset: float = 50.0  # largest error of a tile's stage position relative to a neighbour
    patch: int = 32  # side of a seam patch along the seam (px)
    min_overlap: int = 8  # narrowest overlap worth matching (px)
    upsample: int = 20  # sub-pixel precision 1/upsample
    min_score: float = 0.2  # a coarse offset whose correlation is lower matches nothing
    max_rotation_deg: float = 1.0  # largest rotation of a tile against the stage's axes


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


def overlapping_pairs(stage: np.ndarray, shapes: list[tuple], params: MatchParams) -> list:
    """(i, j), i < j, of the tiles whose rectangles could share `min_overlap` px in both
    directions when each stage position may be off by up to `max_offset` / 2."""
    pairs = []
    for i in range(len(stage)):
        for j in range(i + 1, len(stage)):
            lo, hi = overlap_box(stage[j] - stage[i], shapes[i], shapes[j])
            if ((hi - lo) + params.max_offset >= params.min_overlap).all():
                pairs.append((i, j))
    return pairs


def _seam_box(offset: np.ndarray, first: tuple, second: tuple, patch: int):
    """(lo, hi, patch size) of the seam patches over the overlap at `offset`: the overlap less
    a pixel each side (slack for the sub-pixel recut), patches `patch` long or the overlap's
    width, even."""
    lo, hi = overlap_box(offset, first, second)
    lo, hi = lo + 1, hi - 1
    return lo, hi, (np.minimum(patch, hi - lo) // 2 * 2).astype(np.int64)


def _seam_centres(lo: np.ndarray, hi: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Patch centres (n, 2) covering [lo, hi) with patches of `size`, half a patch apart."""
    axes = []
    for a in range(2):
        half = size[a] // 2
        first, last = lo[a] + half, hi[a] - (size[a] - half)
        step = max(size[a] // 2, 1)
        count = max(int((last - first) // step) + 1, 1)
        if count == 1:  # one patch: in the middle, room to move either way
            first = last = (first + max(first, last)) // 2
        axes.append(np.linspace(first, max(first, last), count).round().astype(np.int64))
    gx, gy = np.meshgrid(*axes, indexing="ij")
    return np.column_stack([gx.ravel(), gy.ravel()])


def _patch_matches(a_img, b_img, lo, hi, size, predict, params: MatchParams):
    """(first points, second points, confidence) of `size` patches over [lo, hi), each looked
    for in the second tile where `predict` (centres (n, 2) → positions) puts it."""
    window = hann(size)
    h = size // 2
    centres = _seam_centres(lo, hi, size)
    expected = np.rint(predict(centres.astype(np.float64))).astype(np.int64)
    found_a, found_b, conf = [], [], []
    for centre, at in zip(centres, expected):
        a = a_img[centre[0] - h[0] : centre[0] + h[0], centre[1] - h[1] : centre[1] + h[1]]
        hit = match_patch(a, b_img, centre, at, window, params.upsample)
        if hit is None:
            continue
        displacement, confidence = hit
        found_a.append(centre.astype(np.float64))
        found_b.append(centre + displacement)  # where the content is in `second`
        conf.append(confidence)
    if not conf:
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    return np.array(found_a), np.array(found_b), np.array(conf)


def _affine_guide(first_points: np.ndarray, second_points: np.ndarray, confidence: np.ndarray):
    """Where first-tile points are in the second tile by an affine fitted to confident
    matches, refitted without those more than `GUIDE_OUTLIER_PX` off; None without 3."""
    keep = confidence >= GUIDE_MIN_CONFIDENCE
    for _ in range(2):
        if keep.sum() < 3:
            return None
        centre = first_points[keep].mean(axis=0)
        design = np.column_stack([np.ones(int(keep.sum())), first_points[keep] - centre])
        moved = second_points[keep] - first_points[keep]
        # the displacement, not the position: along a line of matches the gradient across it
        # is not determined, and the least-norm solution then moves the patches alike
        coef = np.linalg.lstsq(design, moved, rcond=1e-6)[0]

        def predict(p: np.ndarray, coef=coef, centre=centre) -> np.ndarray:
            return p + np.column_stack([np.ones(len(p)), p - centre]) @ coef

        error = np.linalg.norm(predict(first_points) - second_points, axis=1)
        keep = keep & (error <= GUIDE_OUTLIER_PX)
    return predict


def seam_matches(
    first: np.ndarray, second: np.ndarray, offset: np.ndarray, params: MatchParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first points, second points, confidence) of patches along the overlap at `offset`.

    On a long seam the tiles' rotations move the content further apart along it than a patch
    can see (±1° over a 2048 px seam: ±35 px), so patches `GUIDE_SCALE` times longer are
    matched first, and an affine fitted to them says where to look for each patch."""
    lo, hi, size = _seam_box(offset, first.shape, second.shape, params.patch)
    if (size < params.min_overlap).any():
        return np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0)
    a_img, b_img = first.astype(np.float32, copy=False), second.astype(np.float32, copy=False)

    def predict(centres: np.ndarray) -> np.ndarray:
        return centres - offset

    # room to move: a guide patch as wide as the overlap would leave the tile on any shift
    guide = np.minimum(GUIDE_SCALE * params.patch, hi - lo - params.patch) // 2 * 2
    if ((hi - lo) >= 2 * GUIDE_SCALE * params.patch).any():
        coarse = _patch_matches(a_img, b_img, lo, hi, guide, predict, params)
        predict = _affine_guide(*coarse) or predict
    return _patch_matches(a_img, b_img, lo, hi, size, predict, params)


def match_tiles(
    tiles: list[np.ndarray], stage: np.ndarray, params: MatchParams
) -> list[TileMatches]:
    """Matches of every overlapping pair of `tiles` (arrays [x, y]) at `stage` positions.

    Coarse offsets that disagree with the tree of the best ones (`tree_positions`) by more than
    `CONSISTENT_PX` are searched again near the tree's offset; pairs the tree says do not
    overlap are dropped. On large tiles the bound grows with the tiles' rotations: a part of a
    seam at the far end of a tile rotated by θ is offset by θ × the tile's side."""
    images = [t.astype(np.float32, copy=False) for t in tiles]  # once, not per pair
    shapes = [t.shape for t in tiles]
    side = max((max(s) for s in shapes), default=0)
    consistent = max(CONSISTENT_PX, 2 * side * np.tan(np.deg2rad(params.max_rotation_deg)))
    coarse = {
        (i, j): coarse_offset(tiles[i], tiles[j], stage[j] - stage[i], params)
        for i, j in overlapping_pairs(stage, shapes, params)
    }
    good = {pair: found for pair, found in coarse.items() if found[1] >= params.min_score}
    positions = tree_positions(len(tiles), good, stage)
    near = replace(params, max_offset=consistent)
    out = []
    for (i, j), (offset, score) in coarse.items():
        implied = np.rint(positions[j] - positions[i])
        lo, hi = overlap_box(implied, shapes[i], shapes[j])
        if ((hi - lo) < params.min_overlap).any():
            continue  # not neighbours after all
        if score < params.min_score or np.abs(offset - implied).max() > consistent:
            offset, score = coarse_offset(tiles[i], tiles[j], implied, near)
        if score < params.min_score:
            points = (np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0))
        else:
            points = seam_matches(images[i], images[j], offset, params)
        out.append(TileMatches(i, j, *points, offset.astype(np.float64), score))
    return out


def _linear_weights(half: int, nodes: np.ndarray) -> np.ndarray:
    """(2·half, len(nodes)) weights interpolating pixel offsets −half … half−1 from `nodes`."""
    pixels = np.arange(-half, half, dtype=np.float64)
    k = np.clip(np.searchsorted(nodes, pixels, side="right") - 1, 0, len(nodes) - 2)
    frac = (pixels - nodes[k]) / (nodes[k + 1] - nodes[k])
    out = np.zeros((len(pixels), len(nodes)))
    out[np.arange(len(pixels)), k] = 1 - frac
    out[np.arange(len(pixels)), k + 1] = frac
    return out


def _patch_warp(first, second, centres: np.ndarray, half: np.ndarray) -> np.ndarray:
    """(n, 2·half₀, 2·half₁, 2): where the pixels of each patch of `first` around `centres` are
    in `second`. Mapped exactly every `WARP_STEP` px and linearly between (the map is smooth:
    a lens polynomial and a mesh of 32 px cells; exact at every pixel, the inverse's Newton
    steps were four fifths of the re-measurement's time on 2048 px tiles)."""
    nodes = [np.linspace(-h, h, math.ceil(2 * h / WARP_STEP) + 1) for h in half]
    gx, gy = np.meshgrid(*nodes, indexing="ij")
    coarse = np.column_stack([gx.ravel(), gy.ravel()])
    exact = second.inverse(first.forward((centres[:, None] + coarse).reshape(-1, 2)))
    exact = exact.reshape(len(centres), len(nodes[0]), len(nodes[1]), 2)
    wx, wy = (_linear_weights(int(h), n) for h, n in zip(half, nodes))
    return np.einsum("ia,nabc,jb->nijc", wx, exact, wy)


def refine_matches(
    tiles: list[np.ndarray], transforms: list, matches: list[TileMatches], params: MatchParams
) -> list[TileMatches]:
    """The seam matches measured again with the second tile's patch warped into the first's
    frame by the solved `transforms` (a `TileTransform` per tile).

    A patch match assumes the two views differ by a shift within the patch; near a corner the
    two tiles' rotations and lens distortion bend them apart (0.5-1 px errors on real EM). Once
    warped by a close solution, what is left is a small shift, measured without that bias."""
    images = [t.astype(np.float32, copy=False) for t in tiles]
    splines: dict[int, CubicSampler] = {}  # the second tiles', prefiltered once each
    out = []
    for m in matches:
        if not len(m.confidence):
            out.append(m)
            continue
        first, second = transforms[m.first], transforms[m.second]
        _, _, size = _seam_box(
            np.rint(m.offset), tiles[m.first].shape, tiles[m.second].shape, params.patch
        )
        half = size // 2
        window = hann(size)
        if m.second not in splines:
            splines[m.second] = CubicSampler(images[m.second])
        corners = m.first_points.astype(np.int64) - half
        where = _patch_warp(first, second, m.first_points, half)
        warped = splines[m.second].sample(where.reshape(-1, 2)).reshape(len(corners), *size)
        shifts = []
        for corner, b in zip(corners, warped):
            a = images[m.first][corner[0] : corner[0] + size[0], corner[1] : corner[1] + size[1]]
            shifts.append(
                phase_shift((a - a.mean()) * window, (b - b.mean()) * window, params.upsample)
            )
        moved = second.inverse(first.forward(m.first_points + np.array(shifts)))
        out.append(replace(m, second_points=moved))
    return out
