"""The supervoxels' region graph, built chunk by chunk up an octree: every pair once, complete.

The table (Parquet, in the supervoxel layer's ``region_graph/`` folder, one part per octree
node that completed something; its ``info`` says how it was made):

``edges/<level>/<x>_<y>_<z>.parquet``, one row per pair of touching supervoxels:

| column | type | meaning |
| --- | --- | --- |
| sv_a, sv_b | uint64 | the two supervoxels, sv_a < sv_b |
| faces | int64 | contact area: voxel faces between them (6-connected) |
| affinity_sum | float64 | summed affinity over those faces |
| affinity_mean | float64 | affinity_sum / faces |
| part | string | the octree node that wrote the row: ``<level>/<x>_<y>_<z>`` |

``supervoxels/<level>/<x>_<y>_<z>.parquet``, the supervoxels the node saw:

| column | type | meaning |
| --- | --- | --- |
| sv | uint64 | supervoxel id |
| voxels | int64 | its voxels inside the node (all of them when ``closed``) |
| closed | bool | true in exactly one part per supervoxel: where it was complete |
| x, y, z | int64 | a voxel of it (closed rows: its first in z, then y, then x order) |
| part | string | as above |

A supervoxel is *closed* at a node when the node holds voxels of it and it touches none of the
node's faces that lie inside the volume: it lies wholly in the node. A pair's contacts are all
known at the first node where one of its two supervoxels is closed, and the pair is written
there, once. Pairs of two open supervoxels, and the open supervoxels' voxel counts, go up to the
parent (the *carry*, in the work folder). The top node has no inner faces: it closes everything.
So the rows do not depend on the chunking (only ``part`` does), and a node holds the pairs that
cross its children's faces, never the volume's.

Affinities are summed in multiples of 2⁻²⁴ (`contact_graph`), so sums are exact whatever the
order of addition: the same sums from any chunking, in any merge order.

The agglomeration (`petavox.tasks.segment.agglomerate_jobs`) reads these parts only.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get, get_arrays, get_many, list_keys, put, put_arrays
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.core.values import check_values
from petavox.tasks.segment.agglomeration import RegionGraph, contact_graph
from petavox.tasks.segment.watershed import affinities_of

GRAPH_FOLDER = "region_graph"  # under the supervoxel layer
CARRY = "graph-carry"  # under the work folder


def part_name(level: int, node_id: str) -> str:
    return f"{level}/{node_id}"


def children(node: Chunk, child_grid: ChunkGrid) -> list[Chunk]:
    """The (up to 8) nodes of `child_grid` under `node` of the next level up."""
    lo = [2 * i for i in node.index]
    hi = [min(2 * i + 2, n) for i, n in zip(node.index, child_grid.grid_shape)]
    return [child_grid.chunk(i) for i in itertools.product(*(range(a, b) for a, b in zip(lo, hi)))]


def face_records(
    labels: np.ndarray, chunk: Chunk, grid: ChunkGrid
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, rows [ix, iy, iz, face]) of the labels on the chunk's faces inside the volume;
    face = 2 axis + side."""
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


@dataclass(kw_only=True)
class GraphPart:
    """What one node wrote: its complete pairs, and its supervoxels (closed or not)."""

    graph: RegionGraph  # the pairs; size_ids/sizes: the supervoxels and their voxels here
    closed: np.ndarray  # (k,) bool, per size id
    anchors: np.ndarray  # (k, 3) int64 x, y, z per size id: its first voxel here (z-major)

    @property
    def open_ids(self) -> np.ndarray:
        return self.graph.size_ids[~self.closed]

    def tables(self, part: str) -> tuple[bytes, bytes]:
        """(edges, supervoxels) as Parquet."""
        from petavox.tasks.synapse.table import columns_to_parquet

        g = self.graph
        means = g.sums / np.maximum(g.counts, 1)
        edges = {
            "sv_a": g.edges[:, 0],
            "sv_b": g.edges[:, 1],
            "faces": g.counts,
            "affinity_sum": g.sums,
            "affinity_mean": means,
            "part": np.full(len(g.edges), part, dtype=object),
        }
        svs = {
            "sv": g.size_ids,
            "voxels": g.sizes,
            "closed": self.closed,
            **{axis: self.anchors[:, i] for i, axis in enumerate("xyz")},
            "part": np.full(len(g.size_ids), part, dtype=object),
        }
        return columns_to_parquet(edges), columns_to_parquet(svs)

    @classmethod
    def from_tables(cls, edges: dict[str, np.ndarray], svs: dict[str, np.ndarray]) -> GraphPart:
        graph = RegionGraph(
            edges=np.stack([edges["sv_a"], edges["sv_b"]], axis=1).astype(np.uint64),
            sums=edges["affinity_sum"].astype(np.float64),
            counts=edges["faces"].astype(np.int64),
            size_ids=svs["sv"].astype(np.uint64),
            sizes=svs["voxels"].astype(np.int64),
        )
        anchors = np.stack([svs[a] for a in "xyz"], axis=1).astype(np.int64).reshape(-1, 3)
        return cls(graph=graph, closed=svs["closed"].astype(bool), anchors=anchors)


