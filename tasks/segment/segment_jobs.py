"""One chunk of the `segment` stage: segment the read box, keep the write box, save face slabs.

Labels get the chunk's id range (`IdSpace`), so ids are unique with no coordination. In watershed
mode the chunk also stores what it predicts just beyond each face (from its halo); stitching
compares that with what the neighbour decided there to match objects across the face.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import put_array
from petavox.tasks.core.values import check_values
from petavox.tasks.segment.equivalence import IdSpace
from petavox.tasks.segment.watershed import (
    WatershedParams,
    boundary_of,
    cc_segment,
    watershed_fragments,
)

Mode = Literal["watershed", "cc"]


def face_boxes(grid: ChunkGrid, chunk: Chunk, axis: int, depth: Vec3) -> tuple[Box, Box] | None:
    """(inner, outer) slabs of the face between `chunk` and its + neighbour along `axis`.

    `inner` is the last `depth` voxels of the chunk, `outer` the first of the neighbour; None if
    the chunk has no neighbour there.
    """
    index = list(chunk.index)
    index[axis] += 1
    if index[axis] >= grid.grid_shape[axis]:
        return None
    neighbour = grid.chunk(index).write_box
    face = chunk.write_box.stop[axis]
    d = depth[axis]
    inner_start, inner_stop = list(chunk.write_box.start), list(chunk.write_box.stop)
    inner_start[axis] = max(face - d, chunk.write_box.start[axis])
    outer_start, outer_stop = list(neighbour.start), list(neighbour.stop)
    outer_stop[axis] = min(face + d, neighbour.stop[axis])
    return Box(inner_start, inner_stop), Box(outer_start, outer_stop)


def face_key(chunk_id: str, axis: int, side: str) -> str:
    return f"faces/{chunk_id}/{'xyz'[axis]}{side}.npy"


@dataclass(frozen=True, kw_only=True)
class SegmentJob:
    source: Layer
    target: Layer
    grid: ChunkGrid
    ids: IdSpace
    mode: Mode
    params: WatershedParams
    boundary_threshold: float
    connectivity: int
    work_url: str  # where face slabs go
    depth: Vec3  # thickness of the face slabs
    fill_missing: bool = False

    def labels(self, data: np.ndarray) -> np.ndarray:
        boundary = boundary_of(data)
        if self.mode == "cc":
            return cc_segment(boundary, self.boundary_threshold, self.connectivity)
        return watershed_fragments(boundary, self.params)

    def run(self, chunk: Chunk) -> dict:
        data = self.source.read(chunk.read_box, fill_missing=self.fill_missing)
        check_values(data, self.source.url, chunk.read_box, "segment", unit_range=True)
        labels = self.labels(data)
        count = int(labels.max())
        if count >= self.ids.stride:
            raise ValueError(f"{count} labels in one chunk exceed its id range {self.ids.stride}")
        offset = np.uint64(self.ids.offset(tuple(chunk.index)))
        labels[labels != 0] += offset
        origin = chunk.read_box.start
        self.target.write(chunk.write_box, labels[chunk.write_box.slices(origin)])
        if self.mode == "watershed":
            self._save_faces(chunk, labels)
        return {"objects": count}

    def _save_faces(self, chunk: Chunk, labels: np.ndarray) -> None:
        origin = chunk.read_box.start
        ctx = self.target.context
        for axis in range(3):
            boxes = face_boxes(self.grid, chunk, axis, self.depth)
            if boxes is not None:  # what this chunk sees beyond its + face
                put_array(
                    self.work_url,
                    face_key(chunk.id, axis, "+"),
                    labels[boxes[1].slices(origin)],
                    ctx,
                )
            if chunk.index[axis] > 0:  # ... and beyond its - face
                index = list(chunk.index)
                index[axis] -= 1
                inner, _ = face_boxes(self.grid, self.grid.chunk(index), axis, self.depth)
                put_array(
                    self.work_url, face_key(chunk.id, axis, "-"), labels[inner.slices(origin)], ctx
                )
