"""Inference at the model's voxel size: the input resampled to the model's grid inside each task,
the prediction resampled back to the layer's voxels, with output independent of the chunking.

Coordinates are continuous voxel coordinates, voxel i's centre at i. The model's grid covers the
layer's mip-0 `bounds` with `scale` model voxels per layer voxel on each axis (layer nm / model
nm); model voxel j (counted from 0) has its centre at layer coordinate

    bounds.start + (j + 0.5) / scale - 0.5

so both grids share the volume's outer faces. A task writing the layer box B

1. maps B's voxel centres into the model grid; the model voxels its linear interpolation uses
   form the model box M (`model_box`);
2. predicts M blended on the patch grid over `model_bounds()`; the patches need the model box
   R = grid.read_box(M);
3. builds the model image over R from the layer box that R's centres interpolate from, grown by
   the anti-alias filter's radius (`source_box`): low-pass along downsampled axes, then linear
   interpolation at R's centres (`to_model`);
4. interpolates the prediction linearly at B's centres (`to_layer`).

Every value is a fixed function of global voxel indices: interpolation taps and weights come
from per-axis tables computed from global indices, and every filter or interpolation reads real
neighbours (the margins are exactly what the taps and the kernel reach). Only at the volume's
faces do values past the edge count, and there they are the edge voxel (scipy's
mode="nearest") in every chunking alike. Chunked output therefore equals whole-volume output
bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.infer.patches import PatchGrid, PredictFn, predict_blended

Xyz = tuple[float, float, float]
Taps = tuple[np.ndarray, np.ndarray, np.ndarray]  # lower, upper (global indices), upper's weight

#: Gaussian kernel half-width in sigmas (scipy's default `truncate`)
TRUNCATE = 4.0
#: n · scale within this of an integer counts as that integer (float noise in e.g. 100 · 0.8)
EXTENT_SLACK = 1e-6
AXES = "xyz"


def anti_alias_sigma(scale: float) -> float:
    """Gaussian sigma (layer voxels) applied before sampling at `scale` model voxels per layer
    voxel: (1/scale − 1) / 2 when downsampling, 0 otherwise.

    This is scikit-image's `rescale(..., anti_aliasing=True)` choice. At 2× it equals the
    spread of averaging 2 voxels (variance (k² − 1) / 12 for k = 2, i.e. sigma 0.5), what a
    microscope with 2× larger pixels or the mip pyramid does, so the model sees the sharpness it
    was trained on rather than a blurrier image."""
    return max(0.0, (1.0 / scale - 1.0) / 2.0)


def filter_radius(sigma: float) -> int:
    """The kernel half-width (voxels) used for `sigma`, as scipy computes it from `truncate`."""
    return int(TRUNCATE * sigma + 0.5) if sigma > 0 else 0


def taps(coords: np.ndarray, start: int, stop: int) -> Taps:
    """Linear-interpolation taps at continuous `coords` on the voxels start..stop-1 of one axis
    (global indices): lower and upper voxel and the upper one's float32 weight. Coordinates past
    the outermost centres take the edge voxel, as scipy's mode="nearest"."""
    floor = np.floor(coords)
    weight = (coords - floor).astype(np.float32)
    lower = floor.astype(np.int64)
    upper = np.clip(lower + 1, start, stop - 1)
    return np.clip(lower, start, stop - 1), upper, weight


def lerp(data: np.ndarray, axis: int, origin: int, found: Taps) -> np.ndarray:
    """Linear interpolation of `data` (float32, whose index 0 on `axis` is global `origin`)
    along `axis` at the taps `found`.

    Written here because scipy offers no exact separable form: `zoom` and `affine_transform`
    derive coordinates from the array's own origin (their rounding would depend on the chunk),
    and `map_coordinates` needs three float64 coordinates per output voxel (24 bytes each,
    gigabytes over a task's box). One axis at a time reads two values per voxel, and its
    weights come from global indices, so they are the same bits in every chunk."""
    lower, upper, weight = found
    size = data.shape[axis]
    if lower.size and (lower.min() < origin or upper.max() >= origin + size):
        raise ValueError(
            f"taps {lower.min()}..{upper.max()} on axis {AXES[axis]} are outside the data "
            f"({origin}..{origin + size - 1})"
        )
    low = np.take(data, lower - origin, axis=axis)
    high = np.take(data, upper - origin, axis=axis)
    shape = [1] * data.ndim
    shape[axis] = weight.size
    high -= low
    high *= weight.reshape(shape)
    low += high  # low + w · (high − low): exactly `low` where w = 0 or the values are equal
    return low