def split_node(
    graph: RegionGraph, open_ids: np.ndarray, anchors: np.ndarray
) -> tuple[GraphPart, RegionGraph]:
    """(this node's part, the carry): pairs with a closed end are complete and written here;
    the rest, and the open supervoxels' voxel counts, go up. A supervoxel with no voxel here (one
    the node's edges reach just before its first planes) is open: it lies elsewhere."""
    closed = (graph.sizes > 0) & ~np.isin(graph.size_ids, open_ids)
    closed_ids = graph.size_ids[closed]
    complete = np.isin(graph.edges, closed_ids).any(axis=1)
    part = graph.with_edges(complete)
    carry = graph.with_edges(~complete)
    carry.size_ids, carry.sizes = graph.size_ids[~closed], graph.sizes[~closed]
    return GraphPart(graph=part, closed=closed, anchors=anchors), carry


def part_keys(level: int, node_id: str) -> tuple[str, str]:
    return f"edges/{level}/{node_id}.parquet", f"supervoxels/{level}/{node_id}.parquet"


def write_part(graph_url: str, level: int, node_id: str, part: GraphPart, ctx) -> None:
    edges, svs = part.tables(part_name(level, node_id))
    edges_key, svs_key = part_keys(level, node_id)
    put(graph_url, edges_key, edges, ctx)
    put(graph_url, svs_key, svs, ctx)


def read_part(graph_url: str, level: int, node_id: str, ctx: StorageContext) -> GraphPart:
    from petavox.tasks.synapse.table import columns_from_parquet

    tables = []
    for key in part_keys(level, node_id):
        data = get(graph_url, key, ctx)
        if data is None:
            raise FileNotFoundError(
                f"{graph_url}/{key} is missing: the region graph is incomplete; rerun segment"
            )
        tables.append(columns_from_parquet(data))
    return GraphPart.from_tables(*tables)


