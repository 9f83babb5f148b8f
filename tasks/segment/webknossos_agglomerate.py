"""The agglomeration as a webKnossos agglomerate file (HDF5), for proofreading in webKnossos.

webKnossos finds such files in the segmentation layer's ``agglomerates/`` folder
(``<layer>/agglomerates/<name>.hdf5``) and applies one as a mapping over the supervoxels; its
proofreading tools split and merge agglomerates along the stored edges. The layout is the one
webKnossos documents for agglomerate attachments (scalableminds/webknossos-libs,
``docs/src/webknossos-py/spec/agglomerate_attachment.md``, version 4, there as Zarr v3) with the
dataset names its HDF5 reader opens (scalableminds/webknossos, ``webknossos-datastore/app/com/
scalableminds/webknossos/datastore/services/mapping/Hdf5AgglomerateService.scala`` and
``AgglomerateFileUtils.scala``). With n supervoxels, k agglomerates and m edges:

| dataset | dtype | shape | holds |
| --- | --- | --- | --- |
| segment_to_agglomerate | uint64 | (max id + 1,) | by supervoxel id: its agglomerate (0: none) |
| agglomerate_to_segments_offsets | uint64 | (k + 2,) | CSR offsets, o[0] = o[1] = 0 |
| agglomerate_to_segments | layer's | (n,) | supervoxels by agglomerate, ascending in one |
| agglomerate_to_positions | int32 | (n, 3) | a voxel x, y, z of each, co-indexed |
| agglomerate_to_edges_offsets | uint64 | (k + 2,) | CSR offsets into the edges, as above |
| agglomerate_to_edges | layer's | (m, 2) | local index pairs n1 < n2, sorted |
| agglomerate_to_affinities | float32 | (m,) | each edge's mean affinity |

Agglomerate a holds ``agglomerate_to_segments[o[a]:o[a + 1]]`` (o: its offsets), and its edges
are pairs of indices into that list (0-based), sorted by n1 then n2. "layer's" is the supervoxel
layer's dtype (uint64, or uint32).

Agglomerate ids are contiguous, 1 to k, in the order of their smallest supervoxel (as the
reference writer, ``AgglomerateAttachment.create`` in webknossos-libs, numbers them);
agglomerate 0 is empty. The edges of an agglomerate are the region-graph pairs whose two
supervoxels it holds. Unlike the spec, which asks for dense ids 1..n, supervoxel ids here are
sparse (up to ~2^40): ids that are no supervoxel map to 0, the background, as webKnossos reads
the array by index and never relies on the density.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError

ID_CHUNK = 1 << 13  # ids per chunk of segment_to_agglomerate (64 KiB uncompressed)
RUN_CHUNKS = 64  # chunks written at once: a run of at most 4 MiB
ROWS_CHUNK = 1 << 15  # rows per chunk of the other datasets
COMPRESSION = {"compression": "gzip", "shuffle": True}  # HDF5's own filters: every reader has them


@dataclass(frozen=True, kw_only=True)
class Agglomeration:
    """Supervoxels, the segment each belongs to, a voxel of each, and the region graph."""

    supervoxels: np.ndarray  # (n,) unique non-zero ids
    segments: np.ndarray  # (n,) the segment (any id) of each supervoxel
    positions: np.ndarray  # (n, 3) x, y, z of a voxel of each
    edges: np.ndarray  # (m, 2) touching supervoxel pairs, whatever their segments
    affinities: np.ndarray  # (m,) each pair's mean affinity


@dataclass(frozen=True, kw_only=True)
class AgglomerateTables:
    """The file's arrays (`supervoxels` and `agglomerates` give segment_to_agglomerate)."""

    supervoxels: np.ndarray  # (n,) sorted
    agglomerates: np.ndarray  # (n,) the agglomerate id of each, 1..k
    segments_offsets: np.ndarray
    segments: np.ndarray
    positions: np.ndarray
    edges_offsets: np.ndarray
    edges: np.ndarray
    affinities: np.ndarray

    @property
    def count(self) -> int:
        """The number of agglomerates, k."""
        return len(self.segments_offsets) - 2


