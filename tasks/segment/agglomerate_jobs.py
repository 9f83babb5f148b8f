"""Agglomeration over the octree: `ContactJob` per chunk (level 0), `MergeJob` per node above.

Each writes a map (id → root) for the relabel step and passes up the open and blocked part of
its region graph (with those regions' sizes) and the face records that say which fragments touch
which chunk faces. A fragment is open at a node while it has a voxel on one of the node's inner
faces (faces on the volume boundary do not count): its contacts, and its size, are then not all
known inside the node.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays, put_array, put_arrays
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.core.values import check_values
from petavox.tasks.segment.agglomeration import RegionGraph, agglomerate_node, contact_graph
from petavox.tasks.segment.watershed import affinities_of

MAPS = "agglo-maps"


def graph_key(level: int, node_id: str) -> str:
    return f"agglo/{level}/{node_id}.npz"


def face_records(
    labels: np.ndarray, chunk: Chunk, grid: ChunkGrid
) -> tuple[np.ndarray, np.ndarray]:
    """(fragment ids, rows [ix, iy, iz, face]) on the chunk's inner faces; face = 2 axis + side."""
    ids, rows = [], []
    for axis, side in itertools.product(range(3), (0, 1)):
        index = chunk.index[axis]
        if (side == 0 and index == 0) or (side == 1 and index == grid.grid_shape[axis] - 1):
            continue  # the volume boundary: nothing beyond it
        plane = np.take(labels, 0 if side == 0 else -1, axis=axis)
        found = np.unique(plane)
        found = found[found != 0]
        ids.append(found.astype(np.uint64))
        rows.append(np.tile([*chunk.index, 2 * axis + side], (len(found), 1)))
    if not ids:
        return np.zeros(0, np.uint64), np.zeros((0, 4), np.int64)
    return np.concatenate(ids), np.concatenate(rows).astype(np.int64)


def on_boundary(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Which face records lie on the outer faces of the node spanning chunks [lo, hi)."""
    axis, side = rows[:, 3] // 2, rows[:, 3] % 2
    at = rows[np.arange(len(rows)), axis]
    return np.where(side == 0, at == lo[axis], at == hi[axis] - 1)


def _save(work_url, level, node_id, mapping, up: RegionGraph, face_ids, face_rows, ctx) -> None:
    put_array(work_url, f"{MAPS}/{level}/{node_id}.npy", mapping, ctx)
    arrays = {**up.arrays(), "face_ids": face_ids, "face_rows": face_rows}
    put_arrays(work_url, graph_key(level, node_id), arrays, ctx)


@dataclass(frozen=True, kw_only=True)
class ContactJob:
    """Level 0: the chunk's region graph (voxel edges to each voxel's predecessor), merged."""

    fragments: Layer
    source: Layer
    grid: ChunkGrid
    threshold: float
    work_url: str
    fill_missing: bool = False
    size_penalty: float = 0.0  # see `agglomerate_node`
    size_floor: int = 4096

    def run(self, chunk: Chunk) -> dict:
        # one voxel before the chunk on each axis: its edges to the previous chunk are its own
        ext = Box(chunk.write_box.start - 1, chunk.write_box.stop)
        labels = self.fragments.read(ext)  # zeros outside the volume
        data = self.source.read(ext, fill_missing=self.fill_missing)
        check_values(data, self.source.url, ext, "segment", unit_range=True)
        affs = affinities_of(data)
        interior = (slice(1, None),) * 3
        graph = contact_graph(labels, affs)
        face_ids, face_rows = face_records(labels[interior], chunk, self.grid)
        mapping, up = agglomerate_node(
            graph, face_ids, self.threshold, self.size_penalty, self.size_floor
        )
        _save(self.work_url, 0, chunk.id, mapping, up, face_ids, face_rows, self.fragments.context)
        return {"edges": len(graph.edges), "merged": len(mapping), "passed_up": len(up.edges)}


@dataclass(frozen=True, kw_only=True)
class MergeJob:
    """Level ≥ 1: sum the children's passed-up graphs and merge what is now closed."""

    level: int
    child_grid: ChunkGrid
    chunk_grid: ChunkGrid
    threshold: float
    work_url: str
    context: StorageContext
    size_penalty: float = 0.0  # see `agglomerate_node`
    size_floor: int = 4096

    def run(self, node: Chunk) -> dict:
        graphs, face_ids, face_rows = [RegionGraph.empty()], [], []
        lo = [2 * i for i in node.index]
        hi = [min(2 * i + 2, n) for i, n in zip(node.index, self.child_grid.grid_shape)]
        for index in itertools.product(*(range(a, b) for a, b in zip(lo, hi))):
            part = get_arrays(
                self.work_url,
                graph_key(self.level - 1, self.child_grid.chunk(index).id),
                self.context,
            )
            graphs.append(RegionGraph.from_arrays(part))
            face_ids.append(part["face_ids"])
            face_rows.append(part["face_rows"])
        graph = RegionGraph.combine(graphs)
        ids = np.concatenate(face_ids) if face_ids else np.zeros(0, np.uint64)
        rows = np.concatenate(face_rows) if face_rows else np.zeros((0, 4), np.int64)
        span = 2**self.level
        first = np.asarray(node.index) * span
        last = np.minimum(first + span, np.asarray(self.chunk_grid.grid_shape))
        outer = on_boundary(rows, first, last)
        mapping, up = agglomerate_node(
            graph, ids[outer], self.threshold, self.size_penalty, self.size_floor
        )
        _save(
            self.work_url, self.level, node.id, mapping, up, ids[outer], rows[outer], self.context
        )
        return {"edges": len(graph.edges), "merged": len(mapping), "passed_up": len(up.edges)}
