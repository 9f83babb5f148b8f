"""One chunk of a streaming evaluation: the contingency table of a segmentation vs ground truth."""

from __future__ import annotations

from dataclasses import dataclass

from petavox.tasks.core.geometry import Chunk
from petavox.tasks.core.layers import Layer
from petavox.tasks.evaluate.metrics import Contingency, contingency


@dataclass(frozen=True, kw_only=True)
class ContingencyJob:
    seg: Layer
    gt: Layer
    ignore_gt: tuple[int, ...] = (0,)

    def run(self, chunk: Chunk) -> Contingency:
        seg = self.seg.read(chunk.write_box)
        gt = self.gt.read(chunk.write_box)
        return contingency(seg, gt, self.ignore_gt)