def checked(agg: Agglomeration) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sorted supervoxels, their segments, their positions); an InputError when the ids are not
    unique and non-zero or the positions do not fit webKnossos' int32."""
    svs = np.asarray(agg.supervoxels, dtype=np.uint64)
    positions = np.asarray(agg.positions, dtype=np.int64).reshape(-1, 3)
    if len(agg.segments) != len(svs) or len(positions) != len(svs):
        raise InputError(
            f"{len(svs)} supervoxels but {len(agg.segments)} segments and {len(positions)} "
            "positions: give one of each per supervoxel"
        )
    order = np.argsort(svs, kind="stable")
    svs = svs[order]
    if len(svs) and svs[0] == 0:
        raise InputError("supervoxel 0 is the background: it cannot be in an agglomerate")
    repeated = svs[1:][svs[1:] == svs[:-1]]
    if len(repeated):
        raise InputError(
            f"supervoxel {int(repeated[0])} is listed twice ({len(repeated)} repeats): the "
            "mapping table must hold each supervoxel once; rerun agglomerate"
        )
    info = np.iinfo(np.int32)
    if len(positions) and (positions.min() < info.min or positions.max() > info.max):
        raise InputError("supervoxel positions beyond int32: webKnossos cannot store them")
    return svs, np.asarray(agg.segments)[order], positions[order]


def agglomerate_tables(agg: Agglomeration) -> AgglomerateTables:
    """The file's arrays, computed from `agg` in memory proportional to its size."""
    svs, segments, positions = checked(agg)
    # agglomerate ids: the segments ranked by their smallest supervoxel (svs are sorted)
    _, first, inverse = np.unique(segments, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first)] = np.arange(1, len(first) + 1)
    aggs = rank[inverse.ravel()]
    grouped = np.argsort(aggs, kind="stable")  # ascending ids within each agglomerate
    segments_offsets = offsets_of(aggs, len(first))
    local = np.empty(len(svs), np.int64)
    local[grouped] = np.arange(len(svs)) - segments_offsets[aggs[grouped]].astype(np.int64)
    edges, affinities, edge_aggs = inner_edges(agg, svs, aggs, local)
    return AgglomerateTables(
        supervoxels=svs,
        agglomerates=aggs.astype(np.uint64),
        segments_offsets=segments_offsets,
        segments=svs[grouped],
        positions=positions[grouped].astype(np.int32),
        edges_offsets=offsets_of(edge_aggs, len(first)),
        edges=edges,
        affinities=affinities,
    )


def offsets_of(aggs: np.ndarray, count: int) -> np.ndarray:
    """CSR offsets (count + 2,) of items labelled by agglomerate (1..count), grouped by it."""
    sizes = np.bincount(aggs, minlength=count + 1)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.uint64)


