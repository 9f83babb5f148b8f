"""A whole region graph in memory, agglomerated at several merge rules: a threshold sweep.

The octree agglomeration (`agglomerate_jobs`) gives exactly what one pass over the whole graph
gives (tests), so a graph small enough for one process, such as that of a ground-truth volume,
can be swept here without a task per level and threshold.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.segment.agglomerate_jobs import MergeRule
from petavox.tasks.segment.agglomeration import RegionGraph, agglomerate_node
from petavox.tasks.segment.edits import Edits
from petavox.tasks.segment.equivalence import apply_maps, components, sorted_map
from petavox.tasks.segment.region_graph import read_columns


def read_graph(graph_url: str, levels: int, context: StorageContext) -> RegionGraph:
    """Every part's pairs, and every supervoxel with its size (from its closed row)."""
    pairs = ("sv_a", "sv_b", "affinity_sum", "faces")
    edges = read_columns(graph_url, "edges", levels, pairs, context)
    svs = read_columns(graph_url, "supervoxels", levels, ("sv", "voxels", "closed"), context)
    if not len(svs["sv"]):
        raise FileNotFoundError(f"{graph_url} holds no region graph parts; rerun segment")
    closed = svs["closed"].astype(bool)
    graph = RegionGraph(
        edges=np.stack([edges["sv_a"], edges["sv_b"]], axis=1).astype(np.uint64),
        sums=edges["affinity_sum"].astype(np.float64),
        counts=edges["faces"].astype(np.int64),
        size_ids=svs["sv"][closed].astype(np.uint64),
        sizes=svs["voxels"][closed].astype(np.int64),
    )
    return RegionGraph.combine([graph])  # sorted, as a node's graph is


def sweep_mappings(
    graph: RegionGraph, rules: tuple[MergeRule, ...], edits: Edits | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per rule, (supervoxels, their segments): each supervoxel to the smallest id of its
    merged region, with the edits, as the octree agglomeration and its relabel give.

    One pass per size rule, at its highest threshold: the linkage is reducible, so merge
    scores never fall along the greedy order, and the merges below a lower threshold are the
    ones that pass makes first (a test checks each threshold against its own pass)."""
    edits = edits or Edits()
    if edits.splits:
        graph = graph.with_edges(edits.kept(graph.edges))
    ids = graph.size_ids
    found: dict[MergeRule, tuple[np.ndarray, np.ndarray]] = {}
    for sizes in {(r.size_penalty, r.size_floor) for r in rules}:
        same = [r for r in rules if (r.size_penalty, r.size_floor) == sizes]
        history: list[tuple[int, int, float]] = []
        top = max(r.threshold for r in same)
        agglomerate_node(graph, np.zeros(0, np.uint64), top, *sizes, history=history)
        merges = np.array([(a, b) for a, b, _ in history], dtype=np.uint64).reshape(-1, 2)
        scores = np.array([s for *_, s in history], dtype=np.float64)
        for rule in same:
            members, roots = components(merges[scores < rule.threshold], extra=ids)
            segments = roots[np.searchsorted(members, ids)]
            joins = sorted_map(edits.join_map(ids, segments))
            found[rule] = (ids, apply_maps(segments, [joins]))
    return [found[rule] for rule in rules]
