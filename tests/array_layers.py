"""An in-memory stand-in for the part of `Layer` that `InferJob` uses: tests of the infer job
without a storage round trip."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from petavox.tasks.core.geometry import Box


@dataclass
class ArrayLayer:
    """`data` (x, y, z) over `box` (default: at the origin); every read box is recorded."""

    data: np.ndarray
    box: Box | None = None
    url: str = "memory://layer"
    num_channels: int = 1
    reads: list[Box] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.box is None:
            self.box = Box.from_shape(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    def bounds(self, level: int = 0) -> Box:
        assert level == 0 and self.box is not None
        return self.box

    def read(self, box: Box, fill_missing: bool = False) -> np.ndarray:
        assert self.bounds().contains(box)
        self.reads.append(box)
        return self.data[box.slices(self.bounds().start)].copy()

    def write(self, box: Box, data: np.ndarray) -> None:
        assert data.shape == tuple(box.shape) and data.dtype == self.dtype
        self.data[box.slices(self.bounds().start)] = data
