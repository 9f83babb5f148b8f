"""Global ids without coordination, and hierarchical resolution of the equivalences between them.

Every chunk labels its objects in its own id range: ``id = linear_chunk_index * stride + local``
with ``1 <= local < stride``, so the chunk that made an id is ``id // stride``. Stitching finds
pairs of ids that are the same object (an *edge*) and resolves them bottom-up over an octree of
chunks. A node at level L covers 2^L × 2^L × 2^L chunks. It unions the edges whose two ends lie
inside it and writes a *map* (id → smallest id of its set) for the ids it saw. Edges with one end
outside go up unchanged, together with *links* (id, its root here) for their inside ends, so the
parent can join sets that met in different children. A node therefore holds only the edges that
cross its children's faces: memory grows with chunk faces, never with voxels, and the top node
holds the edges of three planes, not of the volume.

The final id of a voxel's label is the chain of its chunk's ancestor maps, level 1 to the top.
It is the smallest id of its global set; a root maps to itself at every level, so relabelling
twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EDGE_DTYPE = np.uint64


@dataclass(frozen=True)
class IdSpace:
    """Per-chunk id ranges over a chunk grid of `grid_shape` (x, y, z)."""

    grid_shape: tuple[int, int, int]
    stride: int

    def __post_init__(self) -> None:
        gx, gy, gz = self.grid_shape
        if gx * gy * gz * self.stride >= 2**64:
            raise ValueError(
                f"{gx * gy * gz} chunks × {self.stride} ids per chunk overflow uint64 ids; "
                "use larger chunks or a smaller halo"
            )

    def offset(self, index: tuple[int, int, int]) -> int:
        """The first id of the chunk at grid `index` (its labels are added to it)."""
        gx, gy, _ = self.grid_shape
        x, y, z = index
        return (x + gx * (y + gy * z)) * self.stride

    def chunk_index(self, ids: np.ndarray) -> np.ndarray:
        """(n, 3) grid indices of the chunks that made `ids`."""
        gx, gy, _ = self.grid_shape
        linear = np.asarray(ids, dtype=np.uint64) // np.uint64(self.stride)
        x = linear % np.uint64(gx)
        rest = linear // np.uint64(gx)
        return np.stack([x, rest % np.uint64(gy), rest // np.uint64(gy)], axis=-1).astype(np.int64)


def unique_pairs(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct rows, index of each input row in them) for (n, 2) integer pairs.

    Much faster than ``np.unique(axis=0)``, which sorts rows as opaque bytes: the ids are made
    dense first, so each pair becomes one int64 key.
    """
    pairs = np.asarray(pairs).reshape(-1, 2)
    ids, dense = np.unique(pairs, return_inverse=True)
    dense = dense.reshape(-1, 2).astype(np.int64)
    keys, inverse = np.unique(dense[:, 0] * len(ids) + dense[:, 1], return_inverse=True)
    rows = np.stack([ids[keys // len(ids)], ids[keys % len(ids)]], axis=1)
    return rows.astype(pairs.dtype), inverse.ravel()


def unique_edges(edges: np.ndarray) -> np.ndarray:
    """Edges as sorted (low, high) pairs, without duplicates or self-loops."""
    edges = np.asarray(edges, dtype=EDGE_DTYPE).reshape(-1, 2)
    edges = np.sort(edges, axis=1)
    edges = edges[edges[:, 0] != edges[:, 1]]
    return unique_pairs(edges)[0] if len(edges) else edges


def components(edges: np.ndarray, extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Union-find of `edges` (plus singleton `extra` ids): (ids, root of each = min of its set)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.asarray(edges, dtype=EDGE_DTYPE).reshape(-1, 2)
    parts = [edges.ravel()]
    if extra is not None:
        parts.append(np.asarray(extra, dtype=EDGE_DTYPE).ravel())
    ids, inverse = np.unique(np.concatenate(parts), return_inverse=True)
    if len(ids) == 0:
        return ids, ids
    pairs = inverse[: edges.size].reshape(-1, 2)
    graph = coo_matrix(
        (np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])),
        shape=(len(ids), len(ids)),
    )
    _, comp = connected_components(graph, directed=False)
    # ids are sorted, so the first member of each component is its smallest id
    first = np.full(comp.max() + 1, len(ids), dtype=np.int64)
    np.minimum.at(first, comp, np.arange(len(ids)))
    return ids, ids[first[comp]]


def resolve_node(edges: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One octree node: (map as (id, root) rows with id != root, edges passed up).

    `edges` are the children's passed-up edges; `inside` (n, 2) says for each end whether its
    chunk lies in this node.
    """
    edges = np.asarray(edges, dtype=EDGE_DTYPE).reshape(-1, 2)
    internal = inside.all(axis=1)
    crossing = edges[~internal]
    ends_inside = crossing[inside[~internal]]
    ids, roots = components(edges[internal], extra=ends_inside)
    moved = ids != roots
    mapping = np.stack([ids[moved], roots[moved]], axis=1)
    # links for the inside ends of crossing edges, so the parent joins their sets
    end_ids = np.unique(ends_inside)
    end_roots = roots[np.searchsorted(ids, end_ids)] if len(ids) else end_ids
    links = np.stack([end_ids, end_roots], axis=1)[end_ids != end_roots]
    return mapping, unique_edges(np.concatenate([crossing, links]))


def apply_maps(ids: np.ndarray, maps: list[np.ndarray]) -> np.ndarray:
    """Follow `ids` through level maps (each (n, 2) id → root, sorted by id), bottom up."""
    out = np.asarray(ids, dtype=EDGE_DTYPE).copy()
    for mapping in maps:
        if len(mapping) == 0:
            continue
        keys, values = mapping[:, 0], mapping[:, 1]
        pos = np.searchsorted(keys, out)
        pos_ok = np.minimum(pos, len(keys) - 1)
        hit = keys[pos_ok] == out
        out[hit] = values[pos_ok[hit]]
    return out


def sorted_map(mapping: np.ndarray) -> np.ndarray:
    mapping = np.asarray(mapping, dtype=EDGE_DTYPE).reshape(-1, 2)
    return mapping[np.argsort(mapping[:, 0], kind="stable")]
