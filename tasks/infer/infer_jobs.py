"""One chunk of the `infer` stage: read the patches around the write box, predict, blend, write."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.geometry import Box, Chunk
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.values import check_values
from petavox.tasks.infer.domain import IntensityMap
from petavox.tasks.infer.no_data_fill import filled, mask_box
from petavox.tasks.infer.patches import PatchGrid, PredictFn, predict_blended
from petavox.tasks.infer.resample import Resampling


def as_model_input(data: np.ndarray) -> np.ndarray:
    """Image → float32 in [0, 1]: uint8 is divided by 255, floats are taken as they are (the
    job has checked they are finite and in 0-1)."""
    if data.ndim == 4:
        data = data[..., 0]
    if data.dtype == np.uint8:
        return data.astype(np.float32) / 255.0
    return data.astype(np.float32, copy=False)


def to_layer_dtype(pred: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Predictions in [0, 1] → the output layer's dtype (uint8: 0-255, rounded)."""
    pred = np.clip(pred, 0.0, 1.0)
    if dtype == np.uint8:
        return np.rint(pred * 255.0).astype(np.uint8)
    return pred.astype(dtype)


@dataclass(frozen=True, kw_only=True)
class InferJob:
    """With `resampling`, `patches` is the grid over `resampling.model_bounds()`: the input is
    resampled to the model's voxels, predicted there and resampled back (see `resample`)."""

    source: Layer
    target: Layer
    patches: PatchGrid
    predict: PredictFn  # a model in this process, a GPU actor pool, or the classical filter
    batch: int = 1
    fill_missing: bool = False
    intensity: IntensityMap = IntensityMap()  # applied to the 0-1 input, before resampling
    resampling: Resampling | None = None
    no_data_value: float | None = None  # model input where the image has no data (no_data_fill)

    def model_input(self, box: Box) -> np.ndarray:
        """The source over `box`, checked, as float32 0-1 model input with the intensity map
        (and no data set to `no_data_value`, when given)."""
        if self.no_data_value is None:
            return self.intensity.apply(as_model_input(self._read(box)))
        bounds = self.source.bounds(0)
        read = mask_box(box, bounds)
        raw = self._read(read)
        image = filled(
            raw, self.intensity.apply(as_model_input(raw)), self.no_data_value, read, bounds
        )
        return image[box.slices(read.start)]

    def _read(self, box: Box) -> np.ndarray:
        raw = self.source.read(box, fill_missing=self.fill_missing)
        check_values(raw, self.source.url, box, "infer", unit_range=True)
        return raw

    def run(self, chunk: Chunk) -> dict:
        box, channels = chunk.write_box, self.target.num_channels
        extra = {}
        if self.resampling is None:
            read = self.patches.read_box(box)
            data = self.model_input(read)
            pred = predict_blended(
                self.patches, data, read.start, box, channels, self.predict, self.batch
            )
            patches = len(self.patches.touching(box))
        else:
            pred = self.resampling.predict_resampled(
                self.patches, self.model_input, box, channels, self.predict, self.batch
            )
            model_box = self.resampling.model_box(box)
            patches = len(self.patches.touching(model_box))
            extra["model_voxels"] = model_box.size
        if pred.shape[-1] == 1:
            pred = pred[..., 0]
        self.target.write(box, to_layer_dtype(pred, self.target.dtype))
        return {"patches": patches, "predictor": type(self.predict).__name__, **extra}
