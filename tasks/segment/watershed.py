"""Segmentation kernels on one block: watershed fragments and connected components.

Arrays are indexed [x, y, z] like the rest of petavox. A boundary map is float in [0, 1] (or
uint8 0-255), high on membranes; affinities are 3 channels [x, y, z, c] where channel c links a
voxel to its predecessor along axis c (0 = x, 1 = y, 2 = z), high when they belong together.

Watershed fragments: every voxel is flooded (scikit-image's watershed) from seeds of the
(optionally smoothed) boundary map. `threshold` seeds are the connected components of the map
below `seed_threshold`; a thin gap in a membrane joins two cells' seeds, and so merges them.
`distance` seeds are the maxima of the distance transform of that same foreground (in nm, so
anisotropic stacks work): a gap is a narrow neck with a low distance, so each cell keeps its own
seed. Distance seeds oversegment a little, which the agglomeration repairs; on CNN maps with
occasional gaps they are far more robust (README, "Inference"). The mean-affinity agglomeration
runs over the whole volume, chunk by chunk (`petavox.tasks.segment.agglomeration`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np


@dataclass(frozen=True, kw_only=True)
class WatershedParams:
    """Defaults were chosen on gala `train` (see README, "Segmentation")."""

    smoothing: float = 0.5  # Gaussian sigma (voxels) applied before seeding and flooding
    seed_threshold: float = 0.15  # boundary below this is seed interior (threshold) or foreground
    seeds: str = "threshold"  # threshold | distance
    seed_radius: float = 3.0  # distance seeds: one maximum per this radius (in voxels along x)
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)  # relative x, y, z sizes


def as_boundary(data: np.ndarray) -> np.ndarray:
    """A float32 boundary map in [0, 1] from float data or uint8 0-255 (x,y,z)."""
    if data.dtype == np.uint8:
        return data.astype(np.float32) / np.float32(255)
    return np.asarray(data, dtype=np.float32)


def as_affinities(data: np.ndarray) -> np.ndarray:
    """float32 affinities in [0, 1] (x,y,z,c) from float data or uint8 0-255."""
    return as_boundary(data)


def affinities_from_boundary(boundary: np.ndarray) -> np.ndarray:
    """x,y,z,c affinities: 1 - the larger boundary value of the two voxels an edge links."""
    affs = np.zeros((*boundary.shape, 3), dtype=np.float32)
    for axis in range(3):
        here = [slice(None)] * 3
        prev = [slice(None)] * 3
        here[axis], prev[axis] = slice(1, None), slice(None, -1)
        affs[(*here, axis)] = 1 - np.maximum(boundary[tuple(here)], boundary[tuple(prev)])
    return affs


def boundary_from_affinities(affs: np.ndarray) -> np.ndarray:
    """A boundary map from affinities: 1 - the mean affinity of a voxel's three edges."""
    return 1 - affs.mean(axis=3, dtype=np.float32)


def boundary_of(data: np.ndarray) -> np.ndarray:
    """The boundary the watershed floods, from what `segment` reads: a boundary map (x,y,z) or
    affinities (x,y,z,c), uint8 0-255 or float 0-1."""
    if data.ndim == 4:
        return boundary_from_affinities(as_affinities(data))
    return as_boundary(data)


def affinities_of(data: np.ndarray) -> np.ndarray:
    """The affinities the agglomeration scores contacts with, from the same input."""
    if data.ndim == 4:
        return as_affinities(data)
    return affinities_from_boundary(as_boundary(data))


def watershed_fragments(boundary: np.ndarray, params: WatershedParams) -> np.ndarray:
    """uint64 fragments 1..n: flood of the boundary map from low-boundary seed components."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    relief = ndimage.gaussian_filter(boundary, params.smoothing) if params.smoothing else boundary
    if params.seeds == "distance":
        seeds = distance_seeds(relief < params.seed_threshold, params)
    else:
        seeds = cc3d.connected_components(relief < params.seed_threshold, connectivity=6)
    if seeds.max() == 0:  # no interior anywhere: one fragment, agglomeration has nothing to do
        return np.ones(boundary.shape, dtype=np.uint64)
    return watershed(relief, seeds).astype(np.uint64)


def distance_seeds(foreground: np.ndarray, params: WatershedParams) -> np.ndarray:
    """Seed labels at the local maxima of the foreground's distance to the nearest boundary."""
    from scipy import ndimage

    size = np.asarray(params.voxel_size, dtype=np.float64) / min(params.voxel_size)
    distance = ndimage.distance_transform_edt(foreground, sampling=size)
    footprint = [2 * max(1, round(params.seed_radius / s)) + 1 for s in size]
    peaks = (distance == ndimage.maximum_filter(distance, size=footprint)) & foreground
    return cc3d.connected_components(peaks, connectivity=26)


def cc_segment(boundary: np.ndarray, threshold: float, connectivity: int) -> np.ndarray:
    """uint64 labels: connected components of boundary < threshold; 0 on membrane."""
    labels = cc3d.connected_components(boundary < threshold, connectivity=connectivity)
    return labels.astype(np.uint64, copy=False)
