"""The scan's brightness shading (flat-field), estimated from the overlaps of a section's tiles.

Where two tiles overlap they see the same content at different tile pixels, so the ratio of
their brightness there is the ratio of the shading at those two pixels (times the tiles' gains).
In logs that is linear: log S(p) − log S(p') + g_i − g_j = log I_i(p) − log I_j(p'), with
log S a polynomial of the tile coordinates (no constant term) and g a gain per tile (summing to
0, before one common gain keeps the tiles' mean brightness). Every overlap pixel pair is an
equation (sampled, each weighted by the pixels it stands for); Huber weights keep misregistered
or damaged pixels from pulling. A mean over many tiles (the usual flat-field) needs hundreds of
tiles before content averages out; the overlaps give it from one section's nine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from petavox.tasks.montage.tile_transforms import TileTransform, edge_points

SAMPLE_STEP = 2  # overlap pixels sampled every this many (or more: MAX_SAMPLES)
MAX_SAMPLES = 20_000  # at most about this many per pair, by a coarser grid (a 2048² tile's side
# overlap has 10⁵ at SAMPLE_STEP): the shading is smooth, a seam's step sure to a few % of its noise
OUTLINE_PX = 32  # a tile's edge is followed every this many px to bound an overlap,
BOX_MARGIN_PX = 4  # and the box grown by this (the edge bends a little in between)
SMOOTH_SIGMA = 1.5  # Gaussian smoothing of the tiles before sampling (noise, sub-pixel error)
EDGE_PX = 2  # tile pixels this near an edge are not sampled
HUBER_LOG = 0.05  # residuals beyond this (in log brightness) count linearly
ROUNDS = 3


@dataclass(frozen=True)
class Shading:
    """log S(p) = Σ coefficients · monomials of (x̂, ŷ) ∈ [−1, 1]², and log gain per tile."""

    shape: tuple[int, int]
    degree: int
    coefficients: np.ndarray
    gains: np.ndarray  # (tiles,) log gains

    @cached_property
    def log_image(self) -> np.ndarray:
        """log S at every tile pixel (w, h), with its mean over the tile removed (computed
        once: every tile's correction divides by it)."""
        half = (np.asarray(self.shape, np.float64) - 1) / 2
        ux, uy = ((np.arange(s) - c) / max(c, 1) for s, c in zip(self.shape, half))
        table = np.zeros((self.degree + 1, self.degree + 1))  # [a, b]: x̂^a ŷ^b, as _basis
        terms = [(t - b, b) for t in range(1, self.degree + 1) for b in range(t + 1)]
        for (a, b), c in zip(terms, self.coefficients):
            table[a, b] = c
        powers = [np.vander(u, self.degree + 1, increasing=True) for u in (ux, uy)]
        values = powers[0] @ table @ powers[1].T
        return values - values.mean()

    def correct(self, tile: np.ndarray, index: int) -> np.ndarray:
        """The tile (float32) with its shading and gain divided out."""
        factor = np.exp(self.log_image + self.gains[index])
        return (tile.astype(np.float32) / factor).astype(np.float32)

    def to_json(self) -> dict:
        return {
            "degree": self.degree,
            "coefficients": self.coefficients.tolist(),
            "log_gains": self.gains.tolist(),
        }

    @classmethod
    def from_json(cls, shape: tuple[int, int], value: dict) -> Shading:
        return cls(
            shape,
            int(value["degree"]),
            np.asarray(value["coefficients"], np.float64),
            np.asarray(value["log_gains"], np.float64),
        )

    @classmethod
    def none(cls, shape: tuple[int, int], tiles: int, degree: int = 0) -> Shading:
        return cls(shape, degree, np.zeros(_terms(degree)), np.zeros(tiles))


def _terms(degree: int) -> int:
    return (degree + 1) * (degree + 2) // 2 - 1


def _basis(points: np.ndarray, shape: tuple[int, int], degree: int) -> np.ndarray:
    """Monomials x̂^a ŷ^b, 0 < a + b ≤ degree, of points (n, 2) scaled to [−1, 1]."""
    half = (np.asarray(shape, np.float64) - 1) / 2
    u = (np.asarray(points, np.float64) - half) / np.maximum(half, 1)
    cols = [
        u[:, 0] ** (total - b) * u[:, 1] ** b
        for total in range(1, degree + 1)
        for b in range(total + 1)
    ]
    return np.column_stack(cols) if cols else np.zeros((len(u), 0))


def _outline(shape: tuple[int, int]) -> np.ndarray:
    """Points (n, 2) along a tile's edge, at most `OUTLINE_PX` apart."""
    counts = [max(16, math.ceil((s - 1) / OUTLINE_PX)) + 1 for s in shape]
    return edge_points(shape, (counts[0], counts[1]))


def overlap_bounds(
    shape: tuple[int, int], first: TileTransform, second: TileTransform
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) corners of the box of `first`'s sampled pixels (`EDGE_PX` in) that can land
    in `second`: second's edge brought into first's frame, grown by `BOX_MARGIN_PX`; empty
    (low > high) when the tiles do not overlap."""
    lo, hi = np.full(2, float(EDGE_PX)), np.asarray(shape, np.float64) - 1 - EDGE_PX
    edge = first.inverse(second.forward(_outline(shape)))
    if not np.isfinite(edge).all():
        return lo, hi
    low = np.maximum(np.floor(edge.min(axis=0)) - BOX_MARGIN_PX, lo)
    return low, np.minimum(np.ceil(edge.max(axis=0)) + BOX_MARGIN_PX, hi)


def overlap_points(
    shape: tuple[int, int],
    first: TileTransform,
    second: TileTransform,
    most: int | None = MAX_SAMPLES,
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of `first`, the same places in `second`) over their overlap, `EDGE_PX` away
    from either tile's edge: the points of the grid every `SAMPLE_STEP` px from `EDGE_PX`
    (or every k px, the least k giving at most about `most`: None, no limit) that do."""
    p_i, p_j, _ = overlap_samples(shape, first, second, most)
    return p_i, p_j


def overlap_samples(
    shape: tuple[int, int],
    first: TileTransform,
    second: TileTransform,
    most: int | None = MAX_SAMPLES,
) -> tuple[np.ndarray, np.ndarray, float]:
    """`overlap_points`, and the number of `SAMPLE_STEP` grid points each point stands for."""
    lo, hi = EDGE_PX, np.asarray(shape) - 1 - EDGE_PX
    low, high = overlap_bounds(shape, first, second)
    if np.any(low > high):
        return np.zeros((0, 2)), np.zeros((0, 2)), 1.0
    step = SAMPLE_STEP
    if most:
        step = max(step, math.ceil(math.sqrt(np.prod(high - low + 1) / most)))
    xs, ys = (
        lo + step * np.arange(math.ceil((a - lo) / step), math.floor((b - lo) / step) + 1)
        for a, b in zip(low, high)
    )
    gx, gy = np.meshgrid(xs.astype(np.float64), ys.astype(np.float64), indexing="ij")
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    there = second.inverse(first.forward(grid))
    inside = np.all((there >= lo) & (there <= hi), axis=1)
    return grid[inside], there[inside], (step / SAMPLE_STEP) ** 2


def smoothed_log(tile: np.ndarray, points: np.ndarray) -> np.ndarray:
    """log(1 + the tile smoothed by `SMOOTH_SIGMA`) at `points` (n, 2), linearly interpolated:
    smoothing only the crop around the points, as smoothing the whole tile would give."""
    from scipy import ndimage

    pad = int(4.0 * SMOOTH_SIGMA + 0.5) + 2  # the filter's reach (truncate 4), interpolation's
    low = np.maximum(np.floor(points.min(axis=0)).astype(int) - pad, 0)
    high = np.minimum(np.ceil(points.max(axis=0)).astype(int) + pad + 1, tile.shape)
    crop = tile[low[0] : high[0], low[1] : high[1]]
    smooth = np.log1p(ndimage.gaussian_filter(crop, SMOOTH_SIGMA, output=np.float64))
    return ndimage.map_coordinates(smooth, (points - low).T, order=1)


def _samples(tiles, transforms, pairs) -> tuple[list, list, list, list]:
    """For each overlapping pair: tile indices, sample count and weight (the `SAMPLE_STEP`
    grid points a sample stands for), pixels in each tile, log brightness there."""
    index, at_i, at_j, diff = [], [], [], []
    for i, j in pairs:
        p_i, p_j, weight = overlap_samples(
            tiles[0].shape, transforms[i], transforms[j], MAX_SAMPLES
        )
        if len(p_i) < 10:
            continue
        index.append((i, j, len(p_i), weight))
        at_i.append(p_i)
        at_j.append(p_j)
        diff.append(smoothed_log(tiles[i], p_i) - smoothed_log(tiles[j], p_j))
    return index, at_i, at_j, diff


def seam_steps(
    images: list[np.ndarray], transforms: list[TileTransform], pairs: list
) -> list[dict[str, float]]:
    """Per pair, how two (corrected) tiles disagree over their overlap: `step`, the mean
    brightness difference (what a hard cut between them would show), and `noise`, the
    standard deviation of the pixel differences over √2 (each tile's own noise, plus any
    misregistration); a seam is invisible when the step is below the noise."""
    from scipy import ndimage

    out = []
    for i, j in pairs:
        p_i, p_j = overlap_points(images[0].shape, transforms[i], transforms[j], MAX_SAMPLES)
        if len(p_i) < 10:
            continue
        d = ndimage.map_coordinates(images[i], p_i.T, order=1) - ndimage.map_coordinates(
            images[j], p_j.T, order=1
        )
        out.append(
            {
                "tiles": [i, j],
                "step": round(float(abs(d.mean())), 3),
                "noise": round(float(d.std() / np.sqrt(2)), 3),
            }
        )
    return out


def _robust_fit(design: np.ndarray, rhs: np.ndarray, area: np.ndarray, gauge: np.ndarray):
    """Least squares of `design` · x = `rhs` (rows weighted by `area`, Huber-reweighted
    `ROUNDS` times) with the rows `gauge` · x = 0 at weight 1, by its normal equations (a few
    unknowns, many rows; the gauge keeps them well posed)."""
    prior = gauge.T @ gauge
    weight = area
    for _ in range(ROUNDS):
        normal = (design * weight[:, None]).T @ design + prior
        solution = np.linalg.lstsq(normal, design.T @ (weight * rhs), rcond=None)[0]
        residual = np.abs(design @ solution - rhs)
        weight = area * np.minimum(1.0, HUBER_LOG / np.maximum(residual, 1e-12))
    return solution


def estimate_shading(
    tiles: list[np.ndarray], transforms: list[TileTransform], pairs: list, degree: int = 3
) -> Shading:
    """The section's shading and tile gains from the overlaps of `pairs` ((i, j) tile indices)."""
    shape = tiles[0].shape
    n, terms = len(tiles), _terms(degree)
    index, at_i, at_j, diff = _samples(tiles, transforms, pairs)
    if not index or degree == 0:
        return Shading.none(shape, n, degree)
    rows = []
    for (i, j, count, _), p_i, p_j in zip(index, at_i, at_j):
        gains = np.zeros((count, n))
        gains[:, i], gains[:, j] = 1.0, -1.0
        rows.append(np.hstack([_basis(p_i, shape, degree) - _basis(p_j, shape, degree), gains]))
    # a sample of a pair sampled more coarsely stands for more pixels: the data's weight
    # against the gauge's does not depend on how densely it was sampled
    area = np.concatenate([np.full(count, weight) for _, _, count, weight in index])
    # Σ gains = 0, and a weak pull of each gain to 0: a linear shading term and a ramp of gains
    # across the grid explain the overlaps equally well; the pull gives it to the shading
    gauge = np.vstack(
        [
            np.concatenate([np.zeros(terms), np.ones(n)]),
            np.hstack([np.zeros((n, terms)), np.eye(n)]),
        ]
    )
    solution = _robust_fit(np.vstack(rows), np.concatenate(diff), area, gauge)
    found = Shading(shape, degree, solution[:terms], solution[terms:])
    # one more gain for all: the corrected tiles keep the raw tiles' mean brightness (the
    # overlaps say nothing about it; dividing by a shading of mean log 0 darkens them); a
    # tile's corrected mean is exp(−gain) × mean(tile × exp(−log S)): one exp for all tiles
    factor = np.exp(-found.log_image)
    means = [np.einsum("xy,xy->", factor, t) / t.size for t in tiles]
    corrected = np.mean(np.exp(-found.gains) * means)
    level = np.log(max(corrected, 1e-6) / max(np.mean([t.mean() for t in tiles]), 1e-6))
    return Shading(shape, degree, found.coefficients, found.gains + level)
