"""A planner's look at a volume: a few boxes spread over it, read once, for statistics.

Stages that adapt to the data (intensity normalisation before `infer`, the boundary-map check
before `segment`) need figures about the whole volume before any task is dispatched. Reading
the volume would cost a run; a fixed, spread-out sample of small boxes costs a few reads and
is the same every time the stage is planned (so the figures can enter the stage's identity).
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.sources import VolumeSource

SAMPLE_BOXES = 3  # per axis: up to 27 boxes
SAMPLE_SIDE = 48  # voxels per side of a box (x, y, z)


def sample_boxes(bounds: Box, per_axis: int = SAMPLE_BOXES, side: int = SAMPLE_SIDE) -> list[Box]:
    """Up to `per_axis`³ boxes of `side`³ voxels (clipped to the volume), centred on an even
    grid over `bounds`; one box holding the whole volume when it is smaller than the sample."""
    shape = bounds.shape
    if shape.prod() <= per_axis**3 * side**3:
        return [bounds]
    starts = []
    for axis in range(3):
        size, width = shape[axis], min(side, shape[axis])
        centres = (np.arange(per_axis) + 0.5) * size / per_axis
        first = np.clip(np.round(centres - width / 2).astype(int), 0, size - width)
        starts.append(sorted({bounds.start[axis] + int(f) for f in first}))
    width = Vec3(*(min(side, s) for s in shape))
    return [
        Box((x, y, z), (x + width.x, y + width.y, z + width.z))
        for z in starts[2]
        for y in starts[1]
        for x in starts[0]
    ]


def sample_values(layer: Layer, fill_missing: bool = False) -> np.ndarray:
    """The voxels of `sample_boxes` over the layer's mip 0, flattened per channel: (n, channels).

    Missing chunks are zeros with `fill_missing`, otherwise the layer's own read error."""
    parts = []
    for box in sample_boxes(layer.bounds(0)):
        data = layer.read(box, fill_missing=fill_missing)
        parts.append(data.reshape(-1, layer.num_channels))
    return np.concatenate(parts)


def unit_values(values: np.ndarray) -> np.ndarray:
    """uint8 as 0-1 (÷ 255), floats as they are, as float64."""
    if values.dtype == np.uint8:
        return values.astype(np.float64) / 255.0
    return values.astype(np.float64)


def sample_source_values(source: VolumeSource) -> np.ndarray:
    """The voxels of `sample_boxes` over an ingest source (a few reads), flattened: the
    planner's look at a stack before anything is written."""
    boxes = sample_boxes(Box.from_shape(source.shape))
    return np.concatenate([source.read(box).ravel() for box in boxes])
