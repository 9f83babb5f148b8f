"""Mean-affinity agglomeration of watershed fragments, distributed over an octree of chunks.

The whole-volume algorithm (waterz's `MeanAffinity`): repeatedly merge the two adjacent regions
whose contact has the highest mean affinity, updating the contact statistics, until the best
score ``1 - mean affinity`` reaches the threshold. Its linkage is *reducible*: the score of a
merged region to a neighbour is a weighted mean of the two old scores, never below both. For
such linkages, merging any pair of regions that are each other's best neighbour gives the same
result as the global order (the nearest-neighbour-chain theorem). So a node of the octree may
merge two regions as soon as both are *closed* (they touch none of the node's outer faces, so
all their contacts, and all their scores, are known) and no better edge of either is still
pending. A region whose best edge leads to an open region, or to a region waiting on one, is
*blocked* until a higher node. Everything else is final and dropped, so a node passes up only
the open and blocked regions and the edges between them: the same result as one pass over the
whole volume, with memory that follows chunk faces.

Why by hand: waterz and the other libraries agglomerate one in-memory volume; none merges part
of a region graph and hands the rest on.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from petavox.tasks.segment.equivalence import unique_pairs

EMPTY_EDGES = np.zeros((0, 2), np.uint64)


@dataclass(kw_only=True)
class RegionGraph:
    """Contact statistics between regions: summed affinity and voxel-edge count per pair."""

    edges: np.ndarray  # (n, 2) uint64, low id first, no duplicates
    sums: np.ndarray  # (n,) float64
    counts: np.ndarray  # (n,) int64

    @classmethod
    def empty(cls) -> RegionGraph:
        return cls(edges=EMPTY_EDGES, sums=np.zeros(0), counts=np.zeros(0, np.int64))

    @classmethod
    def combine(cls, graphs: list[RegionGraph]) -> RegionGraph:
        """Sum the statistics of pairs that appear in several graphs."""
        edges = np.concatenate([g.edges for g in graphs]).astype(np.uint64).reshape(-1, 2)
        if len(edges) == 0:
            return cls.empty()
        unique, inverse = unique_pairs(edges)
        sums = np.bincount(inverse, np.concatenate([g.sums for g in graphs]), len(unique))
        counts = np.bincount(inverse, np.concatenate([g.counts for g in graphs]), len(unique))
        return cls(edges=unique, sums=sums, counts=counts.astype(np.int64))

    def ids(self) -> np.ndarray:
        return np.unique(self.edges)


def contact_graph(labels: np.ndarray, affs: np.ndarray) -> RegionGraph:
    """Statistics of the voxel edges from each interior voxel to its predecessor on each axis.

    `labels` and `affs` cover the interior plus one voxel before it on every axis (the interior
    is ``[1:, 1:, 1:]``); `affs[..., c]` is the affinity between a voxel and its predecessor
    along axis c. Label 0 is no region.
    """
    graphs = []
    interior = (slice(1, None),) * 3
    for axis in range(3):
        prev = list(interior)
        prev[axis] = slice(0, -1)
        a, b = labels[interior], labels[tuple(prev)]
        aff = affs[(*interior, axis)]
        hit = (a != b) & (a != 0) & (b != 0)
        pairs = np.sort(np.stack([a[hit], b[hit]], axis=1), axis=1)
        ones = np.ones(len(pairs), np.int64)
        graphs.append(RegionGraph(edges=pairs, sums=aff[hit].astype(np.float64), counts=ones))
    return RegionGraph.combine(graphs)


def agglomerate_node(
    graph: RegionGraph, open_ids: np.ndarray, threshold: float
) -> tuple[np.ndarray, RegionGraph]:
    """Merge what this node can decide. Returns (map rows (id, root), graph passed up).

    Roots are the smallest id of a merged region, so relabelling with the result is idempotent.
    """
    opened = set(np.asarray(open_ids, dtype=np.uint64).tolist())
    adj: dict[int, dict[int, list]] = defaultdict(dict)
    heap = []
    for (a, b), s, c in zip(graph.edges.tolist(), graph.sums.tolist(), graph.counts.tolist()):
        adj[a][b] = adj[b][a] = [s, c]
        score = 1.0 - s / c
        if score < threshold and not (a in opened and b in opened):
            heap.append((score, a, b))
    heapq.heapify(heap)
    blocked: set[int] = set()
    merged: dict[int, int] = {}
    while heap:
        score, a, b = heapq.heappop(heap)
        stats = adj.get(a, {}).get(b)
        if stats is None or 1.0 - stats[0] / stats[1] != score:
            continue  # stale: a region merged since this entry was pushed
        a_free = a not in opened and a not in blocked
        b_free = b not in opened and b not in blocked
        if a_free and b_free:
            _merge(adj, heap, merged, min(a, b), max(a, b), opened, threshold)
        elif a_free or b_free:
            blocked.add(a if a_free else b)  # its best edge waits on a higher node
    keep = opened | blocked
    rows = [(k, v) for k, v in merged.items()]
    mapping = np.array(sorted(_flatten(rows)), dtype=np.uint64).reshape(-1, 2)
    edges, sums, counts = [], [], []
    for a, nbrs in adj.items():
        if a not in keep:
            continue
        for b, (s, c) in nbrs.items():
            if a < b and b in keep:
                edges.append((a, b))
                sums.append(s)
                counts.append(c)
    up = RegionGraph(
        edges=np.array(edges, dtype=np.uint64).reshape(-1, 2),
        sums=np.array(sums, dtype=np.float64),
        counts=np.array(counts, dtype=np.int64),
    )
    return mapping, up


def _merge(adj, heap, merged, keep: int, gone: int, opened: set, threshold: float) -> None:
    """Fold region `gone` into `keep`, summing the statistics of shared neighbours."""
    del adj[keep][gone]
    for n, (s, c) in adj.pop(gone).items():
        if n == keep:
            continue
        del adj[n][gone]
        acc = adj[keep].get(n)
        stats = [s + acc[0], c + acc[1]] if acc else [s, c]
        adj[keep][n] = adj[n][keep] = stats
        score = 1.0 - stats[0] / stats[1]
        if score < threshold:
            heapq.heappush(heap, (score, min(keep, n), max(keep, n)))
    merged[gone] = keep


def _flatten(rows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Point every merged id straight at its final root."""
    parent = dict(rows)

    def root(x: int) -> int:
        while x in parent:
            x = parent[x]
        return x

    return [(k, root(k)) for k in parent]
