"""Synapse detection and partner assignment on one block of raw image + segmentation.

CLASSICAL DETECTOR (no trained model): clefts are the darkest thin structures on membranes
between two segments. A voxel is a cleft candidate when it lies on or next to a segment boundary
(label 0 or a label change), two different segments are within `contact_radius`, and the image
around it *inside the segments* is dark (the mean intensity of non-boundary voxels, Gaussian
weighted: the postsynaptic density and the vesicle cloud darken the cytoplasm next to a cleft,
while plain membrane, however thick, does not). Candidates are labelled (26-connected, cc3d);
a component is a cleft when it has `min_size` voxels, at most `max_extent` voxels on every axis
and a voxel darker than `seed_threshold`. Confidence grows with darkness and size. A cleft touching
the volume's outer faces is kept only with both partners found (`partners.kept_at_faces`).

Chunking: every block is a chunk's write box grown by a halo. A cleft belongs to the chunk
whose write box holds its owner voxel, the lowest of its voxels in global (z, y, x) order; its
synapse id is that voxel's linear index in the volume plus one. With a halo of at least
`required_halo`, every cleft of at most `max_extent` voxels is seen whole by its owner, with
exact features, and a component cut by the halo's outer face is wider than `max_extent` when its
lowest voxel is in the write box, so it is dropped; the synapse set is then the same for any
chunking (same ids, centroids, partners).

Partners and direction (`partners.synapse_row`, shared with the cleft-channel detector): rays
across the cleft vote for the segment on each side, the normal runs between the two partners'
voxels near the cleft, and the presynaptic side is the one with the denser vesicle cloud and the
fainter density right at the membrane.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.synapse.partners import (
    as_table,
    as_unit,
    kept_at_faces,
    linear_index,
    look,
    owned_clefts,
    synapse_row,
)

__all__ = ["DetectorParams", "boundaries", "detect", "linear_index", "no_data", "required_halo"]

NO_DATA_WIDTH = 4  # voxels: in-plane squares of 0 this wide are no data, not a dark cleft


@dataclass(frozen=True, kw_only=True)
class DetectorParams:
    """Thresholds of the classical detector; lengths in voxels along x (scaled per axis)."""

    sigma: float = 1.0  # Gaussian weighting of the cytoplasm darkness
    voxel_threshold: float = 0.3  # candidate voxels: cytoplasm darkness below this (0-1)
    seed_threshold: float = 0.19  # a cleft has a voxel darker than this
    contact_radius: int = 2  # two different segments within this of a candidate
    min_size: int = 15  # voxels
    max_extent: int = 20  # voxels on every axis; larger components are not clefts
    vesicle_depth: tuple[float, float] = (3.0, 6.0)  # slab of the vesicle cloud
    psd_depth: tuple[float, float] = (0.5, 3.0)  # slab of the postsynaptic density
    vesicle_threshold: float = 0.4  # image below this in a slab counts as dark (0-1)
    reach: int = 10  # how far rays look for the partners
    normal_radius: float = 6.0  # the partners' voxels this close to the cleft give its normal


def axis_scale(resolution: tuple[float, float, float]) -> np.ndarray:
    """Voxels per x voxel on each axis (1 for isotropic data)."""
    return resolution[0] / np.asarray(resolution, np.float64)


def required_halo(params: DetectorParams, resolution: tuple[float, float, float]) -> Vec3:
    """The smallest halo (per axis, voxels) with which the synapse set does not depend on the
    chunking: clefts of up to `max_extent` whole, their features exact and their partners
    within reach."""
    scale = axis_scale(resolution)
    gauss = np.floor(4.0 * params.sigma * scale + 0.5)  # scipy's kernel radius
    contact = np.maximum(1, np.rint(params.contact_radius * scale))
    # no data looks NO_DATA_WIDTH further, the boundary mask one more, then it dilates
    features = gauss + contact + NO_DATA_WIDTH + 2
    reach = np.ceil(look(params) * scale) + 2
    return Vec3.of(int(params.max_extent + v) for v in np.maximum(features, reach))


def boundaries(seg: np.ndarray) -> np.ndarray:
    """Label 0, and both sides of a contact between two non-zero labels."""
    out = seg == 0
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        lo, hi = seg[tuple(a)], seg[tuple(b)]
        change = (lo != hi) & (lo != 0) & (hi != 0)
        out[tuple(a)] |= change
        out[tuple(b)] |= change
    return out


def cytoplasm_darkness(img: np.ndarray, edge: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """The Gaussian-weighted (`sigma`, voxels per axis) mean image of the non-boundary voxels
    (not `edge`) around every voxel: dark beside a cleft (postsynaptic density, vesicles)."""
    inside = (~edge).astype(np.float32)
    weight = ndimage.gaussian_filter(inside, sigma)
    return ndimage.gaussian_filter(img * inside, sigma) / np.maximum(weight, 1e-3)


def candidates(
    img: np.ndarray, seg: np.ndarray, edge: np.ndarray, params: DetectorParams, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate mask and the cytoplasm darkness (`darkness`); `edge`: the `boundaries` of
    `seg`."""
    darkness = cytoplasm_darkness(img, edge, params.sigma * scale)
    size = tuple(int(2 * max(1, round(params.contact_radius * s)) + 1) for s in scale)
    top = np.iinfo(seg.dtype).max
    lowest = ndimage.minimum_filter(np.where(seg == 0, top, seg), size=size)
    highest = ndimage.maximum_filter(seg, size=size)
    two = (lowest != top) & (lowest != highest)
    near = ndimage.binary_dilation(edge, iterations=1)
    return near & two & (darkness < params.voxel_threshold), darkness


