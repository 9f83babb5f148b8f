"""Streaming segmentation metrics: adapted Rand error and split/merge variation of information.

Each chunk of a volume gives a small sparse `Contingency` table of (seg id, gt id) voxel counts;
tables are summed with `merge` / `merge_all` and `scores` computes the metrics from the sum, so
volumes larger than memory can be scored. Conventions match gala / SNEMI3D / CREMI:

- voxels whose ground-truth label is in `ignore_gt` (default 0) are not scored, but their number
  is kept (`n_ignored`) because gala's adapted Rand formula divides by the total voxel count;
- adapted Rand error: seg label 0 voxels are singletons (SNEMI3D / gala `adapted_rand_error`);
- VOI split = H(seg | gt), VOI merge = H(gt | seg), in bits; seg label 0 is an ordinary label
  (as in CREMI's `voi(..., ignore_reconstruction=[])`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fastremap
import numpy as np

# Count by bincount when the key space has at most max(_BINCOUNT_CELLS, _BINCOUNT_CELLS_PER_KEY x
# number of keys) cells, else by sorting.
_BINCOUNT_CELLS = 1 << 22
_BINCOUNT_CELLS_PER_KEY = 1
# Bits available to pack (key, run length) into one sortable int64.
_PACK_BITS = 63


def _reduce(
    seg: np.ndarray, gt: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum counts of equal (seg, gt) pairs; output sorted by (seg, gt), zero counts dropped."""
    order = np.lexsort((gt, seg))
    seg, gt, count = seg[order], gt[order], count[order]
    if seg.size == 0:
        return seg, gt, count
    start = np.flatnonzero(np.r_[True, (seg[1:] != seg[:-1]) | (gt[1:] != gt[:-1])])
    count = np.add.reduceat(count, start)
    keep = count != 0
    return seg[start][keep], gt[start][keep], count[keep]


@dataclass(kw_only=True)
class Contingency:
    """Sparse joint counts of (seg id, gt id) pairs over the scored voxels.

    `seg`, `gt` (uint64) and `count` (int64) are 1-D and equally long, with unique pairs.
    `n_ignored` is the number of voxels dropped because their gt label was ignored.
    """

    seg: np.ndarray
    gt: np.ndarray
    count: np.ndarray
    n_ignored: int = 0

    def __post_init__(self) -> None:
        self.seg = np.asarray(self.seg, dtype=np.uint64).reshape(-1)
        self.gt = np.asarray(self.gt, dtype=np.uint64).reshape(-1)
        self.count = np.asarray(self.count, dtype=np.int64).reshape(-1)
        self.n_ignored = int(self.n_ignored)
        if not self.seg.size == self.gt.size == self.count.size:
            raise ValueError(
                f"seg, gt and count must be equally long, got "
                f"{self.seg.size}, {self.gt.size}, {self.count.size}"
            )

    @classmethod
    def empty(cls) -> Contingency:
        """A table with no voxels."""
        return cls(
            seg=np.empty(0, np.uint64), gt=np.empty(0, np.uint64), count=np.empty(0, np.int64)
        )

    @property
    def n_scored(self) -> int:
        """Number of scored voxels (gt not ignored)."""
        return int(self.count.sum())

    def merge(self, other: Contingency) -> Contingency:
        """The table of the union of both voxel sets (counts of equal pairs are summed)."""
        return merge_all((self, other))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (plain lists of ints)."""
        return {
            "seg": self.seg.tolist(),
            "gt": self.gt.tolist(),
            "count": self.count.tolist(),
            "n_ignored": self.n_ignored,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Contingency:
        """Inverse of `to_dict`."""
        return cls(seg=d["seg"], gt=d["gt"], count=d["count"], n_ignored=d.get("n_ignored", 0))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Contingency):
            return NotImplemented
        a, b = _reduce(self.seg, self.gt, self.count), _reduce(other.seg, other.gt, other.count)
        return self.n_ignored == other.n_ignored and all(np.array_equal(x, y) for x, y in zip(a, b))


def merge_all(tables: Iterable[Contingency]) -> Contingency:
    """Sum any number of tables into one (pairs unique, sorted by seg then gt)."""
    tables = list(tables)
    if not tables:
        return Contingency.empty()
    seg, gt, count = _reduce(
        np.concatenate([t.seg for t in tables]),
        np.concatenate([t.gt for t in tables]),
        np.concatenate([t.count for t in tables]),
    )
    return Contingency(seg=seg, gt=gt, count=count, n_ignored=sum(t.n_ignored for t in tables))


def _dense_ids(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index array in 0..k-1, uint64 ids of those k indices) for a 1-D integer array."""
    lo, hi = int(a.min()), int(a.max())
    if lo >= 0 and hi < max(a.size, 1 << 16):  # small ids already: use them as indices
        return a, np.arange(hi + 1, dtype=np.uint64)
    idx, remap = fastremap.renumber(a, start=0, preserve_zero=False, in_place=False)
    ids = np.empty(len(remap), np.uint64)
    ids[np.fromiter(remap.values(), np.int64, len(remap))] = np.fromiter(
        remap.keys(), a.dtype, len(remap)
    ).astype(np.uint64)
    return idx, ids


