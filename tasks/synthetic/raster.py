"""Rasterising into voxel volumes indexed [x, y, z] whose z voxels are `aniso` times longer
than x and y: balls, stamps of many balls, the box around a ball, membrane growth; and the
smooth random curves (in physical units) that tubes are stamped along."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

STEP = 1.0  # centreline sampling step, xy voxels


@lru_cache(maxsize=256)
def ball(radius: float, aniso: float) -> np.ndarray:
    """Integer voxel offsets (n, 3) within `radius` (physical units) of the origin."""
    r, rz = int(np.ceil(radius)), int(np.ceil(radius / aniso))
    g = np.mgrid[-r : r + 1, -r : r + 1, -rz : rz + 1].reshape(3, -1).T
    d2 = g[:, 0] ** 2 + g[:, 1] ** 2 + (g[:, 2] * aniso) ** 2
    return g[d2 <= max(radius, 0.0) ** 2]


def stamp(vol: np.ndarray, pts: np.ndarray, radii: np.ndarray, value: int, aniso: float) -> None:
    """Write `value` into the still-empty voxels of balls around physical points `pts`."""
    vox = np.rint(pts / (1.0, 1.0, aniso)).astype(np.int64)
    rq = np.round(np.asarray(radii) * 2) / 2
    flat, shape = vol.reshape(-1), np.array(vol.shape)
    for r in np.unique(rq):
        c = (vox[rq == r][:, None, :] + ball(float(r), aniso)[None]).reshape(-1, 3)
        c = c[np.all((c >= 0) & (c < shape), axis=1)]
        idx = np.ravel_multi_index(c.T, vol.shape)
        idx = idx[flat[idx] == 0]
        flat[idx] = value


def bbox(shape, centre, radius: float, aniso: float):
    """Slices of the voxels within `radius` of a physical point, and their physical coordinates."""
    scale = np.array([1.0, 1.0, aniso])
    c, half = centre / scale, radius / scale
    lo = np.maximum(np.floor(c - half).astype(int), 0)
    hi = np.minimum(np.ceil(c + half).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None, None
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    axes = [np.arange(a, b) * s for a, b, s in zip(lo, hi, scale)]
    return sl, np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def membrane_growth(width: float) -> int:
    """In-plane dilation steps of the one-voxel membrane for a membrane width."""
    return max(0, round((width - 1) / 2))


def smooth_noise(rng: np.random.Generator, n: int, dims: int, corr: float) -> np.ndarray:
    """Unit-variance noise of length n, correlated over `corr` samples."""
    white = rng.standard_normal((n, dims))
    return ndimage.gaussian_filter1d(white, corr, axis=0, mode="nearest") * np.sqrt(
        2 * np.sqrt(np.pi) * corr
    )


def trace(rng, start, direction, n_steps, lo, hi, wobble: float = 0.45) -> np.ndarray:
    """A smooth random curve from `start`, kept while inside the box [lo, hi]; `wobble` is how
    far (relative) its local direction strays from `direction`."""
    d = direction + wobble * smooth_noise(rng, n_steps, 3, 12.0)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    pts = start + STEP * np.cumsum(d, axis=0)
    out = np.flatnonzero(np.any((pts < lo) | (pts > hi), axis=1))
    return pts[: out[0]] if out.size else pts


def random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)
