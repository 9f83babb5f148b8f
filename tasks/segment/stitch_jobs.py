"""The three steps of stitching: match objects across chunk faces, resolve, relabel.

`MatchJob` (per chunk) writes the edges between its ids and its + neighbours' ids.
`ResolveJob` (per octree node, one level at a time) unions them, see
`petavox.tasks.segment.equivalence`.
`RelabelJob` (per chunk) rewrites the chunk with the final ids, with fastremap.

Matching, by mode:
- cc: two voxels in different chunks that are neighbours under the connectivity and both
  foreground are one object. Every such pair lies in the two-voxel slab around some chunk's +
  face, so reading those slabs gives exactly the single-volume components.
- watershed: across a face, each side has its own labels on both sides of the face (its write
  box, and its halo prediction that the segment step stored). Objects a (this chunk) and b (the
  neighbour) match when they share more than half of each one's voxels in the two slabs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import fastremap
import numpy as np

from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_array, put_array
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.segment.equivalence import (
    IdSpace,
    apply_maps,
    resolve_node,
    sorted_map,
    unique_edges,
    unique_pairs,
)
from petavox.tasks.segment.label_counts import LabelCounts, top_counts
from petavox.tasks.segment.segment_jobs import Mode, face_boxes, face_key

MATCH_FRACTION = 0.5
MAPS = "maps"


def edges_key(level: int, node_id: str) -> str:
    return f"edges/{level}/{node_id}.npy"


def map_key(level: int, node_id: str) -> str:
    return f"{MAPS}/{level}/{node_id}.npy"


def half_offsets(connectivity: int) -> list[tuple[int, int, int]]:
    """Neighbour offsets under 6/18/26-connectivity, one of each ± pair."""
    limit = {6: 1, 18: 2, 26: 3}[connectivity]
    out = []
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            for dz in (-1, 0, 1):
                d = (dx, dy, dz)
                if 0 < sum(map(abs, d)) <= limit and next(v for v in d if v) > 0:
                    out.append(d)
    return out


def adjacent_pairs(labels: np.ndarray, connectivity: int) -> np.ndarray:
    """(n, 2) pairs of different non-zero labels that touch under `connectivity`."""
    found = []
    for d in half_offsets(connectivity):
        a = labels[tuple(slice(max(0, -k), labels.shape[i] - max(0, k)) for i, k in enumerate(d))]
        b = labels[tuple(slice(max(0, k), labels.shape[i] - max(0, -k)) for i, k in enumerate(d))]
        hit = (a != b) & (a != 0) & (b != 0)
        if hit.any():
            found.append(np.stack([a[hit], b[hit]], axis=1))
    return unique_edges(np.concatenate(found)) if found else np.zeros((0, 2), np.uint64)


def overlap_matches(mine: np.ndarray, theirs: np.ndarray, fraction: float) -> np.ndarray:
    """Pairs (a, b) whose overlap exceeds `fraction` of a's voxels and of b's.

    Mutual majority: a chunk that merged two objects its neighbour keeps apart matches only the
    larger one, so one chunk's merge error does not spread along the object.
    """
    mine, theirs = mine.ravel(), theirs.ravel()
    keep = (mine != 0) & (theirs != 0)
    if not keep.any():
        return np.zeros((0, 2), np.uint64)
    pairs, inverse = unique_pairs(np.stack([mine[keep], theirs[keep]], axis=1))
    counts = np.bincount(inverse, minlength=len(pairs))
    a_ids, a_sizes = np.unique(mine[keep], return_counts=True)
    b_ids, b_sizes = np.unique(theirs[keep], return_counts=True)
    size_a = a_sizes[np.searchsorted(a_ids, pairs[:, 0])]
    size_b = b_sizes[np.searchsorted(b_ids, pairs[:, 1])]
    ok = (counts > fraction * size_a) & (counts > fraction * size_b)
    return pairs[ok].astype(np.uint64)


@dataclass(frozen=True, kw_only=True)
class MatchJob:
    layer: Layer
    grid: ChunkGrid
    mode: Mode
    connectivity: int
    work_url: str
    depth: Vec3

    def run(self, chunk: Chunk) -> dict:
        found = [np.zeros((0, 2), np.uint64)]
        for axis in range(3):
            boxes = face_boxes(self.grid, chunk, axis, self.depth)
            if boxes is None:
                continue
            if self.mode == "cc":
                found.append(self._cc_face(chunk, axis))
            else:
                found.append(self._watershed_face(chunk, axis, *boxes))
        edges = unique_edges(np.concatenate(found))
        put_array(self.work_url, edges_key(0, chunk.id), edges, self.layer.context)
        return {"edges": len(edges)}

    def _cc_face(self, chunk: Chunk, axis: int) -> np.ndarray:
        # the two voxel planes at the face, one voxel further in the other + directions
        start, stop = list(chunk.write_box.start), list(chunk.write_box.stop + 1)
        start[axis] = chunk.write_box.stop[axis] - 1
        slab = Box(start, stop).intersection(self.grid.bounds)
        return adjacent_pairs(self.layer.read(slab), self.connectivity)

    def _watershed_face(self, chunk: Chunk, axis: int, inner: Box, outer: Box) -> np.ndarray:
        both = Box(inner.start, outer.stop)
        written = self.layer.read(both)
        split = inner.shape[axis]
        neighbour = list(chunk.index)
        neighbour[axis] += 1
        ctx = self.layer.context
        mine, theirs = written.copy(), written
        cut = [slice(None)] * 3
        cut[axis] = slice(split, None)
        mine[tuple(cut)] = get_array(self.work_url, face_key(chunk.id, axis, "+"), ctx)
        cut[axis] = slice(0, split)
        theirs[tuple(cut)] = get_array(
            self.work_url, face_key(self.grid.chunk(neighbour).id, axis, "-"), ctx
        )
        return overlap_matches(mine, theirs, MATCH_FRACTION)


@lru_cache(maxsize=32)
def _load_map(work_url: str, key: str, context: StorageContext) -> np.ndarray:
    """Maps are immutable once written; a worker keeps the few its chunks share."""
    return get_array(work_url, key, context)


@dataclass(frozen=True, kw_only=True)
class ResolveJob:
    """Octree level `level` ≥ 1: each node (a chunk of `grid`) resolves its children's edges."""

    level: int
    grid: ChunkGrid  # the level's node grid
    child_grid: ChunkGrid
    ids: IdSpace
    work_url: str
    context: StorageContext

    def run(self, node: Chunk) -> dict:
        # Every edge with an end in this node must arrive here, so that both subtrees of a
        # crossing edge link their side. Level 1 also reads the chunks just before the node:
        # a chunk's matches reach one chunk beyond its + faces.
        reach = 1 if self.level == 1 else 0
        lo = [max(0, 2 * i - reach) for i in node.index]
        hi = [min(2 * i + 2, n) for i, n in zip(node.index, self.child_grid.grid_shape)]
        parts = [np.zeros((0, 2), np.uint64)]
        for index in itertools.product(*(range(a, b) for a, b in zip(lo, hi))):
            key = edges_key(self.level - 1, self.child_grid.chunk(index).id)
            parts.append(get_array(self.work_url, key, self.context))
        edges = np.concatenate(parts).astype(np.uint64)
        chunks = self.ids.chunk_index(edges.ravel()).reshape(-1, 2, 3)
        inside = ((chunks >> self.level) == np.asarray(node.index)).all(axis=2)
        touching = inside.any(axis=1)
        mapping, up = resolve_node(edges[touching], inside[touching])
        put_array(self.work_url, map_key(self.level, node.id), sorted_map(mapping), self.context)
        put_array(self.work_url, edges_key(self.level, node.id), up, self.context)
        return {"merged": len(mapping), "passed_up": len(up)}


