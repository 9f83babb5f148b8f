"""`infer` on one in-memory volume, in this process: what the stage writes for it as one chunk
(the stage's output does not depend on its chunking), for tuning and small experiments."""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.infer.domain import IntensityMap
from petavox.tasks.infer.no_data_fill import filled
from petavox.tasks.infer.patches import PredictFn, patch_grid, predict_blended


def predict_volume(
    predict: PredictFn,
    image: np.ndarray,
    *,
    patch: Vec3,
    overlap: Vec3,
    divisor: Vec3,
    channels: int,
    intensity: IntensityMap | None = None,
    no_data_value: float | None = None,
) -> np.ndarray:
    """Float32 predictions (x,y,z for one channel, x,y,z,c otherwise) of `image` (x,y,z, float
    0-1), with the intensity map applied first (and no data set to `no_data_value`, when
    given), patch-wise and blended as the stage does."""
    bounds = Box.from_shape(image.shape)
    grid = patch_grid(bounds, patch, overlap, divisor)
    data = np.asarray(image, np.float32)  # read only: the intensity map makes a new array
    if intensity is not None:
        data = intensity.apply(data)
    if no_data_value is not None:
        data = filled(np.asarray(image), data, no_data_value, bounds, bounds)
    out = predict_blended(grid, data, Vec3(0, 0, 0), bounds, channels, predict)
    return out[..., 0] if channels == 1 else out
