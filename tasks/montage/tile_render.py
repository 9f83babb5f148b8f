"""A box of a montaged section: each tile sampled where it lands, seams blended by feathering.

A section pixel q takes every tile that covers it: the tile pixel p = F⁻¹(q) (cubic spline
sample of the flat-field corrected tile: bilinear blurs membranes a CNN then misses), weighted
by p's distance to the tile's nearest edge, so a tile fades out towards its border and two
tiles cross-fade over their whole overlap (no visible step where one tile ends). A pixel no
tile covers is 0. Each pixel depends only on its own position and the tiles, never on the box
it is rendered in: the rendering does not depend on the task shape.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.align.displacement import grid_points
from petavox.tasks.montage.tile_transforms import TileTransform

FOOTPRINT_SLACK = 2.0  # px around a tile's sampled outline that may still be inside it
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


def feather(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Blending weight of tile pixels (n, 2): distance to the nearest edge (< 0 outside)."""
    far = np.asarray(shape, np.float64) - 1 - points
    return np.minimum(points.min(axis=1), far.min(axis=1))


def render_box(
    images: list[CubicSampler | None],
    transforms: list[TileTransform],
    start: tuple[int, int],
    shape: tuple[int, int],
) -> np.ndarray:
    """The montaged section over the box at `start` of `shape` (x, y): float32, 0 where no
    tile lands. `images[k]` samples tile k (float32 [x, y], shading corrected), or is None when
    it cannot reach the box (see `tiles_touching`)."""
    pixels = grid_points(start, (start[0] + shape[0], start[1] + shape[1]))
    total = np.zeros(len(pixels))
    weights = np.zeros(len(pixels))
    for image, transform in zip(images, transforms):
        if image is None:
            continue
        lo, hi = transform.footprint()
        near = np.all((pixels >= lo - FOOTPRINT_SLACK) & (pixels <= hi + FOOTPRINT_SLACK), axis=1)
        if not near.any():
            continue
        where = transform.inverse(pixels[near])
        weight = feather(where, image.shape)
        inside = weight >= 0
        values = image.sample(where[inside])
        target = np.flatnonzero(near)[inside]
        w = weight[inside] + 1e-3  # a pixel on the very edge of its only tile still counts
        total[target] += w * values
        weights[target] += w
    out = np.where(weights > 0, total / np.maximum(weights, 1e-12), 0.0)
    return out.reshape(shape).astype(np.float32)


def tiles_touching(
    transforms: list[TileTransform], start: tuple[int, int], stop: tuple[int, int]
) -> list[int]:
    """Indices of the tiles whose footprint reaches the box [start, stop) (x, y)."""
    out = []
    for k, t in enumerate(transforms):
        lo, hi = t.footprint()
        if np.all(lo - FOOTPRINT_SLACK < np.asarray(stop)) and np.all(
            hi + FOOTPRINT_SLACK >= np.asarray(start)
        ):
            out.append(k)
    return out
