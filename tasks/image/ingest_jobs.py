"""Ingest: copy one box of an image stack into a precomputed layer, checking the values fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.errors import ValueRangeError
from petavox.tasks.core.geometry import Box, Chunk, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.sources import VolumeSource
from petavox.tasks.core.values import describe_nonfinite, extremes


def cast_checked(data: np.ndarray, dtype: np.dtype, where: str, box: Box) -> np.ndarray:
    """`data` (the source voxels of `box`) as `dtype`, or a `ValueRangeError` if a value would not
    survive the conversion: NaN and ±Inf are refused whatever the dtype."""
    found = extremes(data)  # None for integer data
    if found is not None and not np.isfinite(found).all():
        raise ValueRangeError(
            f"{where}: {describe_nonfinite(data, box)}; clean them in the source (e.g. "
            "replace them with 0 or a background value) and ingest again"
        )
    if data.dtype == dtype:
        return data
    if np.issubdtype(dtype, np.integer) and data.size:
        info = np.iinfo(dtype)
        lo, hi = found or (data.min(), data.max())
        if lo < info.min or hi > info.max:
            raise ValueRangeError(
                f"{where}: values {lo}..{hi} in {box} do not fit the layer dtype {dtype.name}; "
                "choose a wider dtype or rescale the source"
            )
        if found is not None and not np.array_equal(data, np.round(data)):
            raise ValueRangeError(
                f"{where}: source holds fractional values in {box} but the layer dtype is "
                f"{dtype.name}; set dtype: float32 or rescale the source"
            )
    if found is not None and np.issubdtype(dtype, np.floating):
        top = float(np.finfo(dtype).max)
        if max(-found[0], found[1]) > top:
            raise ValueRangeError(
                f"{where}: values {found[0]:g}..{found[1]:g} in {box} do not fit the layer "
                f"dtype {dtype.name}; rescale the source"
            )
    return data.astype(dtype, copy=False)


@dataclass(frozen=True, kw_only=True)
class IngestJob:
    """Copies the source voxels of a chunk's write box (in layer coordinates) into `target`."""

    source: VolumeSource
    target: Layer
    voxel_offset: Vec3

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        at = box.translate([-v for v in self.voxel_offset])  # in source coordinates
        data = cast_checked(
            self.source.read(at), self.target.dtype, f"source {self.source.url}", at
        )
        self.target.write(box, np.asfortranarray(data))
        return {"voxels": box.size}
