"""The scan's brightness shading (flat-field), estimated from the overlaps of a section's tiles.

Where two tiles overlap they see the same content at different tile pixels, so the ratio of
their brightness there is the ratio of the shading at those two pixels (times the tiles' gains).
In logs that is linear: log S(p) − log S(p') + g_i − g_j = log I_i(p) − log I_j(p'), with
log S a polynomial of the tile coordinates (no constant term) and g a gain per tile (summing to
0, before one common gain keeps the tiles' mean brightness). Every overlap pixel pair is an
equation; Huber weights keep misregistered or damaged
pixels from pulling. A mean over many tiles (the usual flat-field) needs hundreds of tiles
before content averages out; the overlaps give it from one section's nine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from petavox.tasks.montage.tile_transforms import TileTransform

SAMPLE_STEP = 2  # overlap pixels sampled every this many
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
        xs, ys = (np.arange(s, dtype=np.float64) for s in self.shape)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        points = np.column_stack([gx.ravel(), gy.ravel()])
        values = _basis(points, self.shape, self.degree) @ self.coefficients
        return (values - values.mean()).reshape(self.shape)

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


def overlap_points(
    shape: tuple[int, int], first: TileTransform, second: TileTransform
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels of `first`, the same places in `second`) every `SAMPLE_STEP` px over their
    overlap, `EDGE_PX` away from either tile's edge."""
    lo, hi = EDGE_PX, np.asarray(shape) - 1 - EDGE_PX
    xs, ys = (np.arange(lo, h + 1, SAMPLE_STEP, dtype=np.float64) for h in hi)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    there = second.inverse(first.forward(grid))
    inside = np.all((there >= lo) & (there <= hi), axis=1)
    return grid[inside], there[inside]


def _samples(tiles, transforms, pairs) -> tuple[list, list, list, list]:
    """For each overlapping pair: tile indices, pixels in each tile, log brightness there."""
    from scipy import ndimage

    smooth = [np.log1p(ndimage.gaussian_filter(t.astype(np.float64), SMOOTH_SIGMA)) for t in tiles]
    index, at_i, at_j, diff = [], [], [], []
    for i, j in pairs:
        p_i, p_j = overlap_points(tiles[0].shape, transforms[i], transforms[j])
        if len(p_i) < 10:
            continue
        v_i = ndimage.map_coordinates(smooth[i], p_i.T, order=1)
        v_j = ndimage.map_coordinates(smooth[j], p_j.T, order=1)
        index.append((i, j, len(p_i)))
        at_i.append(p_i)
        at_j.append(p_j)
        diff.append(v_i - v_j)
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
        p_i, p_j = overlap_points(images[0].shape, transforms[i], transforms[j])
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
    for (i, j, count), p_i, p_j in zip(index, at_i, at_j):
        gains = np.zeros((count, n))
        gains[:, i], gains[:, j] = 1.0, -1.0
        rows.append(np.hstack([_basis(p_i, shape, degree) - _basis(p_j, shape, degree), gains]))
    design, rhs = np.vstack(rows), np.concatenate(diff)
    # Σ gains = 0, and a weak pull of each gain to 0: a linear shading term and a ramp of gains
    # across the grid explain the overlaps equally well; the pull gives it to the shading
    gauge = np.vstack(
        [
            np.concatenate([np.zeros(terms), np.ones(n)]),
            np.hstack([np.zeros((n, terms)), np.eye(n)]),
        ]
    )
    weight = np.ones(len(rhs))
    for _ in range(ROUNDS):
        w = np.sqrt(weight)[:, None]
        solution = np.linalg.lstsq(
            np.vstack([design * w, gauge]),
            np.concatenate([rhs * w[:, 0], np.zeros(n + 1)]),
            rcond=None,
        )[0]
        residual = np.abs(design @ solution - rhs)
        weight = np.minimum(1.0, HUBER_LOG / np.maximum(residual, 1e-12))
    found = Shading(shape, degree, solution[:terms], solution[terms:])
    # one more gain for all: the corrected tiles keep the raw tiles' mean brightness (the
    # overlaps say nothing about it; dividing by a shading of mean log 0 darkens them)
    corrected = np.mean([found.correct(t, k).mean() for k, t in enumerate(tiles)])
    level = np.log(max(corrected, 1e-6) / max(np.mean([t.mean() for t in tiles]), 1e-6))
    return Shading(shape, degree, found.coefficients, found.gains + level)
