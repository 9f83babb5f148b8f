"""The boxes of every task of a grid, counted without visiting the tasks.

A `ChunkGrid`'s write box of chunk (i, j, k) is the product of an x interval that depends on i
alone, a y interval on j and a z interval on k; so is its read box (the write box grown by the
halo, clipped). A sum over all tasks of anything that is a product over the axes (voxels,
storage chunks touched, patches) is therefore the product of three per-axis sums: a grid of
10^7 tasks has a few hundred intervals per axis, counted in microseconds. Iterating the grid
itself would take minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3

Intervals = np.ndarray  # (n, 2) int64: [start, stop) of each task along one axis


@dataclass(frozen=True)
class BoxSet:
    """One box per task, as three lists of per-axis intervals (x, y, z)."""

    axes: tuple[Intervals, Intervals, Intervals]

    @classmethod
    def writes(cls, grid: ChunkGrid) -> BoxSet:
        """The write boxes of `grid`'s tasks (empty when the grid is)."""
        axes = []
        for a in range(3):
            n = grid.grid_shape[a]
            first = (grid.bounds.start[a] - grid.origin[a]) // grid.chunk_shape[a]
            starts = grid.origin[a] + (first + np.arange(n, dtype=np.int64)) * grid.chunk_shape[a]
            lo = np.maximum(starts, grid.bounds.start[a])
            hi = np.minimum(starts + grid.chunk_shape[a], grid.bounds.stop[a])
            axes.append(np.stack([lo, hi], axis=1).reshape(n, 2))
        return cls(tuple(axes))  # type: ignore[arg-type]

    @classmethod
    def reads(cls, grid: ChunkGrid) -> BoxSet:
        """The read boxes of `grid`'s tasks: the write boxes grown by the halo, clipped."""
        return cls.writes(grid).grow(grid.halo, grid.halo, grid.bounds)

    @property
    def tasks(self) -> int:
        return math.prod(len(a) for a in self.axes)

    def grow(self, low: Vec3, high: Vec3, bounds: Box) -> BoxSet:
        """Each box grown by `low` below and `high` above on each axis, clipped to `bounds`."""
        return self.map(
            lambda a, iv: np.stack(
                [
                    np.maximum(iv[:, 0] - low[a], bounds.start[a]),
                    np.minimum(iv[:, 1] + high[a], bounds.stop[a]),
                ],
                axis=1,
            )
        )

    def scale_down(self, factor: Vec3) -> BoxSet:
        """The boxes at a coarser mip: starts floored, stops rounded up (`Box.scale_down`)."""
        return self.map(
            lambda a, iv: np.stack([iv[:, 0] // factor[a], -(-iv[:, 1] // factor[a])], 1)
        )

    def rescale(self, factor: tuple[float, float, float], source: Box, target: Box) -> BoxSet:
        """The boxes in another voxel grid over the same volume: `target` has `factor` voxels
        per voxel of `source` on each axis (infer's resampling); rounded outward, clipped."""

        def axis(a: int, iv: Intervals) -> Intervals:
            rel = (iv - source.start[a]) * factor[a]
            lo = np.floor(rel[:, 0]).astype(np.int64) + target.start[a]
            hi = np.ceil(rel[:, 1]).astype(np.int64) + target.start[a]
            return np.stack(
                [np.maximum(lo, target.start[a]), np.minimum(hi, target.stop[a])], axis=1
            )

        return self.map(axis)

    def map(self, fn: Callable[[int, Intervals], Intervals]) -> BoxSet:
        return BoxSet(tuple(fn(a, iv).reshape(-1, 2) for a, iv in enumerate(self.axes)))  # type: ignore[arg-type]

    # ---- sums over the tasks ------------------------------------------------------------------
    def voxels(self) -> int:
        """Voxels of all boxes together (a voxel in two boxes counts twice)."""
        return math.prod(int((iv[:, 1] - iv[:, 0]).sum()) for iv in self.axes)

    def largest(self) -> int:
        """Voxels of the largest box."""
        return math.prod(int((iv[:, 1] - iv[:, 0]).max(initial=0)) for iv in self.axes)

    def cells(self, cell: Vec3, bounds: Box) -> int:
        """Cells of a grid of `cell` aligned to `bounds.start` (storage chunks, shards) touched,
        summed over the boxes: `Box.cells` of every box, counted."""
        return math.prod(int(self._cell_range(a, cell, bounds).sum()) for a in range(3))

    def cell_voxels(self, cell: Vec3, bounds: Box) -> int:
        """Voxels of the cells touched (each clipped to `bounds`), summed over the boxes: what
        reading whole storage chunks fetches."""
        total = []
        for a, iv in enumerate(self.axes):
            origin, c = bounds.start[a], cell[a]
            lo = origin + ((iv[:, 0] - origin) // c) * c
            hi = np.minimum(origin - (-(iv[:, 1] - origin) // c) * c, bounds.stop[a])
            total.append(int(np.where(iv[:, 1] > iv[:, 0], hi - lo, 0).sum()))
        return math.prod(total)

    def _cell_range(self, a: int, cell: Vec3, bounds: Box) -> np.ndarray:
        iv, origin, c = self.axes[a], bounds.start[a], cell[a]
        lo = np.maximum(iv[:, 0], bounds.start[a])
        hi = np.minimum(iv[:, 1], bounds.stop[a])
        first, last = (lo - origin) // c, -(-(hi - origin) // c)
        return np.where(hi > lo, last - first, 0)

    def union(self) -> Box:
        """The smallest box holding every box."""
        start = [int(iv[:, 0].min(initial=0)) for iv in self.axes]
        stop = [int(iv[:, 1].max(initial=0)) for iv in self.axes]
        return Box(start, stop)


def patch_reads(writes: BoxSet, bounds: Box, patch: Vec3, overlap: Vec3) -> tuple[BoxSet, int]:
    """For `infer`: the read boxes (the patches touching each write box, clipped to `bounds`)
    and the voxels the model predicts, summed over the tasks (`PatchGrid.touching` counted)."""
    axes, predicted = [], []
    for a, iv in enumerate(writes.axes):
        lo, hi, p, o = bounds.start[a], bounds.stop[a], patch[a], overlap[a]
        starts = np.array(
            [lo] if hi - lo <= p else [*range(lo, hi - p, p - o), hi - p], dtype=np.int64
        )
        first = np.searchsorted(starts + p, iv[:, 0], side="right")  # first with s + p > start
        last = np.searchsorted(starts, iv[:, 1], side="left")  # first with s >= stop
        count = np.maximum(last - first, 0)
        safe_first = np.minimum(first, len(starts) - 1)
        safe_last = np.maximum(last - 1, 0)
        read = np.stack(
            [np.maximum(starts[safe_first], lo), np.minimum(starts[safe_last] + p, hi)], axis=1
        )
        axes.append(read)
        predicted.append(int(count.sum()) * p)
    return BoxSet(tuple(axes)), math.prod(predicted)  # type: ignore[arg-type]


def resampled_patch_reads(
    writes: BoxSet,
    bounds: Box,
    scale: tuple[float, float, float],
    model: Box,
    patch: Vec3,
    overlap: Vec3,
) -> tuple[BoxSet, int]:
    """`patch_reads` for `infer` with resampling: the write boxes (layer voxels over `bounds`)
    mapped onto the model's grid over `model` (`scale` model voxels per layer voxel), with the
    interpolation taps on coarsened axes; the patch reads mapped back to the layer."""
    taps = Vec3(*(int(s < 1) for s in scale))
    on_model = writes.rescale(scale, bounds, model).grow(taps, taps, model)
    reads, predicted = patch_reads(on_model, model, patch, overlap)
    back = tuple(1 / s for s in scale)
    return reads.rescale(back, model, bounds), predicted  # type: ignore[arg-type]
