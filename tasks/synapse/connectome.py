"""The connectome from a synapse table: edges, per-segment statistics, and the Neuroglancer
precomputed annotation encoding (line annotations with pre/post relationships, a by-id index
and a multi-level spatial index).

Pure functions on numpy columns; the tasks that shuffle and write them are in
`connectome_jobs`. Only synapses with both partners found (pre_id and post_id nonzero) are
connections: they make the edges and the statistics; the table and the annotation layer keep
every synapse.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

Table = dict[str, np.ndarray]

#: one annotation's geometry and properties (the spec's single encoding, without relationships)
RECORD = np.dtype([("pre", "<f4", 3), ("post", "<f4", 3), ("size", "<u4"), ("confidence", "<f4")])
PROPERTIES = [
    {"id": "size", "type": "uint32", "description": "cleft voxels"},
    {"id": "confidence", "type": "float32", "description": "detector score"},
]
RELATIONSHIPS = ("pre", "post")  # relationship ids; their index folders are rel_pre, rel_post


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: a well-spread uint64 hash of each value (vectorized)."""
    x = np.asarray(values, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def take(table: Table, index: np.ndarray) -> Table:
    return {name: column[index] for name, column in table.items()}


def connected(table: Table) -> np.ndarray:
    """Mask of the rows that are connections (both partners found)."""
    return (table["pre_id"] != 0) & (table["post_id"] != 0)


def edge_list(table: Table) -> Table:
    """One row per (pre_id, post_id) of the connections: synapse count and total cleft size,
    sorted by pre then post."""
    rows = take(table, np.flatnonzero(connected(table)))
    pairs = np.stack([rows["pre_id"], rows["post_id"]], axis=1)
    unique, inverse, counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
    sizes = np.bincount(inverse.reshape(-1), weights=rows["size"], minlength=len(unique))
    return {
        "pre_id": unique[:, 0].astype(np.uint64),
        "post_id": unique[:, 1].astype(np.uint64),
        "synapses": counts.astype(np.int64),
        "total_size": np.rint(sizes).astype(np.int64),
    }


def _degree(ids: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ids, how many rows each has, and the sum of `weights` over them."""
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse.reshape(-1), weights=weights, minlength=len(unique))
    return unique, counts, np.rint(sums).astype(np.int64)


def segment_stats(
    out_edges: Table, in_edges: Table, volumes: tuple[np.ndarray, np.ndarray] | None = None
) -> Table:
    """Per segment: distinct partners and synapses out (from the edges it is the pre of) and in
    (edges it is the post of), and its voxel count (`volumes`: sorted ids and counts) if given.

    The segment set is the union of the edges' pre ids of `out_edges` and post ids of `in_edges`
    (a shard task passes the edges of its own segments)."""
    out_ids, out_deg, out_syn = _degree(out_edges["pre_id"], out_edges["synapses"])
    in_ids, in_deg, in_syn = _degree(in_edges["post_id"], in_edges["synapses"])
    ids = np.union1d(out_ids, in_ids).astype(np.uint64)
    stats = {"segment_id": ids}
    for name, source, values in (
        ("out_degree", out_ids, out_deg),
        ("in_degree", in_ids, in_deg),
        ("synapses_out", out_ids, out_syn),
        ("synapses_in", in_ids, in_syn),
    ):
        column = np.zeros(len(ids), np.int64)
        column[np.searchsorted(ids, source)] = values
        stats[name] = column
    if volumes is not None:
        vol_ids, counts = volumes
        where = np.searchsorted(vol_ids, ids)
        found = where < len(vol_ids)
        found[found] = vol_ids[where[found]] == ids[found]
        stats["volume"] = np.zeros(len(ids), np.int64)
        stats["volume"][found] = counts[where[found]]
    return stats


def sum_counts(ids: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct id, the sum of its counts (ids sorted)."""
    unique, inverse = np.unique(ids, return_inverse=True)
    return unique, np.bincount(inverse.reshape(-1), weights=counts, minlength=len(unique)).astype(
        np.int64
    )


# ---- annotation encoding ------------------------------------------------------------------
def records(table: Table) -> np.ndarray:
    """The single-annotation encoding's geometry and properties of each row (no relationships):
    a line from the presynaptic to the postsynaptic point (nm), size and confidence."""
    out = np.zeros(len(table["synapse_id"]), RECORD)
    out["pre"] = np.stack([table["pre_x"], table["pre_y"], table["pre_z"]], axis=1)
    out["post"] = np.stack([table["post_x"], table["post_y"], table["post_z"]], axis=1)
    out["size"] = np.clip(table["size"], 0, 2**32 - 1)
    out["confidence"] = table["confidence"]
    return out


#: one annotation's single encoding at its longest: the record, then per relationship a uint32
#: count and the partner's id (left out, with its 8 bytes, where the partner was not found)
_SINGLE = np.dtype(
    [
        ("record", RECORD),
        ("pre_count", "<u4"),
        ("pre_id", "<u8"),
        ("post_count", "<u4"),
        ("post_id", "<u8"),
    ]
)


@dataclass(frozen=True, kw_only=True)
class Packed:
    """Encoded chunks keyed by uint64: chunk i is ``data[offsets[i]:offsets[i + 1]]`` (what
    `petavox.tasks.core.shards.shard_files` writes)."""

    keys: np.ndarray
    data: np.ndarray  # uint8
    offsets: np.ndarray  # int64, len(keys) + 1

    def as_dict(self) -> dict[int, bytes]:
        return {
            int(k): self.data[a:b].tobytes()
            for k, a, b in zip(self.keys, self.offsets[:-1], self.offsets[1:])
        }


def pack_by_id(table: Table) -> Packed:
    """Each annotation's single encoding, keyed by its id: its record, then per relationship
    (pre, post) a count and the ids (one id, or none when the partner was not found); packed
    without a per-row loop."""
    n = len(table["synapse_id"])
    full = np.zeros(n, _SINGLE)
    full["record"] = records(table)
    keep = np.ones((n, _SINGLE.itemsize), bool)
    for rel in RELATIONSHIPS:
        found = table[f"{rel}_id"] != 0
        full[f"{rel}_count"] = found
        full[f"{rel}_id"] = table[f"{rel}_id"]
        start = _SINGLE.fields[f"{rel}_id"][1]
        keep[:, start : start + 8] = found[:, None]
    sizes = keep.sum(axis=1)
    data = full.view(np.uint8).reshape(n, _SINGLE.itemsize)[keep]
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    return Packed(keys=np.asarray(table["synapse_id"], np.uint64), data=data, offsets=offsets)


def encode_multiple(recs: np.ndarray, ids: np.ndarray) -> bytes:
    """The multiple-annotation encoding: count, the records, then the annotation ids."""
    return (
        np.uint64(len(ids)).astype("<u8").tobytes()
        + recs.astype(RECORD).tobytes()
        + np.asarray(ids, "<u8").tobytes()
    )


def pack_related(table: Table, relationship: str) -> Packed:
    """The related object id index: for each segment (nonzero) in the `relationship` column,
    its annotations (ordered by annotation id) in the multiple encoding (`encode_multiple`),
    packed without a per-segment loop, laid out in 4-byte words (count, records, ids)."""
    column = table[f"{relationship}_id"]
    keep = np.flatnonzero(column != 0)
    order = keep[np.lexsort((table["synapse_id"][keep], column[keep]))]
    segments = column[order]
    n = len(order)
    starts = np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]]) if n else np.zeros(0, int)
    counts = np.diff(np.r_[starts, n]).astype(np.int64)
    rec_words, id_words = RECORD.itemsize // 4, 2  # RECORD is whole 4-byte words
    sizes = 2 + counts * (rec_words + id_words)  # in words
    word_offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    out = np.zeros(int(word_offsets[-1]), "<u4")
    head = word_offsets[:-1]
    out[head] = counts & 0xFFFFFFFF  # the uint64 count, low word then high word
    out[head + 1] = counts >> 32
    group = np.repeat(np.arange(len(starts)), counts)
    rank = np.arange(n) - np.repeat(starts, counts)  # row's place within its segment
    rec_at = head[group] + 2 + rank * rec_words
    id_at = head[group] + 2 + counts[group] * rec_words + rank * id_words
    recs = records(take(table, order)).view("<u4").reshape(n, rec_words)
    out[rec_at[:, None] + np.arange(rec_words)] = recs
    ids = np.asarray(table["synapse_id"][order], "<u8").view("<u4").reshape(n, id_words)
    out[id_at[:, None] + np.arange(id_words)] = ids
    return Packed(
        keys=segments[starts].astype(np.uint64), data=out.view(np.uint8), offsets=word_offsets * 4
    )