@dataclass(frozen=True, kw_only=True)
class RelabelJob:
    """Write a chunk of `source` into `target` through the chain of its ancestors' maps at
    `levels` (bottom up). Never in place: the source is left as it was, so a task killed
    mid-write, or run twice, writes the same chunk again (relabelling twice would not).

    With `top_k` (the relabel that writes the output), it returns the chunk's `top_k` largest
    final labels (`LabelCounts`) instead of the count of relabelled ids."""

    source: Layer
    target: Layer
    work_url: str
    map_dir: str  # "maps" (stitching) or "agglo-maps" (agglomeration)
    levels: tuple[int, ...]
    top_k: int = 0

    def run(self, chunk: Chunk) -> dict | LabelCounts:
        maps = []
        for level in self.levels:
            node = Vec3(*(i >> level for i in chunk.index))
            key = f"{self.map_dir}/{level}/{node.x}_{node.y}_{node.z}.npy"
            maps.append(_load_map(self.work_url, key, self.source.context))
        labels = self.source.read(chunk.write_box)
        present, counts = fastremap.unique(labels, return_counts=True)
        final = apply_maps(present, maps)
        changed = present != final
        if changed.any():
            table = dict(zip(present[changed].tolist(), final[changed].tolist()))
            labels = fastremap.remap(labels, table, preserve_missing_labels=True, in_place=True)
        self.target.write(chunk.write_box, labels)
        if self.top_k:
            return top_counts(final, counts, self.top_k)
        return {"relabelled": int(changed.sum())}
