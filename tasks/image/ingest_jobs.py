"""Ingest: copy one box of an image stack into a precomputed layer, checking the values fit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Chunk, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.sources import VolumeSource


def cast_checked(data: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    """`data` as `dtype`, or an `InputError` if a value would not survive the conversion."""
    if data.dtype == dtype:
        return data
    if np.issubdtype(dtype, np.integer) and data.size:
        info = np.iinfo(dtype)
        lo, hi = data.min(), data.max()
        if lo < info.min or hi > info.max:
            raise InputError(
                f"{where}: values {lo}..{hi} do not fit the layer dtype {dtype.name}; "
                "choose a wider dtype or rescale the source"
            )
        if np.issubdtype(data.dtype, np.floating) and not np.array_equal(data, np.round(data)):
            raise InputError(
                f"{where}: source holds fractional values but the layer dtype is {dtype.name}; "
                "set dtype: float32 or rescale the source"
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
        data = self.source.read(box.translate([-v for v in self.voxel_offset]))
        data = cast_checked(data, self.target.dtype, f"{self.source.url} at {box}")
        self.target.write(box, np.asfortranarray(data))
        return {"voxels": box.size}
