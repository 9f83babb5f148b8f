"""A box of a montaged section: each tile sampled where it lands, seams blended by feathering.

A section pixel q takes every tile that covers it: the tile pixel p = F⁻¹(q) (cubic spline
sample of the flat-field corrected tile: bilinear blurs membranes a CNN then misses), weighted
by p's distance to the tile's nearest edge, so a tile fades out towards its border and two
tiles cross-fade over their whole overlap (no visible step where one tile ends). A pixel no
tile covers is 0. Each pixel depends only on its own position and the tiles, never on the box
it is rendered in: the rendering does not depend on the task shape.

Newton's iteration for F⁻¹ at every pixel would be most of the work: it runs only every
GRID_STEP px of the section (multiples of it, whatever the box), bilinear between, and made
exact again (≪ 0.01 px) by NEWTON_STEPS elementwise steps at each pixel.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.align.displacement import grid_points
from petavox.tasks.montage.tile_transforms import TileTransform

FOOTPRINT_SLACK = 2.0  # px around a tile's sampled outline that may still be inside it
NEWTON_STEPS = 2  # per pixel after the interpolated guess: a mesh's kinks leave ~0.4 px
GRID_STEP = 16  # section px between the exact inverses a tile's map is interpolated from
SPLINE_PAD = 12  # edge pixels scipy pads with before a cubic prefilter in mode "nearest"


class CubicSampler:
    """A tile's cubic spline, prefiltered once: samples equal scipy's
    ``map_coordinates(image, ..., order=3, mode="nearest")`` bit for bit (which prefilters the
    whole image again on every call: per patch or per render box, that is most of the work)."""

    def __init__(self, image: np.ndarray) -> None:
        from scipy import ndimage

        self.shape: tuple[int, int] = (image.shape[0], image.shape[1])
        self.dtype = image.dtype
        padded = np.pad(image, SPLINE_PAD, mode="edge")
        self._coefficients = ndimage.spline_filter(padded, 3, output=np.float64, mode="nearest")

    def sample(self, points: np.ndarray) -> np.ndarray:
        """Values at tile pixels `points` (n, 2), edge values beyond the tile."""
        from scipy import ndimage

        return ndimage.map_coordinates(
            self._coefficients,
            (np.asarray(points, np.float64) + SPLINE_PAD).T,
            order=3,
            mode="nearest",
            prefilter=False,
            output=self.dtype,
        )


def feather(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Blending weight of tile pixels at coordinate arrays x, y: distance to the nearest edge
    (< 0 outside)."""
    return np.minimum(np.minimum(x, y), np.minimum(shape[0] - 1 - x, shape[1] - 1 - y))


def near_box(
    transform: TileTransform, start: tuple[int, int], stop: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The part [low, high) (x, y) of the box [start, stop) that the tile's footprint (with
    FOOTPRINT_SLACK) reaches, or None."""
    lo, hi = transform.footprint()
    low = np.maximum(np.ceil(lo - FOOTPRINT_SLACK).astype(np.int64), start)
    high = np.minimum(np.floor(hi + FOOTPRINT_SLACK).astype(np.int64) + 1, stop)
    return (low, high) if np.all(high > low) else None


def coarse_inverse(
    transform: TileTransform, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tile pixels (x, y arrays of the box's shape) landing on the section pixels of the box
    [start, stop): `TileTransform.inverse` exactly at the section positions that are multiples
    of GRID_STEP, bilinear between them. A pixel uses only the nodes of its own GRID_STEP cell,
    so its value does not depend on the box."""
    first, last = start // GRID_STEP, (stop - 1) // GRID_STEP + 1
    nodes = grid_points(first * GRID_STEP, (last + 1) * GRID_STEP, GRID_STEP)
    exact = transform.inverse(nodes).reshape(last[0] - first[0] + 1, -1, 2)
    (cx, fx), (cy, fy) = (
        (np.arange(a, b) // GRID_STEP - f, (np.arange(a, b) % GRID_STEP) / GRID_STEP)
        for a, b, f in zip(start, stop, first)
    )
    out = []
    for c in range(2):
        along_y = exact[:, cy, c] * (1 - fy) + exact[:, cy + 1, c] * fy
        out.append(along_y[cx] * (1 - fx)[:, None] + along_y[cx + 1] * fx[:, None])
    return out[0], out[1]


def tile_pixels(
    transform: TileTransform, start: np.ndarray, stop: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tile pixels (x, y arrays of the box's shape) landing on the section pixels of the box
    [start, stop): `coarse_inverse`, then NEWTON_STEPS steps of `TileTransform.inverse`'s
    iteration (the map is smooth within a mesh cell, but it bends where the tile's bilinear
    mesh crosses a cell edge: the steps take out what the bilinear guess misses there)."""
    x, y = coarse_inverse(transform, start, stop)
    (a, b), (c, d) = np.linalg.inv(np.asarray(transform.matrix))
    qx, qy = np.meshgrid(
        *(np.arange(lo, hi, dtype=np.float64) for lo, hi in zip(start, stop)), indexing="ij"
    )
    for _ in range(NEWTON_STEPS):
        fx, fy = transform.landing(x, y)
        fx -= qx
        fy -= qy
        x, y = x - (a * fx + b * fy), y - (c * fx + d * fy)
    return x, y


def render_box(
    images: list[CubicSampler | None],
    transforms: list[TileTransform],
    start: tuple[int, int],
    shape: tuple[int, int],
) -> np.ndarray:
    """The montaged section over the box at `start` of `shape` (x, y): float32, 0 where no
    tile lands. `images[k]` samples tile k (float32 [x, y], shading corrected), or is None when
    it cannot reach the box (see `tiles_touching`)."""
    origin = np.asarray(start, np.int64)
    total = np.zeros(shape)
    weights = np.zeros(shape)
    for image, transform in zip(images, transforms):
        near = None if image is None else near_box(transform, origin, origin + shape)
        if near is None:
            continue
        x, y = tile_pixels(transform, *near)
        weight = feather(x, y, image.shape)
        inside = weight >= 0
        # + 1e-3: a pixel on the very edge of its only tile still counts
        w = np.where(inside, weight + 1e-3, 0.0)
        values = np.zeros(x.shape)
        values[inside] = w[inside] * image.sample(np.column_stack([x[inside], y[inside]]))
        part = tuple(slice(lo, hi) for lo, hi in zip(near[0] - origin, near[1] - origin))
        total[part] += values
        weights[part] += w
    out = np.where(weights > 0, total / np.maximum(weights, 1e-12), 0.0)
    return out.astype(np.float32)


def tiles_touching(
    transforms: list[TileTransform], start: tuple[int, int], stop: tuple[int, int]
) -> list[int]:
    """Indices of the tiles whose footprint reaches the box [start, stop) (x, y): those the
    render will sample (`near_box`)."""
    low, high = np.asarray(start, np.int64), np.asarray(stop, np.int64)
    return [k for k, t in enumerate(transforms) if near_box(t, low, high) is not None]
