"""CLAHE per section on a tile grid fixed in volume coordinates, so a chunk's result is the
whole volume's.

Written here rather than taken from scikit-image: `exposure.equalize_adapthist` rescales its
input to the image's own min..max and its output again, and lays its tiles from the image's
corner, so the same voxels give other values in another crop (another chunking). Here the
tiles are ``tile × tile`` squares counted from the volume's origin; each tile's clipped
histogram (over the voxels the volume has in it, masked ones left out) gives a lookup table,
and every voxel is the bilinear blend of the tables of the four tile centres around it, as in
Zuiderveld's CLAHE. A chunk that reads the tiles around its write box (`tile_read_box`) sees
whole tiles, so its tables, and its voxels, are those of a whole-volume run, exactly.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.geometry import Box

LEVELS = 256


def tile_read_box(write: Box, volume: Box, tile: int) -> Box:
    """The box of whole tiles (in x, y; the write box's sections in z) whose tables the voxels
    of `write` blend: the tiles within half a tile of it, clipped to the volume."""
    start, stop = list(write.start), list(write.stop)
    for axis in (0, 1):
        origin = volume.start[axis]
        first = (write.start[axis] - tile // 2 - origin) // tile
        last = -(-(write.stop[axis] + tile // 2 - origin) // tile)
        start[axis] = max(volume.start[axis], origin + first * tile)
        stop[axis] = min(volume.stop[axis], origin + last * tile)
    return Box(tuple(start), tuple(stop))


def tile_tables(section: np.ndarray, valid: np.ndarray, tile: int, clip: float) -> np.ndarray:
    """(tiles x, tiles y, 256) lookup tables to 1..255 of the tiles of one uint8 section whose
    first voxel starts a tile; a tile without valid voxels maps each value to itself."""
    nx, ny = -(-section.shape[0] // tile), -(-section.shape[1] // tile)
    tables = np.empty((nx, ny, LEVELS), np.float64)
    identity = np.clip(np.arange(LEVELS, dtype=np.float64), 1, 255)
    for i in range(nx):
        for j in range(ny):
            part = (slice(i * tile, (i + 1) * tile), slice(j * tile, (j + 1) * tile))
            values = section[part][valid[part]]
            if values.size == 0:
                tables[i, j] = identity
                continue
            hist = np.bincount(values, minlength=LEVELS).astype(np.float64)
            limit = max(1.0, clip * values.size)
            excess = np.maximum(hist - limit, 0).sum()
            hist = np.minimum(hist, limit) + excess / LEVELS  # clipped counts spread evenly
            cdf = np.cumsum(hist) / hist.sum()
            tables[i, j] = 1 + 254 * cdf
    return tables


def _blend_weights(positions: np.ndarray, tile: int, count: int) -> tuple:
    """Tile indices (lower, upper) and the upper's weight for voxel positions counted from the
    first tile's start; beyond the outer tile centres only the outer tile counts."""
    f = (positions + 0.5) / tile - 0.5  # in units of tiles, 0 at the first tile's centre
    low = np.clip(np.floor(f).astype(np.int64), 0, count - 1)
    high = np.minimum(low + 1, count - 1)
    weight = np.clip(f - low, 0.0, 1.0)
    weight[high == low] = 0.0
    return low, high, weight


def clahe_section(
    section: np.ndarray, valid: np.ndarray, tile: int, clip: float, window: tuple[slice, slice]
) -> np.ndarray:
    """CLAHE of `window` (x, y slices) of a uint8 section whose first voxel starts a tile;
    invalid voxels come out 0, valid ones 1..255."""
    tables = tile_tables(section, valid, tile, clip)
    xs = np.arange(section.shape[0])[window[0]]
    ys = np.arange(section.shape[1])[window[1]]
    x0, x1, wx = _blend_weights(xs, tile, tables.shape[0])
    y0, y1, wy = _blend_weights(ys, tile, tables.shape[1])
    values = section[window].astype(np.int64)
    wx, wy = wx[:, None], wy[None, :]

    def at(ix: np.ndarray, iy: np.ndarray) -> np.ndarray:
        return tables[ix[:, None], iy[None, :], values]

    out = (1 - wx) * ((1 - wy) * at(x0, y0) + wy * at(x0, y1)) + wx * (
        (1 - wy) * at(x1, y0) + wy * at(x1, y1)
    )
    result = np.clip(np.round(out), 1, 255).astype(np.uint8)
    result[~valid[window]] = 0
    return result