def inner_edges(
    agg: Agglomeration, svs: np.ndarray, aggs: np.ndarray, local: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(local index pairs, affinities, agglomerate of each) of the pairs inside one
    agglomerate, grouped by agglomerate and sorted within it."""
    pairs = np.asarray(agg.edges, dtype=np.uint64).reshape(-1, 2)
    affinities = np.asarray(agg.affinities, dtype=np.float32)
    if len(affinities) != len(pairs):
        raise InputError(f"{len(pairs)} edges but {len(affinities)} affinities: give one each")
    where = np.searchsorted(svs, pairs)
    known = where < len(svs)
    known[known] = svs[where[known]] == pairs[known]
    if not known.all():
        missing = pairs[~known]
        raise InputError(
            f"the region graph names supervoxel {int(missing[0])}, which the mapping does not "
            f"({len(missing)} such ends): rerun agglomerate to remake the mapping"
        )
    a, b = where[:, 0], where[:, 1]
    inside = aggs[a] == aggs[b]
    a, b = a[inside], b[inside]
    lo, hi = np.minimum(local[a], local[b]), np.maximum(local[a], local[b])
    edge_aggs = aggs[a]
    order = np.lexsort((hi, lo, edge_aggs))
    edges = np.stack([lo[order], hi[order]], axis=1).astype(np.uint64).reshape(-1, 2)
    return edges, affinities[inside][order], edge_aggs[order]


def write_agglomerate_file(
    path: str | Path, agg: Agglomeration, dtype: np.dtype | str = np.uint64
) -> AgglomerateTables:
    """Write `agg` to the HDF5 file at `path` (replaced); `dtype` is the supervoxel layer's
    (uint32 or uint64). Returns the arrays written."""
    import h5py

    dtype = np.dtype(dtype)
    if dtype not in (np.uint32, np.uint64):
        raise InputError(f"webKnossos agglomerates need uint32 or uint64 supervoxels, not {dtype}")
    tables = agglomerate_tables(agg)
    if len(tables.supervoxels) and tables.supervoxels[-1] > np.iinfo(dtype).max:
        raise InputError(f"supervoxel {int(tables.supervoxels[-1])} does not fit {dtype}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # libver "earliest": chunks are indexed by a B-tree of the chunks written, so a sparse
    # segment_to_agglomerate costs nothing for its unwritten ids (newer layouts index every chunk)
    with h5py.File(path, "w", libver="earliest") as f:
        write_segment_to_agglomerate(f, tables.supervoxels, tables.agglomerates)
        for name, data in (
            ("agglomerate_to_segments_offsets", tables.segments_offsets),
            ("agglomerate_to_segments", tables.segments.astype(dtype)),
            ("agglomerate_to_positions", tables.positions),
            ("agglomerate_to_edges_offsets", tables.edges_offsets),
            ("agglomerate_to_edges", tables.edges.astype(dtype)),
            ("agglomerate_to_affinities", tables.affinities),
        ):
            write_rows(f, name, data)
    return tables


def write_rows(f, name: str, data: np.ndarray) -> None:
    """A dataset of `data`, chunked along its rows and compressed (contiguous when empty)."""
    if len(data) == 0:
        f.create_dataset(name, data=data)
        return
    chunks = (min(len(data), ROWS_CHUNK), *data.shape[1:])
    f.create_dataset(name, data=data, chunks=chunks, **COMPRESSION)


def write_segment_to_agglomerate(f, svs: np.ndarray, aggs: np.ndarray) -> None:
    """segment_to_agglomerate, indexed by supervoxel id: (largest id + 1,) uint64.

    The ids are sparse and large (up to ~2^40), so the array is never built whole: it is a
    chunked, compressed dataset with fill value 0 whose chunks are written only where there are
    supervoxels (the rest stay unallocated and read as 0, the background), in runs of
    consecutive chunks taken from the sorted ids. Memory follows the number of supervoxels and
    the run size, not the largest id; the file holds only the chunks with supervoxels.
    """
    size = int(svs[-1]) + 1 if len(svs) else 1
    chunk = min(size, ID_CHUNK)
    ds = f.create_dataset(
        "segment_to_agglomerate",
        shape=(size,),
        dtype=np.uint64,
        chunks=(chunk,),
        fillvalue=0,
        **COMPRESSION,
    )
    touched = np.unique(svs // np.uint64(chunk)).astype(np.int64)
    runs = np.split(touched, np.flatnonzero(np.diff(touched) != 1) + 1)
    for run in runs:
        for start in range(0, len(run), RUN_CHUNKS):
            part = run[start : start + RUN_CHUNKS]
            lo, hi = int(part[0]) * chunk, min((int(part[-1]) + 1) * chunk, size)
            i, j = np.searchsorted(svs, np.array([lo, hi], np.uint64))
            block = np.zeros(hi - lo, np.uint64)
            block[(svs[i:j] - np.uint64(lo)).astype(np.int64)] = aggs[i:j]
            ds[lo:hi] = block