# ---- spatial index -------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class SpatialGrid:
    """The spatial index's levels over [lower, upper) nm, coarse to fine: level 0 is one cell;
    each finer level halves the cell along the axes where that keeps it most isotropic, until
    no side exceeds `finest` nm (or `max_levels` is reached).

    Each annotation is in exactly one level, chosen from the hash of its id so that every level
    holds about the same number of annotations per cell (the share of level l is its cell count
    over the finest level's), and in every cell of that level its line's bounding box touches.
    """

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]
    finest: float
    max_levels: int = 8

    @property
    def levels(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(grid_shape, chunk_size) per level."""
        extent = np.asarray(self.upper, float) - np.asarray(self.lower, float)
        shape = np.ones(3, np.int64)
        out = [(shape.copy(), extent / shape)]
        while len(out) < self.max_levels:
            size = extent / shape
            if size.max() <= self.finest:
                break
            halve = size >= size.max() / 2**0.5  # the long sides
            shape = shape * np.where(halve, 2, 1)
            out.append((shape.copy(), extent / shape))
        return out

    def level_of(self, synapse_ids: np.ndarray) -> np.ndarray:
        """Each annotation's level."""
        cells = np.array([shape.prod() for shape, _ in self.levels], float)
        share = np.cumsum(cells) / cells.sum()  # cumulative share of annotations per level
        u = (mix64(synapse_ids) >> np.uint64(11)).astype(np.float64) / 2.0**53
        return np.minimum(np.searchsorted(share, u, side="right"), len(cells) - 1)

    def cells(self, table: Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(row, level, cell xyz) for every cell of its level each row's line touches."""
        level = self.level_of(table["synapse_id"])
        a = np.stack([table["pre_x"], table["pre_y"], table["pre_z"]], axis=1)
        b = np.stack([table["post_x"], table["post_y"], table["post_z"]], axis=1)
        shapes = np.stack([s for s, _ in self.levels])[level]
        sizes = np.stack([c for _, c in self.levels])[level]
        lower = np.asarray(self.lower, float)
        lo = np.clip(np.floor((np.minimum(a, b) - lower) / sizes), 0, shapes - 1).astype(np.int64)
        hi = np.clip(np.floor((np.maximum(a, b) - lower) / sizes), 0, shapes - 1).astype(np.int64)
        span = hi - lo + 1
        rows, levels, cells = [], [], []
        if len(level):
            for offset in itertools.product(*(range(int(m)) for m in span.max(axis=0))):
                hit = np.flatnonzero((np.asarray(offset) < span).all(axis=1))
                rows.append(hit)
                levels.append(level[hit])
                cells.append(lo[hit] + np.asarray(offset))
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
        return np.concatenate(rows), np.concatenate(levels), np.concatenate(cells)

    def info_levels(self, limits: dict[int, int]) -> list[dict]:
        return [
            {
                "key": f"spatial{i}",
                "grid_shape": [int(v) for v in shape],
                "chunk_size": [float(v) for v in size],
                "limit": max(1, limits.get(i, 0)),
            }
            for i, (shape, size) in enumerate(self.levels)
        ]


def cell_owner(levels: np.ndarray, cells: np.ndarray, tasks: int) -> np.ndarray:
    """The task (of `tasks`) that writes each (level, cell)."""
    parts = [levels, cells[:, 0], cells[:, 1], cells[:, 2]]
    key = np.zeros(len(levels), np.uint64)
    for part, shift in zip(parts, (60, 40, 20, 0)):
        key ^= part.astype(np.uint64) << np.uint64(shift)
    return (mix64(key) % np.uint64(tasks)).astype(np.int64)


def annotation_info(grid: SpatialGrid, sharding: dict, limits: dict[int, int]) -> dict:
    """The info of the annotation layer: nm coordinates, LINE, size and confidence, relationships
    pre and post and the by-id index sharded by `sharding`, unsharded spatial levels."""
    return {
        "@type": "neuroglancer_annotations_v1",
        "dimensions": {axis: [1e-9, "m"] for axis in "xyz"},
        "lower_bound": list(grid.lower),
        "upper_bound": list(grid.upper),
        "annotation_type": "LINE",
        "properties": PROPERTIES,
        "relationships": [
            {"id": rel, "key": f"rel_{rel}", "sharding": sharding} for rel in RELATIONSHIPS
        ],
        "by_id": {"key": "by_id", "sharding": sharding},
        "spatial": grid.info_levels(limits),
    }
