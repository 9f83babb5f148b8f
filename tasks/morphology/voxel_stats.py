"""Per-segment voxel statistics, computed chunk by chunk and merged exactly (issue 25).

A chunk's part holds, per segment id in its write box: the voxel count, the bounding box, and
integer sums over the segment's voxels of the coordinates (relative to the chunk's origin),
their pairwise products, and the image intensity and its square. Every part is exact in int64
(a chunk's sums stay far below 2^63), and parts are merged with Python integers after shifting
each to the volume's origin: at connectomics scale a segment's global second moments pass
2^63 (10^12 voxels × coordinates² of 10^10), numpy has no int128, and float sums would depend on
the order of the parts, so a segment spanning thousands of chunks would not come out with the
same bits under another chunking. Only `finish` turns the exact sums into floats (centroid,
covariance, principal axis, intensity mean and spread), so the result is the same for any
chunking.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

#: sums kept per segment: first moments, second moments, intensity and intensity²
FIRST = ("x", "y", "z")
SECOND = ("xx", "xy", "xz", "yy", "yz", "zz")
INTENSITY = ("i", "ii")
SUMS = FIRST + SECOND + INTENSITY
_PAIRS = {"xx": (0, 0), "xy": (0, 1), "xz": (0, 2), "yy": (1, 1), "yz": (1, 2), "zz": (2, 2)}


@dataclass(frozen=True)
class VoxelPart:
    """One chunk's statistics: `ids` (n,) uint64 sorted, `count` (n,), `low`/`high` (n, 3)
    bounding box in global voxels (high exclusive), `sums` (n, len(SUMS)) int64 relative to
    `origin` (the chunk's first voxel, x, y, z)."""

    origin: tuple[int, int, int]
    ids: np.ndarray
    count: np.ndarray
    low: np.ndarray
    high: np.ndarray
    sums: np.ndarray


def chunk_part(seg: np.ndarray, image: np.ndarray, origin: Iterable[int]) -> VoxelPart:
    """The statistics of every nonzero segment of `seg` (x, y, z) with `image` (the same
    shape, integer intensities) over the chunk at `origin`."""
    origin = tuple(int(v) for v in origin)
    flat = np.asarray(seg).ravel(order="F")
    keep = np.flatnonzero(flat)
    labels = flat[keep]
    order = np.argsort(labels, kind="stable")
    keep, labels = keep[order], labels[order]
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]]) if len(labels) else keep[:0]
    coords = np.stack(np.unravel_index(keep, seg.shape, order="F"), axis=1).astype(np.int64)
    value = np.asarray(image).ravel(order="F")[keep].astype(np.int64)
    sums = np.zeros((len(starts), len(SUMS)), np.int64)
    for j, key in enumerate(SUMS if len(starts) else ()):  # a column at a time: bounded memory
        if key in FIRST:
            column = coords[:, FIRST.index(key)]
        elif key in _PAIRS:
            column = coords[:, _PAIRS[key][0]] * coords[:, _PAIRS[key][1]]
        else:
            column = value if key == "i" else value * value
        sums[:, j] = np.add.reduceat(column, starts)
    shift = np.asarray(origin, np.int64)
    low = np.minimum.reduceat(coords, starts, axis=0) + shift if len(starts) else coords[:0]
    high = np.maximum.reduceat(coords, starts, axis=0) + shift + 1 if len(starts) else coords[:0]
    count = np.diff(np.r_[starts, len(labels)]).astype(np.int64)
    return VoxelPart(origin, labels[starts].astype(np.uint64), count, low, high, sums)


@dataclass
class SegmentTotals:
    """One segment's merged statistics; `sums` are Python integers about the volume's origin."""

    count: int
    low: list[int]
    high: list[int]
    sums: dict[str, int]


def merge(parts: Iterable[VoxelPart]) -> dict[int, SegmentTotals]:
    """Every segment's totals over `parts` (exact: the same for any order of the parts)."""
    out: dict[int, SegmentTotals] = {}
    for part in parts:
        o = part.origin
        for row, sid in enumerate(part.ids.tolist()):
            n = int(part.count[row])
            local = dict(zip(SUMS, (int(v) for v in part.sums[row])))
            shifted = _shifted(local, n, o)
            low, high = part.low[row].tolist(), part.high[row].tolist()
            seen = out.get(sid)
            if seen is None:
                out[sid] = SegmentTotals(n, low, high, shifted)
                continue
            seen.count += n
            seen.low = [min(a, b) for a, b in zip(seen.low, low)]
            seen.high = [max(a, b) for a, b in zip(seen.high, high)]
            for k in SUMS:
                seen.sums[k] += shifted[k]
    return out


