"""Mip pyramids: averaging for images, mode for segmentations (tinybrain), several mips per task."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import tinybrain

from petavox.tasks.core.geometry import Chunk, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.values import check_values

Method = Literal["average", "mode"]


def pyramid(data: np.ndarray, factor: Vec3, mips: int, method: Method) -> list[np.ndarray]:
    """`mips` successively coarser versions of an x,y,z(,c) array; odd edges are kept (ceil).

    An edge block averages the voxels it has, as if each mip were made from the previous one.
    """
    if method == "mode":
        return tinybrain.downsample_segmentation(data, tuple(factor), num_mips=mips, sparse=False)
    # Each mip is made from the previous (rounded) one, so a chunk's pyramid equals the whole
    # volume's whatever the chunking. tinybrain 1.7's accelerated averaging garbles arrays whose
    # size is not a multiple of the factor (it drops a row and zero-fills the last), so the edge
    # is replicated up to a multiple first, which averages exactly the voxels an edge block has.
    out = []
    level = data
    for _ in range(mips):
        pad = [(-s) % f for s, f in zip(level.shape[:3], factor)]
        if any(pad):
            widths = [(0, p) for p in pad] + [(0, 0)] * (level.ndim - 3)
            level = np.asfortranarray(np.pad(level, widths, mode="edge"))
        (level,) = tinybrain.downsample_with_averaging(level, tuple(factor), num_mips=1)
        out.append(level)
    return out


@dataclass(frozen=True, kw_only=True)
class DownsampleJob:
    """Reads one mip-0 box of `source`, writes its pyramid (and mip 0 if `target` differs).

    The task box is a multiple of the storage chunk times ``factor**mips``, so every mip's box
    covers whole storage chunks of the target: no task writes another task's chunk.
    """

    source: Layer
    target: Layer
    factor: Vec3
    mips: int
    method: Method
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        data = self.source.read(box, mip=0, fill_missing=self.fill_missing)
        check_values(data, self.source.url, box, "downsample")  # NaN would spread up the pyramid
        if self.target.url != self.source.url:
            self.target.write(box, data, mip=0)
        for mip, level in enumerate(pyramid(data, self.factor, self.mips, self.method), start=1):
            self.target.write(box.scale_down(self.factor**mip), np.asarray(level), mip=mip)
        return {"voxels": box.size}
