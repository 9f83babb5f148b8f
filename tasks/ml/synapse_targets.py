"""Ground truth for the "synapses" training target: per voxel the bit flags
`examples.SYNAPSE_BITS` (cleft, presynaptic side, postsynaptic side) from cleft labels, a
segmentation and each cleft's partners.

A side is its partner's voxels within `reach` (physical units of `spacing`) of the cleft: where
the vesicle cloud and the postsynaptic density are. A network that predicts the sides gives the
synapse detector both partners and the direction in one cue (`cleft_channel`), where rays along
a cleft's normal and dark-voxel counts went wrong at junctions and on split partners.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from petavox.tasks.ml.examples import SYNAPSE_BITS

SIDE_REACH = 5.0  # voxels along the first axis of unit spacing: how far a side reaches


def synapse_flags(
    labels: np.ndarray,
    clefts: np.ndarray,
    pre: Sequence[int],
    post: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    reach: float = SIDE_REACH,
) -> np.ndarray:
    """uint8 flags (the shape of `labels`): cleft voxels (`clefts` nonzero), and the voxels of
    cleft k's presynaptic object `pre[k - 1]` and postsynaptic object `post[k - 1]` within
    `reach` of it (`spacing`: voxel size per axis; 0 in `pre`/`post`: no side)."""
    clefts = np.asarray(clefts)
    flags = np.where(clefts > 0, np.uint8(SYNAPSE_BITS[0]), np.uint8(0))
    grow = [int(np.ceil(reach / s)) + 1 for s in spacing]
    for k, box in enumerate(ndimage.find_objects(clefts), 1):
        if box is None or k > len(pre):
            continue
        box = tuple(
            slice(max(b.start - g, 0), min(b.stop + g, n))
            for b, g, n in zip(box, grow, clefts.shape)
        )
        near = ndimage.distance_transform_edt(clefts[box] != k, sampling=spacing) <= reach
        for partner, bit in ((pre[k - 1], SYNAPSE_BITS[1]), (post[k - 1], SYNAPSE_BITS[2])):
            if partner:
                flags[box][near & (labels[box] == partner)] |= np.uint8(bit)
    return flags


def volume_flags(volume) -> np.ndarray:
    """`synapse_flags` of a synthetic volume (the generator's, with `cleft_labels`): its labels,
    clefts and synapse table's partners, x, y, z."""
    table = volume.synapse_table
    return synapse_flags(volume.labels, volume.clefts, table["pre"], table["post"])