@dataclass(frozen=True)
class Resampling:
    """The layer's mip-0 `bounds` and `scale` (x, y, z): model voxels per layer voxel, i.e.
    layer nm / model nm (0.5: the input is downsampled 2×; 2.0: upsampled 2×)."""

    bounds: Box
    scale: Xyz

    def __post_init__(self) -> None:
        if len(self.scale) != 3 or not all(s > 0 and math.isfinite(s) for s in self.scale):
            raise ValueError(f"scale must be 3 positive numbers (x, y, z), got {self.scale}")
        if self.bounds.is_empty():
            raise ValueError(f"cannot resample the empty volume {self.bounds}")

    # ---- the model's grid ---------------------------------------------------------------
    def model_bounds(self) -> Box:
        """The model's grid over the volume: ceil(shape · scale) voxels per axis, from 0."""
        shape = (
            max(1, math.ceil(n * s - EXTENT_SLACK)) for n, s in zip(self.bounds.shape, self.scale)
        )
        return Box((0, 0, 0), shape)

    def layer_taps(self, axis: int, start: int, stop: int) -> Taps:
        """Taps in the layer for the centres of model voxels start..stop-1 on `axis`."""
        b0, b1, s = self.bounds.start[axis], self.bounds.stop[axis], self.scale[axis]
        coords = b0 + (np.arange(start, stop, dtype=np.float64) + 0.5) / s - 0.5
        return taps(coords, b0, b1)

    def model_taps(self, axis: int, start: int, stop: int) -> Taps:
        """Taps in the model grid for the centres of layer voxels start..stop-1 on `axis`."""
        b0, s = self.bounds.start[axis], self.scale[axis]
        coords = (np.arange(start, stop, dtype=np.float64) - b0 + 0.5) * s - 0.5
        return taps(coords, 0, self.model_bounds().stop[axis])

    # ---- boxes a task needs -------------------------------------------------------------
    def model_box(self, box: Box) -> Box:
        """The model voxels whose predictions the layer voxels of `box` interpolate from."""
        if box.is_empty():
            raise ValueError(f"no model box for the empty box {box}")
        start, stop = [], []
        for a in range(3):
            lower, upper, _ = self.model_taps(a, box.start[a], box.stop[a])
            start.append(int(lower.min()))
            stop.append(int((lower if self.scale[a] == 1.0 else upper).max()) + 1)  # 1: a cut
        return Box(start, stop)

    def source_box(self, model_read: Box) -> Box:
        """The layer voxels the model image over `model_read` is made from: those its centres
        interpolate from, grown by the anti-alias kernel's radius, within the bounds."""
        start, stop = [], []
        for a in range(3):
            lower, upper, _ = self.layer_taps(a, model_read.start[a], model_read.stop[a])
            radius = filter_radius(anti_alias_sigma(self.scale[a]))
            start.append(max(int(lower.min()) - radius, self.bounds.start[a]))
            last = int((lower if self.scale[a] == 1.0 else upper).max())  # 1: a cut
            stop.append(min(last + 1 + radius, self.bounds.stop[a]))
        return Box(start, stop)

    def read_box(self, grid: PatchGrid, box: Box) -> Box:
        """The layer box a task writing `box` reads (for cost models and checks)."""
        return self.source_box(grid.read_box(self.model_box(box)))

    # ---- resampling ---------------------------------------------------------------------
    def to_model(self, data: np.ndarray, origin: Vec3, model_read: Box) -> np.ndarray:
        """The model image over `model_read` from layer data (x, y, z float32 at `origin`,
        covering `source_box(model_read)`): per axis, the most downsampled first, low-pass
        (when downsampling) then interpolate at the model voxels' centres."""
        data = np.asarray(data, np.float32)
        for a in sorted(range(3), key=lambda a: self.scale[a]):
            sigma = anti_alias_sigma(self.scale[a])
            radius = filter_radius(sigma)
            if radius:
                data = gaussian_filter1d(
                    data, sigma, axis=a, mode="nearest", truncate=TRUNCATE, radius=radius
                )
            if self.scale[a] != 1.0:  # a global decision: the same for every chunk
                found = self.layer_taps(a, model_read.start[a], model_read.stop[a])
                data = lerp(data, a, origin[a], found)
            else:  # model voxel j is layer voxel bounds.start + j: a plain cut
                first = model_read.start[a] + self.bounds.start[a] - origin[a]
                data = np.take(data, np.arange(first, first + model_read.shape[a]), axis=a)
        return data

    def to_layer(self, pred: np.ndarray, model_box: Box, box: Box) -> np.ndarray:
        """Predictions over `model_box` (x, y, z, c float32) at the centres of the layer voxels
        of `box`, linearly interpolated (the axis shrinking the data most first)."""
        for a in sorted(range(3), key=lambda a: -self.scale[a]):
            if self.scale[a] != 1.0:
                pred = lerp(
                    pred, a, model_box.start[a], self.model_taps(a, box.start[a], box.stop[a])
                )
            else:
                first = box.start[a] - self.bounds.start[a] - model_box.start[a]
                pred = np.take(pred, np.arange(first, first + box.shape[a]), axis=a)
        return pred

    def predict_resampled(
        self,
        grid: PatchGrid,
        read: Callable[[Box], np.ndarray],
        box: Box,
        channels: int,
        predict: PredictFn,
        batch: int = 1,
    ) -> np.ndarray:
        """The prediction over the layer box `box` (x, y, z, c float32), made on the model's
        grid. `grid` is the patch grid over `model_bounds()`; `read(layer_box)` returns the
        model input (x, y, z float32 in 0-1, intensity map applied) over a layer box."""
        if grid.bounds != self.model_bounds():
            raise ValueError(
                f"the patch grid covers {grid.bounds}, not the model's grid {self.model_bounds()}"
            )
        model_box = self.model_box(box)
        model_read = grid.read_box(model_box)
        source = self.source_box(model_read)
        image = self.to_model(read(source), source.start, model_read)
        pred = predict_blended(grid, image, model_read.start, model_box, channels, predict, batch)
        return self.to_layer(pred, model_box, box)