def contingency(seg: np.ndarray, gt: np.ndarray, ignore_gt: Sequence[int] = (0,)) -> Contingency:
    """Contingency table of two same-shape integer label arrays (pairs unique, in no set order).

    Voxels whose gt label is in `ignore_gt` are dropped (and counted in `n_ignored`). Runs of
    equal (seg, gt) along the flattened arrays are collapsed first (weights = run lengths); both
    label lists are then relabelled to dense indices, combined into one int64 key
    (seg_index * n_gt + gt_index) and counted with bincount, or np.unique for huge key spaces.
    """
    seg, gt = np.asarray(seg), np.asarray(gt)
    if seg.shape != gt.shape:
        raise ValueError(f"seg and gt shapes differ: {seg.shape} vs {gt.shape}")
    for name, a in (("seg", seg), ("gt", gt)):
        if not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
    seg, gt, weights, n_ignored = _scored_runs(seg.reshape(-1), gt.reshape(-1), ignore_gt)
    if gt.size == 0:
        return Contingency(
            seg=np.empty(0, np.uint64), gt=np.empty(0, np.uint64), count=[], n_ignored=n_ignored
        )
    seg_idx, seg_ids = _dense_ids(seg)
    gt_idx, gt_ids = _dense_ids(gt)
    n_gt = gt_ids.size
    key = seg_idx.astype(np.int64) * n_gt
    np.add(key, gt_idx, out=key, casting="unsafe")  # indices < 2**63, cast is exact
    key, counts = _count_keys(key, weights, seg_ids.size * n_gt)
    # float64 counts from weighted bincount are exact (< 2**53 voxels).
    return Contingency(
        seg=seg_ids[key // n_gt],
        gt=gt_ids[key % n_gt],
        count=counts.astype(np.int64),
        n_ignored=n_ignored,
    )


def _scored_runs(
    seg: np.ndarray, gt: np.ndarray, ignore_gt: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Flat `seg`, `gt` with runs of equal pairs collapsed (`weights`: their lengths, None when
    nothing was collapsed) and ignored gt labels dropped; and how many voxels were dropped."""
    weights: np.ndarray | None = None
    if seg.size > 1:
        change = seg[1:] != seg[:-1]
        change |= gt[1:] != gt[:-1]
        starts = np.flatnonzero(change)
        if 2 * starts.size < seg.size:  # compressible: count runs, not voxels
            starts = np.r_[0, starts + 1]
            weights = np.diff(np.r_[starts, seg.size])
            seg, gt = seg[starts], gt[starts]
    n_ignored = 0
    if len(ignore_gt) and gt.size:
        keep = np.ones(gt.shape, bool)
        for value in ignore_gt:
            keep &= gt != value
        if not keep.all():
            if weights is None:
                n_ignored = int(gt.size - np.count_nonzero(keep))
            else:
                n_ignored = int(weights.sum() - weights[keep].sum())
                weights = weights[keep]
            seg, gt = seg[keep], gt[keep]
    return seg, gt, weights, n_ignored


def _count_keys(
    key: np.ndarray, weights: np.ndarray | None, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (< `cells`) and their summed weights (1 each without `weights`):
    bincount when the key space is small, else a sort."""
    if cells <= max(key.size * _BINCOUNT_CELLS_PER_KEY, _BINCOUNT_CELLS):
        counts = np.bincount(key, weights)
        key = np.flatnonzero(counts)
        return key, counts[key]
    if weights is None:
        return np.unique(key, return_counts=True)
    # sort (key << w_bits | weight) in one int64: no argsort needed
    w_bits = int(weights.max()).bit_length()
    if (cells - 1).bit_length() + w_bits > _PACK_BITS:
        key, inverse = np.unique(key, return_inverse=True)
        return key, np.bincount(inverse, weights)
    key <<= w_bits
    key |= weights
    key.sort()
    start = np.flatnonzero(np.r_[True, (key[1:] >> w_bits) != (key[:-1] >> w_bits)])
    counts = np.add.reduceat(key & ((1 << w_bits) - 1), start)
    return key[start] >> w_bits, counts


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Adapted Rand error (0 = perfect) and VOI split / merge in bits."""

    arand: float
    voi_split: float
    voi_merge: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict of the three scores."""
        return {"arand": self.arand, "voi_split": self.voi_split, "voi_merge": self.voi_merge}


def scores(table: Contingency) -> Scores:
    """Metrics from a (summed) table; raises ValueError if it scores no voxel.

    With c_ij the count of scored voxels with gt i and seg j, N = Σ c_ij, n = N + n_ignored
    (gala's `n = gt.size`), g_i = Σ_j c_ij, s_j = Σ_i c_ij and z = Σ_i c_i0 (seg 0 voxels):

        sumA  = Σ_i g_i²
        sumB  = Σ_{j≠0} s_j² + z / n
        sumAB = Σ_i Σ_{j≠0} c_ij² + z / n
        P = sumAB / sumB, R = sumAB / sumA, arand = 1 - 2PR / (P + R)

    exactly as SNEMI3D / gala `adapted_rand_error` (seg 0 voxels are singletons, each weighted
    1/n as in that code). VOI uses seg 0 as an ordinary label:

        voi_split = H(seg | gt) = Σ_ij (c_ij / N) log2(g_i / c_ij)
        voi_merge = H(gt | seg) = Σ_ij (c_ij / N) log2(s_j / c_ij)
    """
    seg, gt, count = _reduce(table.seg, table.gt, table.count)
    c = count.astype(np.float64)
    n_scored = float(c.sum())
    if n_scored <= 0:
        raise ValueError("contingency table scores no voxels (empty, or every gt label ignored)")
    n = n_scored + table.n_ignored
    _, gt_inv = np.unique(gt, return_inverse=True)
    seg_ids, seg_inv = np.unique(seg, return_inverse=True)
    g = np.bincount(gt_inv, weights=c)
    s = np.bincount(seg_inv, weights=c)

    nonzero_seg = seg != 0
    singletons = float(c[~nonzero_seg].sum()) / n
    sum_a = float(np.sum(g * g))
    sum_b = float(np.sum(s[seg_ids != 0] ** 2)) + singletons
    sum_ab = float(np.sum(c[nonzero_seg] ** 2)) + singletons
    precision, recall = sum_ab / sum_b, sum_ab / sum_a
    arand = 1.0 - 2.0 * precision * recall / (precision + recall)

    log_c = np.log2(c)
    voi_split = float(np.dot(c, np.log2(g)[gt_inv] - log_c)) / n_scored
    voi_merge = float(np.dot(c, np.log2(s)[seg_inv] - log_c)) / n_scored
    return Scores(arand=arand, voi_split=max(voi_split, 0.0), voi_merge=max(voi_merge, 0.0))


def evaluate(seg: np.ndarray, gt: np.ndarray, ignore_gt: Sequence[int] = (0,)) -> Scores:
    """`scores(contingency(seg, gt, ignore_gt))`."""
    return scores(contingency(seg, gt, ignore_gt))
