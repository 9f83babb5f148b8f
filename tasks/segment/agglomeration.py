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

Optional size penalty (`size_penalty` > 0): a merge's score gains
``size_penalty * max(0, log2(min(size_a, size_b) / size_floor))``, sizes in voxels, so two large
regions need a stronger contact than two small fragments. It keeps the result exact:

- still reducible: the penalty is nondecreasing in both sizes and merging only grows regions,
  so ``d(a∪b, c) >= min(d(a, c), d(b, c))`` (mean part ≥ the smaller old one, penalty ≥ both);
- sizes travel with the graph (`RegionGraph.size_ids`, `sizes`): a region's size at a node is
  the sum of its voxels the node's chunks hold (each voxel counted in the one chunk that owns
  it, summed by id in `combine`). A closed region's size is complete; an open region's is a
  lower bound, so its edges' scores are lower bounds too. A node merges only closed regions,
  whose scores are exact, and blocks a closed region whose best edge by these lower bounds
  leads to an open one: conservative, as without the penalty. A node passes up the sizes of
  *all* its open regions, with or without edges there (another child may hold their contacts);
- a region seen only in the voxel layer before a chunk (which the chunk's edges to their
  predecessors reach into) has no voxel in the node: size 0, again a lower bound. Its
  neighbours there all lie on the chunk's first planes, so they are open and it is blocked,
  never merged, as without the penalty.

The heap holds, per edge, at most one live entry, whose key is at most the edge's score: a
merge that lowers a score pushes a new entry; one that raises it (a worse mean, or a penalty
that rose as a region grew, on any edge of the merged region) leaves the old entry, which is
pushed again with the new score when it comes up. Edges are thus decided in the order of their
current scores, as the global pass does; with a penalty of 0 the scores, and so the merges and
the graph passed up, are exactly those of the plain algorithm.

Why by hand: waterz and the other libraries agglomerate one in-memory volume; none merges part
of a region graph and hands the rest on.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import fastremap
import numpy as np

from petavox.tasks.segment.equivalence import unique_pairs

EMPTY_EDGES = np.zeros((0, 2), np.uint64)
AFFINITY_STEPS = float(2**24)
KEYS = ("edges", "sums", "counts", "size_ids", "sizes")

#: an edge's score from (id a, id b, summed affinity, voxel-edge count)
Score = Callable[[int, int, float, int], float]


def _no_ids() -> np.ndarray:
    return np.zeros(0, np.uint64)


def _no_sizes() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclass(kw_only=True)
class RegionGraph:
    """Contact statistics between regions (summed affinity and voxel-edge count per pair) and
    the regions' sizes (voxels; a region without an entry counts 0)."""

    edges: np.ndarray  # (n, 2) uint64, low id first, no duplicates
    sums: np.ndarray  # (n,) float64
    counts: np.ndarray  # (n,) int64
    size_ids: np.ndarray = field(default_factory=_no_ids)  # (k,) uint64, sorted, no duplicates
    sizes: np.ndarray = field(default_factory=_no_sizes)  # (k,) int64

    @classmethod
    def empty(cls, **sizes: np.ndarray) -> RegionGraph:
        """No edges (and the `size_ids`, `sizes` given, if any)."""
        return cls(edges=EMPTY_EDGES, sums=np.zeros(0), counts=np.zeros(0, np.int64), **sizes)

    @classmethod
    def combine(cls, graphs: list[RegionGraph]) -> RegionGraph:
        """Sum the statistics of pairs, and the sizes of regions, that appear in several graphs."""
        size_ids = np.concatenate([g.size_ids for g in graphs]).astype(np.uint64)
        ids, where = np.unique(size_ids, return_inverse=True)
        # float64 sums of voxel counts are exact below 2^53 voxels
        weights = np.concatenate([g.sizes for g in graphs]).astype(np.float64)
        sizes = np.bincount(where.ravel(), weights, len(ids)).astype(np.int64)
        edges = np.concatenate([g.edges for g in graphs]).astype(np.uint64).reshape(-1, 2)
        if len(edges) == 0:
            return cls.empty(size_ids=ids, sizes=sizes)
        unique, inverse = unique_pairs(edges)
        sums = np.bincount(inverse, np.concatenate([g.sums for g in graphs]), len(unique))
        counts = np.bincount(inverse, np.concatenate([g.counts for g in graphs]), len(unique))
        return cls(
            edges=unique, sums=sums, counts=counts.astype(np.int64), size_ids=ids, sizes=sizes
        )

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> RegionGraph:
        """The graph `arrays` stored (files written before sizes existed have none)."""
        sized = {k: arrays[k] for k in ("size_ids", "sizes") if k in arrays}
        return cls(edges=arrays["edges"], sums=arrays["sums"], counts=arrays["counts"], **sized)

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in KEYS}

    def with_edges(self, keep: np.ndarray) -> RegionGraph:
        """The graph with only the edges `keep` selects (a mask or indices), the same sizes."""
        return RegionGraph(
            edges=self.edges[keep],
            sums=self.sums[keep],
            counts=self.counts[keep],
            size_ids=self.size_ids,
            sizes=self.sizes,
        )

    def ids(self) -> np.ndarray:
        return np.unique(self.edges)

    def size_map(self) -> dict[int, int]:
        return dict(zip(self.size_ids.tolist(), self.sizes.tolist()))


