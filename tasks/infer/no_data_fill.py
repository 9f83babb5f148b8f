"""No data shown to a cleft or synapse model as plain tissue, not as black.

An aligned stack has black margins where a section was moved (and a missing chunk read as zeros
is black too). To a model of dark clefts, a black band beside tissue looks like a dark membrane
or cleft, and past it there is no context: the built-in synapse model found 13 % of the clefts
within 6 voxels of the demo's side faces and 44 % of those 6-12 voxels in, against 95 % deeper
in. With the no-data voxels (`detection.no_data`) set to the model's training-domain mean, it
finds 33 % and 94 % (demo seeds 0-3, threshold 0.3), and its recall on seeds 1-3 rose from
0.84 to 0.90 (the precision fell from 0.86 to 0.80, which `CleftParams.min_presynaptic` brings
back to 0.89). The detector ignores those voxels anyway.

The mask is computed on the chunk's input grown by `NO_DATA_HALO` in-plane (within the
volume), so it is the whole volume's mask and the prediction does not depend on the chunking.
A black margin along the volume's side faces is no data however thin (nothing lies past it).
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.geometry import Box
from petavox.tasks.infer.domain import ModelDomain
from petavox.tasks.ml.examples import SYNAPSE_TARGETS
from petavox.tasks.synapse.detection import NO_DATA_WIDTH, no_data

#: in-plane voxels past a box that decide its no-data mask (the opening's square and its rim)
NO_DATA_HALO = (NO_DATA_WIDTH + 2, NO_DATA_WIDTH + 2, 0)
NEUTRAL = 0.5  # fill for a model that records no intensity domain


def no_data_value(target: str, domain: ModelDomain) -> float | None:
    """What a model of `target` sees where there is no data (model input, 0-1): its training
    images' mean intensity for a cleft or synapse model, None (the black as read) otherwise;
    boundary models learned black margins as boundary, which segmentation relies on."""
    if target not in SYNAPSE_TARGETS:
        return None
    return domain.intensity[0] if domain.intensity is not None else NEUTRAL


def mask_box(box: Box, bounds: Box) -> Box:
    """The box whose image decides `box`'s no-data mask: grown in-plane, within `bounds`."""
    return box.grow(NO_DATA_HALO).intersection(bounds)


def no_data_mask(raw: np.ndarray, box: Box, bounds: Box) -> np.ndarray:
    """`detection.no_data` of `raw` (x,y,z over `box`) with the edge voxels repeated beyond the
    side faces of the volume (`bounds`) that `box` touches: a thin black margin along a face
    counts, a face with data does not."""
    image = raw[..., 0] if raw.ndim == 4 else raw
    pad = [
        (NO_DATA_WIDTH * (a == c), NO_DATA_WIDTH * (b == d)) if axis < 2 else (0, 0)
        for axis, (a, b, c, d) in enumerate(zip(box.start, box.stop, bounds.start, bounds.stop))
    ]
    missing = no_data(np.pad(image, pad, mode="edge"))
    return missing[tuple(slice(lo, lo + n) for (lo, _), n in zip(pad, image.shape))]


def filled(raw: np.ndarray, image: np.ndarray, value: float, box: Box, bounds: Box) -> np.ndarray:
    """`image` (the model input made from `raw`, both x,y,z over `box`) with the no-data voxels
    (`no_data_mask`) set to `value`; `image` itself when there are none."""
    missing = no_data_mask(raw, box, bounds)
    if not missing.any():
        return image
    out = np.array(image, np.float32)
    out[missing] = value
    return out
