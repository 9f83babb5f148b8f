"""The `segment` stage on one in-memory volume: watershed fragments, then mean-affinity
agglomeration, in this process.

The stage's result does not depend on its chunking (tests), so one chunk holding the whole
volume gives it; `petavox tune` uses this to try many parameters on a held-out volume in
seconds instead of a pipeline run each.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.segment.agglomeration import RegionGraph, agglomerate_node, contact_graph
from petavox.tasks.segment.equivalence import apply_maps
from petavox.tasks.segment.watershed import (
    WatershedParams,
    affinities_of,
    boundary_of,
    watershed_fragments,
)


def fragments_and_graph(data: np.ndarray, params: WatershedParams):
    """(fragments uint64 (x,y,z), their region graph) of a boundary map (x,y,z) or affinities
    (x,y,z,3), float 0-1, as the segment and agglomerate jobs make them."""
    fragments = watershed_fragments(boundary_of(data), params)
    # contact_graph takes the interior plus one voxel before it on each axis: pad with no region
    labels = np.pad(fragments, ((1, 0), (1, 0), (1, 0)))
    padded = np.pad(affinities_of(data), ((1, 0), (1, 0), (1, 0), (0, 0)))
    return fragments, contact_graph(labels, padded)


def agglomerate(
    fragments: np.ndarray,
    graph: RegionGraph,
    merge_threshold: float,
    size_penalty: float = 0.0,
    size_floor: int = 4096,
) -> np.ndarray:
    """Fragments relabelled by mean-affinity merges up to `merge_threshold` (score 1 − mean,
    plus the size penalty of `agglomerate_node`)."""
    nothing_open = np.zeros(0, np.uint64)
    mapping, _ = agglomerate_node(graph, nothing_open, merge_threshold, size_penalty, size_floor)
    return apply_maps(fragments, [mapping]) if len(mapping) else fragments


def segment_volume(
    data: np.ndarray,
    params: WatershedParams,
    merge_threshold: float,
    size_penalty: float = 0.0,
    size_floor: int = 4096,
) -> np.ndarray:
    """What `segment` (watershed mode) writes for this map, as one chunk."""
    fragments, graph = fragments_and_graph(data, params)
    return agglomerate(fragments, graph, merge_threshold, size_penalty, size_floor)