def first_voxels(labels: np.ndarray, origin) -> tuple[np.ndarray, np.ndarray]:
    """(labels, (k, 3) x, y, z of each one's first voxel in z, then y, then x order), for the
    non-zero labels of a block (x, y, z) whose first voxel is at `origin`."""
    nx, ny, _ = labels.shape
    ids, first = np.unique(labels.transpose(2, 1, 0).ravel(), return_index=True)
    xyz = np.stack([first % nx, (first // nx) % ny, first // (nx * ny)], axis=1)
    keep = ids != 0
    return ids[keep].astype(np.uint64), xyz[keep].astype(np.int64) + np.asarray(origin)


def earliest(ids: np.ndarray, xyz: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """For each of `wanted` (sorted, all in `ids`), the first of its positions in z, y, x
    order among the (id, position) rows."""
    order = np.lexsort((xyz[:, 0], xyz[:, 1], xyz[:, 2], ids))
    ids, xyz = ids[order], xyz[order]
    start = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return xyz[start][np.searchsorted(ids[start], wanted)].reshape(-1, 3)


def read_columns(
    url: str, folder: str, levels: int, columns: tuple[str, ...], context: StorageContext
) -> dict[str, np.ndarray]:
    """`columns` of every Parquet part under `url`/`folder`/<level>/ (levels 0 to `levels`): the
    graph's `edges` and `supervoxels`, or a mapping table's parts."""
    from petavox.tasks.synapse.table import columns_from_parquet

    parts: dict[str, list[np.ndarray]] = {name: [] for name in columns}
    for level in range(levels + 1):
        keys = sorted(list_keys(url, f"{folder}/{level}/", context))
        for key, data in get_many(url, keys, context).items():
            if data is None:
                raise InputError(f"{url}/{key} vanished while read: is a run rewriting it?")
            table = columns_from_parquet(data)
            for name in columns:
                parts[name].append(table[name])
    return {name: np.concatenate(found) if found else np.zeros(0) for name, found in parts.items()}


def _emit(job, level: int, node: Chunk, graph: RegionGraph, faces, anchors) -> dict:
    """Write the node's part and its carry; `faces` are (ids, rows) of the face records on
    its outer faces, `anchors` (ids, positions) of first voxels (any order, repeats)."""
    face_ids, face_rows = faces
    where = earliest(*anchors, graph.size_ids)
    part, carry = split_node(graph, face_ids, where)
    write_part(job.graph_url, level, node.id, part, job.context)
    up = ~part.closed
    arrays = {
        **carry.arrays(),
        "face_ids": face_ids,
        "face_rows": face_rows,
        "anchor_ids": graph.size_ids[up],
        "anchors": where[up],
    }
    put_arrays(job.work_url, f"{CARRY}/{level}/{node.id}.npz", arrays, job.context)
    return {"pairs": len(part.graph.edges), "closed": int(part.closed.sum())}


@dataclass(frozen=True, kw_only=True)
class ChunkGraphJob:
    """Level 0: the chunk's contacts (each voxel to its predecessor on each axis)."""

    supervoxels: Layer
    source: Layer  # the boundary map or affinities the supervoxels were made from
    grid: ChunkGrid
    graph_url: str
    work_url: str
    fill_missing: bool = False

    @property
    def context(self) -> StorageContext:
        return self.supervoxels.context

    def run(self, chunk: Chunk) -> dict:
        # one voxel before the chunk on each axis: its edges to the previous chunk are its own
        ext = Box(chunk.write_box.start - 1, chunk.write_box.stop)
        labels = self.supervoxels.read(ext)  # zeros outside the volume
        data = self.source.read(ext, fill_missing=self.fill_missing)
        check_values(data, self.source.url, ext, "segment", unit_range=True)
        graph = contact_graph(labels, affinities_of(data))
        interior = labels[1:, 1:, 1:]
        faces = face_records(interior, chunk, self.grid)
        anchors = first_voxels(interior, chunk.write_box.start)
        return _emit(self, 0, chunk, graph, faces, anchors)


@dataclass(frozen=True, kw_only=True)
class NodeGraphJob:
    """Level ≥ 1: the children's carries summed; what is now closed is written."""

    level: int
    child_grid: ChunkGrid
    chunk_grid: ChunkGrid
    graph_url: str
    work_url: str
    context: StorageContext

    def run(self, node: Chunk) -> dict:
        graphs, carries = [RegionGraph.empty()], []
        for child in children(node, self.child_grid):
            key = f"{CARRY}/{self.level - 1}/{child.id}.npz"
            carries.append(get_arrays(self.work_url, key, self.context))
            graphs.append(RegionGraph.from_arrays(carries[-1]))

        def joined(key: str, dtype, width: int = 0) -> np.ndarray:
            rows = np.concatenate([c[key] for c in carries]).astype(dtype)
            return rows.reshape(-1, width) if width else rows

        ids, rows = joined("face_ids", np.uint64), joined("face_rows", np.int64, 4)
        anchors = joined("anchor_ids", np.uint64), joined("anchors", np.int64, 3)
        span = 2**self.level
        first = np.asarray(node.index) * span
        last = np.minimum(first + span, np.asarray(self.chunk_grid.grid_shape))
        outer = on_boundary(rows, first, last)
        graph = RegionGraph.combine(graphs)
        return _emit(self, self.level, node, graph, (ids[outer], rows[outer]), anchors)
