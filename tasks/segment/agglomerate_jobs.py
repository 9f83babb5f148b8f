"""Agglomeration from the region graph alone, over the graph's octree; then the mapping table.

`AgglomerateJob` runs once per octree node, level by level from the chunks up. A node merges
what it can decide (`agglomerate_node`) from:

- its graph part: the pairs completed there, and its supervoxels (closed here, or open with
  the voxels the node holds: a lower bound of their size);
- its children's carries: the regions they could not decide (blocked, all closed) with their
  sizes and the edges among them and to open supervoxels.

A region that merged is closed (only closed regions merge), so open regions are single
supervoxels, never merged below; the pairs completed at a node therefore join supervoxels that
are still their own region. A child's open supervoxel appears again in the node's own part
(closed now, or open with its larger count), whose count replaces the child's.

It writes a map (id → root) per node, as the stitching does, for the relabel step, and the
carry for its parent. `MappingJob` then writes the supervoxel → segment table, one part per
graph part: each supervoxel in the part where it closed, through the maps from there to the top.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from petavox.tasks.core.geometry import Chunk, ChunkGrid, Vec3
from petavox.tasks.core.objects import (
    get_array,
    get_arrays,
    put,
    put_array,
    put_arrays,
)
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.segment.agglomeration import RegionGraph, agglomerate_node
from petavox.tasks.segment.edits import Edits
from petavox.tasks.segment.equivalence import apply_maps, sorted_map
from petavox.tasks.segment.region_graph import (
    GraphPart,
    children,
    part_name,
    read_columns,
    read_part,
)

MAPS = "agglo-maps"
CARRY = "agglo-carry"
MAPPING_FOLDER = "mapping"  # under the output layer: supervoxel → segment


def map_key(level: int, node_id: str) -> str:
    return f"{MAPS}/{level}/{node_id}.npy"


@dataclass(frozen=True)
class MergeRule:
    """How regions merge: while the score is below `threshold` (see `agglomerate_node`)."""

    threshold: float
    size_penalty: float = 0.0
    size_floor: int = 4096


@dataclass(frozen=True, kw_only=True)
class AgglomerateJob:
    """One level of the octree: each node merges what it can decide (module docstring), its
    maps and carry going to `work_url`.

    Edits (`petavox.tasks.segment.edits`): a split drops its edges from the parts; the
    supervoxels the edits name are followed up the octree (with their current roots, in the
    carry), and the top node writes the joins as one more map level, ``top + 1``.
    """

    level: int
    top: int
    child_grid: ChunkGrid | None  # the level below (None at level 0)
    graph_url: str
    rule: MergeRule
    work_url: str
    context: StorageContext
    edits: Edits = Edits()

    def run(self, node: Chunk) -> dict:
        part = read_part(self.graph_url, self.level, node.id, self.context)
        if self.edits.splits:
            part.graph = part.graph.with_edges(self.edits.kept(part.graph.edges))
        graphs, watch = [part.graph], [self._watched_here(part)]
        if self.child_grid is not None:
            for child in children(node, self.child_grid):
                key = f"{CARRY}/{self.level - 1}/{child.id}.npz"
                arrays = get_arrays(self.work_url, key, self.context)
                carry = RegionGraph.from_arrays(arrays)
                keep = ~np.isin(carry.size_ids, part.graph.size_ids)  # counted again here
                carry.size_ids, carry.sizes = carry.size_ids[keep], carry.sizes[keep]
                graphs.append(carry)
                watch.append(arrays["watch"])
        graph = RegionGraph.combine(graphs)
        rule = self.rule
        mapping, up = agglomerate_node(
            graph, part.open_ids, rule.threshold, rule.size_penalty, rule.size_floor
        )
        put_array(self.work_url, map_key(self.level, node.id), mapping, self.context)
        watched = np.concatenate(watch).reshape(-1, 2)
        watched[:, 1] = apply_maps(watched[:, 1], [mapping])
        arrays = {**up.arrays(), "watch": watched}
        put_arrays(self.work_url, f"{CARRY}/{self.level}/{node.id}.npz", arrays, self.context)
        out = {"edges": len(part.graph.edges), "merged": len(mapping)}
        if self.level == self.top:  # every supervoxel is closed: the edits' segments
            out.update(self._finish(node, watched))
        return out

    def _finish(self, node: Chunk, watched: np.ndarray) -> dict:
        """The joins as map level top + 1; what of the edits could not be done."""
        ids, roots = watched[:, 0], watched[:, 1]
        joins = sorted_map(self.edits.join_map(ids, roots))
        put_array(self.work_url, map_key(self.top + 1, node.id), joins, self.context)
        report = {
            "unseparated_splits": self.edits.unseparated(ids, apply_maps(roots, [joins])),
            "unknown_supervoxels": self.edits.missing(ids),
        }
        return {k: v for k, v in report.items() if v}

    def _watched_here(self, part: GraphPart) -> np.ndarray:
        """(supervoxel, root) rows of the edited supervoxels closed in this part."""
        closed = part.graph.size_ids[part.closed]
        found = closed[np.isin(closed, self.edits.watched)]
        return np.stack([found, found], axis=1).astype(np.uint64)


@lru_cache(maxsize=64)
def load_map(work_url: str, level: int, node_id: str, context: StorageContext) -> np.ndarray:
    """Maps are immutable once written; a worker keeps the few its tasks share."""
    return get_array(work_url, map_key(level, node_id), context)


def node_maps(work_url: str, level: int, index: Vec3, top: int, ctx) -> list[np.ndarray]:
    """The maps of the node at `level`, `index` and of its ancestors, bottom up, and the
    edits' joins (level `top` + 1)."""
    maps = []
    for up in range(level, top + 2):
        node = Vec3(*(i >> (up - level) for i in index))
        maps.append(load_map(work_url, up, f"{node.x}_{node.y}_{node.z}", ctx))
    return maps


@dataclass(frozen=True, kw_only=True)
class MappingJob:
    """Per chunk of level 0: the mapping parts of the nodes whose first chunk it is (the node
    at level L with index i >> L when i is a multiple of 2^L)."""

    graph_url: str
    work_url: str  # the maps
    mapping_url: str  # where the table goes: ``mapping/<level>/<x>_<y>_<z>.parquet``
    top: int  # the top level
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        rows = 0
        for level in range(self.top + 1):
            if any(i % (1 << level) for i in chunk.index):
                break
            index = Vec3(*(i >> level for i in chunk.index))
            node_id = f"{index.x}_{index.y}_{index.z}"
            part = read_part(self.graph_url, level, node_id, self.context)
            svs = part.graph.size_ids[part.closed]
            maps = node_maps(self.work_url, level, index, self.top, self.context)
            self._write(level, node_id, svs, apply_maps(svs, maps))
            rows += len(svs)
        return {"supervoxels": rows}

    def _write(self, level: int, node_id: str, svs, segments) -> None:
        from petavox.tasks.synapse.table import columns_to_parquet

        part = np.full(len(svs), part_name(level, node_id), dtype=object)
        table = columns_to_parquet({"sv": svs, "segment": segments, "part": part})
        put(self.mapping_url, f"{MAPPING_FOLDER}/{level}/{node_id}.parquet", table, self.context)


def read_mapping(mapping_url: str, top: int, context: StorageContext) -> tuple[np.ndarray, ...]:
    """(supervoxels, their segments) from every part of the mapping table at `mapping_url`
    (octree levels 0 to `top`)."""
    table = read_columns(mapping_url, MAPPING_FOLDER, top, ("sv", "segment"), context)
    return table["sv"].astype(np.uint64), table["segment"].astype(np.uint64)
