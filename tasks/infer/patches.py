"""Overlapping model patches on a grid anchored to the volume, and their blending window.

The patch grid depends only on the volume bounds, the patch shape and the overlap, never on the
chunking: a chunk predicts exactly the patches that touch its write box and blends them in one
fixed order, so every voxel gets the same patches with the same weights whether the volume is one
chunk or many. That is what makes chunked inference seamless (no halo to tune).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.geometry import Box, Vec3

#: a batch of patches (N, 1, Z, Y, X) float32 in [0, 1] → predictions (N, C, Z, Y, X) in [0, 1]
PredictFn = Callable[[np.ndarray], np.ndarray]


def fit_patch(patch: Vec3, extent: Vec3, divisor: Vec3) -> Vec3:
    """The patch used on a volume of `extent`: no larger than the extent rounded up to `divisor`."""
    return Vec3(*(min(p, math.ceil(e / d) * d) for p, e, d in zip(patch, extent, divisor)))


def patch_grid(bounds: Box, patch: Vec3, overlap: Vec3, divisor: Vec3) -> PatchGrid:
    """The grid a model predicts on over `bounds`: the patch fitted to the volume and the
    model's divisor, the overlap kept below the patch."""
    fitted = fit_patch(patch, bounds.shape, divisor)
    kept = Vec3(*(min(o, p - 1) for o, p in zip(overlap, fitted)))
    return PatchGrid(bounds=bounds, patch=fitted, overlap=kept)


def axis_starts(start: int, stop: int, patch: int, overlap: int) -> list[int]:
    """Patch starts along one axis: every `patch - overlap`, the last one flush with `stop`."""
    if stop - start <= patch:
        return [start]
    return [*range(start, stop - patch, patch - overlap), stop - patch]


def taper(size: int, overlap: int) -> np.ndarray:
    """1-D window: sin² ramps over the `overlap` voxels at each end, 1 in between, never 0."""
    w = np.ones(size, np.float32)
    ramp = min(overlap, size // 2)
    if ramp > 0:
        edge = np.sin(0.5 * np.pi * (np.arange(ramp) + 0.5) / ramp) ** 2
        w[:ramp] = edge
        w[size - ramp :] = edge[::-1]
    return w


@dataclass(frozen=True, kw_only=True)
class PatchGrid:
    """Patches of shape `patch` overlapping by `overlap` (x, y, z) over `bounds`.

    A patch can reach beyond `bounds` only where the volume is thinner than the patch; that part
    is filled by mirroring the volume.
    """

    bounds: Box
    patch: Vec3
    overlap: Vec3

    def __post_init__(self) -> None:
        if any(o < 0 or o >= p for o, p in zip(self.overlap, self.patch)):
            raise ValueError(f"overlap {self.overlap} must be ≥ 0 and below the patch {self.patch}")

    def window(self) -> np.ndarray:
        """Blending weights of one patch, x, y, z."""
        wx, wy, wz = (taper(p, o) for p, o in zip(self.patch, self.overlap))
        return wx[:, None, None] * wy[None, :, None] * wz[None, None, :]

    def touching(self, box: Box) -> list[Box]:
        """The patches that overlap `box`, in a fixed order (z, then y, then x)."""
        per_axis = []
        for axis in range(3):
            p = self.patch[axis]
            starts = axis_starts(
                self.bounds.start[axis], self.bounds.stop[axis], p, self.overlap[axis]
            )
            per_axis.append([s for s in starts if s < box.stop[axis] and s + p > box.start[axis]])
        return [
            Box((x, y, z), (x + self.patch.x, y + self.patch.y, z + self.patch.z))
            for z in per_axis[2]
            for y in per_axis[1]
            for x in per_axis[0]
        ]

    def read_box(self, box: Box) -> Box:
        """The voxels the patches touching `box` need, within the bounds."""
        patches = self.touching(box)
        start = Vec3(*(min(p.start[a] for p in patches) for a in range(3)))
        stop = Vec3(*(max(p.stop[a] for p in patches) for a in range(3)))
        return Box(start, stop).intersection(self.bounds)

    def inputs(self, data: np.ndarray, origin: Vec3, patches: list[Box]) -> Iterator[np.ndarray]:
        """Each patch's image cut from `data` (x, y, z at `origin`), mirrored past the bounds."""
        for patch in patches:
            inside = patch.intersection(self.bounds)
            cut = data[inside.slices(origin)]
            pad = [
                (a - b, c - d)
                for a, b, c, d in zip(inside.start, patch.start, patch.stop, inside.stop)
            ]
            yield np.pad(cut, pad, mode="symmetric") if any(map(any, pad)) else cut


def predict_blended(
    grid: PatchGrid,
    data: np.ndarray,
    origin: Vec3,
    out_box: Box,
    channels: int,
    predict: PredictFn,
    batch: int = 1,
) -> np.ndarray:
    """Blended predictions over `out_box` (x, y, z, c float32) from `data` (x, y, z) at `origin`.

    Only the part of each patch inside `out_box` is accumulated, so memory is that of the box.
    """
    patches = grid.touching(out_box)
    window = grid.window()
    total = np.zeros((*out_box.shape, channels), np.float32)
    weight = np.zeros(tuple(out_box.shape), np.float32)
    inputs = grid.inputs(data, origin, patches)
    for first in range(0, len(patches), batch):
        group = patches[first : first + batch]
        stack = np.stack([next(inputs).transpose(2, 1, 0) for _ in group])[:, None]
        out = predict(np.ascontiguousarray(stack, dtype=np.float32))
        expected = (len(group), channels, grid.patch.z, grid.patch.y, grid.patch.x)
        if out.shape != expected:
            raise ValueError(
                f"model returned shape {out.shape} for input {stack.shape}; expected {expected}"
            )
        for patch, pred in zip(group, out):
            part = patch.intersection(out_box)
            src, dst = part.slices(patch.start), part.slices(out_box.start)
            w = window[src]
            total[dst] += pred.transpose(3, 2, 1, 0)[src] * w[..., None]
            weight[dst] += w
    return total / weight[..., None]