def _shifted(local: dict[str, int], n: int, origin: tuple[int, int, int]) -> dict[str, int]:
    """Sums about the chunk's origin moved to the volume's: Σ(a+o)(b+p) = Σab + pΣa + oΣb + nop."""
    out = {k: local[k] for k in INTENSITY}
    for axis, k in enumerate(FIRST):
        out[k] = local[k] + n * origin[axis]
    for k in SECOND:
        a, b = _PAIRS[k]
        oa, ob = origin[a], origin[b]
        out[k] = local[k] + ob * local[FIRST[a]] + oa * local[FIRST[b]] + n * oa * ob
    return out


#: the columns of `finish`'s table after segment_id; integers for the counts and the box
COLUMNS = (
    "voxels",
    "volume_um3",
    "low_x",
    "low_y",
    "low_z",
    "high_x",
    "high_y",
    "high_z",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "axis_x",
    "axis_y",
    "axis_z",
    "elongation",
    "flatness",
    "intensity_mean",
    "intensity_std",
)
_INTEGER = {"voxels", "low_x", "low_y", "low_z", "high_x", "high_y", "high_z"}


def finish(totals: dict[int, SegmentTotals], resolution: Iterable[float]) -> dict[str, np.ndarray]:
    """A table (columns of arrays, rows by segment id ascending): id, voxels, volume_um3,
    bounding box (voxels), centroid (nm, voxel i's centre at (i + 0.5) × resolution, as the
    skeletons' vertices), principal axis (unit vector, nm frame), elongation (√ of the largest
    over the middle covariance eigenvalue: high for a rod), flatness (√ of the middle over the
    smallest: high for a sheet), intensity mean and std."""
    res = np.asarray(list(resolution), np.float64)
    ids = sorted(totals)
    rows = [_row(totals[i], res) for i in ids]
    table: dict[str, np.ndarray] = {"segment_id": np.array(ids, np.uint64)}
    for key in COLUMNS:
        dtype = np.int64 if key in _INTEGER else np.float64
        table[key] = np.array([r[key] for r in rows], dtype)
    return table


def _row(t: SegmentTotals, res: np.ndarray) -> dict:
    n = t.count
    mean = np.array([t.sums[k] / n for k in FIRST])  # voxels
    cov = np.empty((3, 3))
    for k in SECOND:
        a, b = _PAIRS[k]
        # n·Σab − ΣaΣb exactly in integers, then one division: no cancellation in floats
        cov[a, b] = cov[b, a] = (n * t.sums[k] - t.sums[FIRST[a]] * t.sums[FIRST[b]]) / (n * n)
    cov *= np.outer(res, res)
    values, vectors = np.linalg.eigh(cov)
    axis = vectors[:, 2] * (1 if vectors[np.argmax(np.abs(vectors[:, 2])), 2] >= 0 else -1)
    spread = (n * t.sums["ii"] - t.sums["i"] ** 2) / (n * n)
    return {
        "voxels": n,
        "volume_um3": n * float(np.prod(res)) * 1e-9,
        "low_x": t.low[0],
        "low_y": t.low[1],
        "low_z": t.low[2],
        "high_x": t.high[0],
        "high_y": t.high[1],
        "high_z": t.high[2],
        "centroid_x": (mean[0] + 0.5) * res[0],
        "centroid_y": (mean[1] + 0.5) * res[1],
        "centroid_z": (mean[2] + 0.5) * res[2],
        "axis_x": axis[0],
        "axis_y": axis[1],
        "axis_z": axis[2],
        "elongation": float(np.sqrt(values[2] / values[1])) if values[1] > 0 else float("inf"),
        "flatness": float(np.sqrt(values[1] / values[0])) if values[0] > 0 else float("inf"),
        "intensity_mean": t.sums["i"] / n,
        "intensity_std": float(np.sqrt(max(spread, 0.0))),
    }
