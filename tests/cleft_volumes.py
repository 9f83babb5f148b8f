"""Synthetic volumes' clefts as the detectors' inputs: perfect probability channels (from the
generator's cleft labels and partners) and segmentations with the pipeline's kinds of error."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from petavox.tasks.ml.synapse_targets import synapse_flags


def filled(labels: np.ndarray) -> np.ndarray:
    """The labels grown into every 0 voxel by the nearest label: a segmentation that fills the
    membranes, as the pipeline's does."""
    index = ndimage.distance_transform_edt(labels == 0, return_distances=False, return_indices=True)
    return labels[tuple(index)]


def perfect(volume) -> np.ndarray:
    return np.where(volume.clefts > 0, 255, 0).astype(np.uint8)


def perfect_sides(volume) -> np.ndarray:
    """A perfect "synapses" model's output (x, y, z, 3) uint8: cleft, presynaptic side and
    postsynaptic side (`synapse_flags`) as 255."""
    table = volume.synapse_table
    flags = synapse_flags(volume.labels, volume.clefts, table["pre"], table["post"])
    return np.stack([np.where(flags & bit, 255, 0) for bit in (1, 2, 4)], -1).astype(np.uint8)


def split_behind_clefts(seg: np.ndarray, volume, depth: float) -> np.ndarray:
    """`seg` with every synapse's postsynaptic object cut in two by a plane parallel to its
    cleft, `depth` voxels behind the cleft centre: the part beyond the plane gets a new id (a
    split error of the segmentation right next to the synapse)."""
    seg = seg.copy()
    grid = np.stack(np.meshgrid(*(np.arange(s) for s in seg.shape), indexing="ij"), axis=-1)
    fresh = int(seg.max()) + 1
    for row in volume.synapse_table:
        centre = np.array([row["x"], row["y"], row["z"]])
        normal = np.array([row["nx"], row["ny"], row["nz"]])  # towards the presynaptic side
        beyond = (grid - centre) @ -normal > depth
        cut = (seg == row["post"]) & beyond
        seg[cut] = fresh
        fresh += 1
    return seg