def quantised(affinities: np.ndarray) -> np.ndarray:
    """Affinities rounded to multiples of 2⁻²⁴ (float32's step just below 1), as float64: their
    sums are then exact below 2²⁹ voxel faces, so equal in any order of addition (any chunking,
    any merge order)."""
    return np.round(np.asarray(affinities, dtype=np.float64) * AFFINITY_STEPS) / AFFINITY_STEPS


def contact_graph(labels: np.ndarray, affs: np.ndarray) -> RegionGraph:
    """Statistics of the voxel edges from each interior voxel to its predecessor on each axis,
    and the voxels of each label in the interior.

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
        aff = quantised(affs[(*interior, axis)])
        hit = (a != b) & (a != 0) & (b != 0)
        pairs = np.sort(np.stack([a[hit], b[hit]], axis=1), axis=1)
        ones = np.ones(len(pairs), np.int64)
        graphs.append(RegionGraph(edges=pairs, sums=aff[hit].astype(np.float64), counts=ones))
    ids, voxels = fastremap.unique(labels[interior], return_counts=True)
    region = ids != 0
    sizes = voxels[region].astype(np.int64)
    graphs.append(RegionGraph.empty(size_ids=ids[region].astype(np.uint64), sizes=sizes))
    return RegionGraph.combine(graphs)


def agglomerate_node(
    graph: RegionGraph,
    open_ids: np.ndarray,
    threshold: float,
    size_penalty: float = 0.0,
    size_floor: int = 4096,
    history: list[tuple[int, int, float]] | None = None,
) -> tuple[np.ndarray, RegionGraph]:
    """Merge what this node can decide. Returns (map rows (id, root), graph passed up).

    Roots are the smallest id of a merged region, so relabelling with the result is idempotent.
    `size_penalty` and `size_floor`: the size penalty (module docstring); 0 is none. `history`,
    if given, receives each merge as (region merged away, region kept, score), in order.
    """
    if not (size_penalty >= 0 and size_floor > 0):
        raise ValueError(f"size penalty {size_penalty} must be ≥ 0, size floor {size_floor} > 0")
    opened = set(np.asarray(open_ids, dtype=np.uint64).tolist())
    sizes = graph.size_map()
    score = _scorer(sizes, size_penalty, size_floor)
    adj, heap = _adjacency(graph, opened, threshold, score)
    blocked: set[int] = set()
    merged: dict[int, int] = {}
    while heap:
        key, a, b = heapq.heappop(heap)
        stats = adj.get(a, {}).get(b)
        if stats is None or stats[2] != key:
            continue  # stale: a region merged, or the edge was pushed again, since
        stats[2] = None
        now = score(a, b, stats[0], stats[1])
        if now != key:  # its score rose since (a worse mean, a larger region): decide it later
            if now < threshold:
                stats[2] = now
                heapq.heappush(heap, (now, a, b))
            continue
        a_free = a not in opened and a not in blocked
        b_free = b not in opened and b not in blocked
        if a_free and b_free:
            _merge(adj, heap, merged, sizes, score, min(a, b), max(a, b), threshold)
            if history is not None:
                history.append((max(a, b), min(a, b), now))
        elif a_free or b_free:
            blocked.add(a if a_free else b)  # its best edge waits on a higher node
    rows = [(k, v) for k, v in merged.items()]
    mapping = np.array(sorted(_flatten(rows)), dtype=np.uint64).reshape(-1, 2)
    return mapping, _passed_up(adj, sizes, opened | blocked)


def _scorer(sizes: dict[int, int], penalty: float, floor: int) -> Score:
    """1 − mean affinity, plus the size penalty of the smaller region (sizes read when called,
    so merges show). A penalty of 0 adds nothing, not even 0.0."""
    if penalty == 0:
        return lambda a, b, s, c: 1.0 - s / c

    def score(a: int, b: int, s: float, c: int) -> float:
        smaller = min(sizes.get(a, 0), sizes.get(b, 0))
        return 1.0 - s / c + (penalty * math.log2(smaller / floor) if smaller > floor else 0.0)

    return score


def _adjacency(graph: RegionGraph, opened: set[int], threshold: float, score: Score):
    """(adjacency {a: {b: [sum, count, key of the edge's live heap entry or None]}}, heap)."""
    adj: dict[int, dict[int, list]] = defaultdict(dict)
    heap = []
    for (a, b), s, c in zip(graph.edges.tolist(), graph.sums.tolist(), graph.counts.tolist()):
        adj[a][b] = adj[b][a] = stats = [s, c, None]
        now = score(a, b, s, c)
        if now < threshold and not (a in opened and b in opened):
            stats[2] = now
            heap.append((now, a, b))
    heapq.heapify(heap)
    return adj, heap


def _merge(adj, heap, merged, sizes, score: Score, keep: int, gone: int, threshold: float) -> None:
    """Fold region `gone` into `keep`, summing the sizes and the statistics of shared
    neighbours. A score that fell gets a new heap entry; one that rose keeps its old, lower
    entry (re-pushed when popped), as do `keep`'s other edges, whose penalty may have risen."""
    if gone in sizes:
        sizes[keep] = sizes.get(keep, 0) + sizes.pop(gone)
    del adj[keep][gone]
    for n, (s, c, _) in adj.pop(gone).items():
        if n == keep:
            continue
        del adj[n][gone]
        acc = adj[keep].get(n)
        stats = [s + acc[0], c + acc[1], acc[2]] if acc else [s, c, None]
        adj[keep][n] = adj[n][keep] = stats
        now = score(keep, n, stats[0], stats[1])
        if now < threshold and (stats[2] is None or now < stats[2]):
            stats[2] = now
            heapq.heappush(heap, (now, min(keep, n), max(keep, n)))
    merged[gone] = keep


def _passed_up(adj, sizes: dict[int, int], keep: set[int]) -> RegionGraph:
    """The edges between kept (open and blocked) regions, and the sizes of all of them."""
    edges, sums, counts = [], [], []
    for a, nbrs in adj.items():
        if a not in keep:
            continue
        for b, (s, c, _) in nbrs.items():
            if a < b and b in keep:
                edges.append((a, b))
                sums.append(s)
                counts.append(c)
    ids = sorted(r for r in keep if r in sizes)
    return RegionGraph(
        edges=np.array(edges, dtype=np.uint64).reshape(-1, 2),
        sums=np.array(sums, dtype=np.float64),
        counts=np.array(counts, dtype=np.int64),
        size_ids=np.array(ids, dtype=np.uint64),
        sizes=np.array([sizes[r] for r in ids], dtype=np.int64),
    )


def _flatten(rows: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Point every merged id straight at its final root."""
    parent = dict(rows)

    def root(x: int) -> int:
        while x in parent:
            x = parent[x]
        return x

    return [(k, root(k)) for k in parent]
