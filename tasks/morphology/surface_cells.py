"""Per-segment surface area from marching-cubes cell cases, counted chunk by chunk.

The marching-cubes surface of a binary mask is a sum over its 2×2×2 cells, and a cell's piece
depends only on which of its 8 corners are in (its case, 0-255). So a chunk counts, per segment,
how many of the cells it owns have each case, and the area is Σ count × area(case) with the
areas from scikit-image's marching cubes on the lone cell (`case_areas`, at the volume's
resolution). The counts are integers, so they merge exactly, and the area is the same for any
chunking and equal to marching cubes on the whole segment, with the volume's faces closed (the
volume is padded with background). A chunk owns the cells whose lowest corner lies in its
write box (and the layer of cells just outside the volume's low faces when the box touches
them), so it reads one more voxel past its high faces. zmesh's meshes are simplified per
chunk and would not add up exactly; this table-driven count is written by hand for that.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

import numpy as np

CASES = 256


@lru_cache(maxsize=8)
def case_areas(resolution: tuple[float, float, float]) -> np.ndarray:
    """Area (resolution units², e.g. nm²) of each cell case's marching-cubes piece; corner
    (dx, dy, dz) is bit 4·dx + 2·dy + dz."""
    from skimage.measure import marching_cubes, mesh_surface_area

    areas = np.zeros(CASES)
    for case in range(1, CASES - 1):
        cell = np.array([(case >> i) & 1 for i in range(8)], np.float32).reshape(2, 2, 2)
        verts, faces, _, _ = marching_cubes(cell, 0.5, spacing=resolution)
        areas[case] = mesh_surface_area(verts, faces)
    return areas


def block_box(
    write_start: Sequence[int], write_stop: Sequence[int], volume_stop: Sequence[int]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The voxels a chunk reads to count its cells: its write box and one more past its high
    faces, within the volume."""
    stop = tuple(min(b + 1, v) for b, v in zip(write_stop, volume_stop))
    return tuple(write_start), stop


def cell_counts(
    seg: np.ndarray,
    write_start: Sequence[int],
    write_stop: Sequence[int],
    volume_start: Sequence[int],
    volume_stop: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(segment ids, cases, counts) of the cells the chunk owns; `seg` (x, y, z) covers
    `block_box` of the write box."""
    pad = [
        (int(a == v0), int(b == v1))
        for a, b, v0, v1 in zip(write_start, write_stop, volume_start, volume_stop)
    ]
    block = np.pad(np.asarray(seg), pad) if any(map(any, pad)) else np.asarray(seg)
    n = [s - 1 for s in block.shape]
    corners = [
        block[dx : dx + n[0], dy : dy + n[1], dz : dz + n[2]]
        for dx in (0, 1)
        for dy in (0, 1)
        for dz in (0, 1)
    ]
    # only cells with two labels or more hold surface: most cells are inside one segment
    mixed = np.zeros(corners[0].shape, bool)
    for other in corners[1:]:
        mixed |= other != corners[0]
    corners = [c[mixed] for c in corners]
    labels, cases = [], []
    for j, lab in enumerate(corners):
        first = lab != 0
        for k in range(j):
            first &= corners[k] != lab
        case = np.zeros(lab.shape, np.int64)
        for i, other in enumerate(corners):
            case |= (other == lab).astype(np.int64) << i
        labels.append(lab[first])
        cases.append(case[first])
    label, case = np.concatenate(labels), np.concatenate(cases)
    ids, index = np.unique(label, return_inverse=True)
    keys, counts = np.unique(index.astype(np.int64) * CASES + case, return_counts=True)
    return ids[keys // CASES].astype(np.uint64), keys % CASES, counts.astype(np.int64)


def merge_counts(
    parts: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, cases, counts) summed over `parts`, sorted by id then case: exact integers, the
    same whatever the order or the chunking of the parts."""
    parts = list(parts)
    ids = np.concatenate([np.zeros(0, np.uint64)] + [np.asarray(p[0], np.uint64) for p in parts])
    cases = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(p[1], np.int64) for p in parts])
    counts = np.concatenate([np.zeros(0, np.int64)] + [np.asarray(p[2], np.int64) for p in parts])
    if not len(ids):
        return ids, cases, counts
    order = np.lexsort((cases, ids))
    ids, cases, counts = ids[order], cases[order], counts[order]
    starts = np.flatnonzero(np.r_[True, (ids[1:] != ids[:-1]) | (cases[1:] != cases[:-1])])
    return ids[starts], cases[starts], np.add.reduceat(counts, starts)


def surface_areas(
    merged: tuple[np.ndarray, np.ndarray, np.ndarray], resolution: Sequence[float]
) -> dict[int, float]:
    """Each segment's surface area (resolution units²) from `merge_counts`'s sorted counts."""
    ids, cases, counts = merged
    if not len(ids):
        return {}
    pieces = counts.astype(np.float64) * case_areas(tuple(float(r) for r in resolution))[cases]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    return dict(zip(ids[starts].tolist(), np.add.reduceat(pieces, starts).tolist()))