def detect(
    raw: np.ndarray,
    seg: np.ndarray,
    read: Box,
    write: Box,
    volume: Box,
    resolution: tuple[float, float, float],
    params: DetectorParams,
) -> dict[str, np.ndarray]:
    """The synapses this block owns as a synapse table (`table`): `raw` and `seg` cover `read` (the
    write box grown by at least `required_halo`, clipped to the `volume`)."""
    img, seg = as_unit(raw), np.where(no_data(raw), 0, seg)
    scale = axis_scale(resolution)
    edge = boundaries(seg)
    cand, darkness = candidates(img, seg, edge, params, scale)
    inner = write.grow(params.max_extent).intersection(read)
    keep = np.zeros_like(cand)
    keep[inner.slices(read.start)] = True
    cc = cc3d.connected_components(cand & keep, connectivity=26, out_dtype=np.uint32)
    res = np.asarray(resolution, np.float64)
    rows = []
    for voxels, where, synapse_id in owned_clefts(
        cc, read, write, volume, params.min_size, params.max_extent
    ):
        dark = darkness[tuple(voxels.T)]
        if dark.min() >= params.seed_threshold:
            continue
        row = synapse_row(where, voxels, img, seg, edge, res, params)
        if not kept_at_faces(row, where, volume):
            continue
        row.update(
            synapse_id=synapse_id,
            size=len(voxels),
            confidence=_confidence(float(dark.min()), len(voxels), params),
        )
        rows.append(row)
    return as_table(rows)


def no_data(raw: np.ndarray) -> np.ndarray:
    """Where the image has no data: in-plane runs of 0 at least NO_DATA_WIDTH wide (the black
    margin of an aligned section, a missing chunk) and the one-pixel rim around them
    (interpolated between data and black). A dark cleft may be 0 too, but never over a whole
    square of voxels (noise). No segment is there for the detector: such a margin is boundary,
    not dark cytoplasm."""
    square = np.ones((NO_DATA_WIDTH, NO_DATA_WIDTH, 1), bool)
    cores = ndimage.binary_erosion(np.asarray(raw) == 0, square)
    if not cores.any():
        return cores
    missing = ndimage.binary_dilation(cores, square)  # the opening of the zeros by the square
    return ndimage.binary_dilation(missing, np.ones((3, 3, 1), bool))


def _confidence(darkest: float, size: int, params: DetectorParams) -> float:
    depth = (params.voxel_threshold - darkest) / params.voxel_threshold
    return float(np.clip(depth, 0, 1) * size / (size + params.min_size))
