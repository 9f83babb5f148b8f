"""Detected synapses against ground truth: precision, recall and direction.

Ground truth is a volume of cleft labels (cleft i + 1 for true synapse i, as the generator
draws them and `align` carries them) with each true synapse's presynaptic and postsynaptic
object in a ground-truth segmentation. A detection matches a true cleft when its centroid is
within `radius` voxels of the cleft's centroid, one to one, closest pairs first (an assignment
problem). A matched detection is right when its presynaptic segment is part of the true
presynaptic object and its postsynaptic segment of the true postsynaptic one, each segment
standing for the ground-truth object it overlaps most: so the measure holds for any
segmentation the detector was given (a split object's pieces all stand for it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import fastremap
import numpy as np
from scipy.optimize import linear_sum_assignment

Table = dict[str, np.ndarray]
UNMATCHED = 1e9  # cost of pairs farther apart than the radius (never chosen when avoidable)


@dataclass(frozen=True, kw_only=True)
class SynapseScores:
    detected: int
    true: int
    matched: int
    right_direction: int
    precision: float
    recall: float
    direction: float  # fraction of matched detections with the right partners, the right way

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def match_centres(found: np.ndarray, true: np.ndarray, radius: float) -> tuple[np.ndarray, ...]:
    """One-to-one matching of `found` (n, 3) to `true` (m, 3) points within `radius`: the
    matched row indices of each."""
    if not len(found) or not len(true):
        return np.zeros(0, int), np.zeros(0, int)
    dist = np.linalg.norm(found[:, None] - true[None], axis=-1)
    rows, cols = linear_sum_assignment(np.where(dist <= radius, dist, UNMATCHED))
    near = dist[rows, cols] <= radius
    return rows[near], cols[near]


def cleft_centres(clefts: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Voxel centroids (x, y, z) of cleft labels 1..count and whether each has any voxel."""
    voxels = np.nonzero((clefts > 0) & (clefts <= count))
    label = clefts[voxels].astype(np.int64)
    sizes = np.bincount(label, minlength=count + 1)[1:]
    sums = [np.bincount(label, weights=v, minlength=count + 1)[1:] for v in voxels]
    centres = np.column_stack(sums) / np.maximum(sizes, 1)[:, np.newaxis]
    return centres, sizes > 0


def majority_objects(segmentation: np.ndarray, truth: np.ndarray) -> dict[int, int]:
    """Each segment id → the ground-truth id it overlaps most (ties: the smaller id)."""
    # each volume's ids renumbered 0..n-1 (fastremap's hash map), then one int64 key per
    # (segment, object) pair: several times faster than np.unique(axis=1) over the pairs
    seg_index, seg_map = fastremap.renumber(
        segmentation.ravel(), start=0, preserve_zero=False, in_place=False
    )
    gt_index, gt_map = fastremap.renumber(
        truth.ravel(), start=0, preserve_zero=False, in_place=False
    )
    seg_ids, gt_ids = _ids_by_index(seg_map), _ids_by_index(gt_map)
    keys, counts = fastremap.unique(
        seg_index.astype(np.int64) * len(gt_ids) + gt_index, return_counts=True
    )
    pairs = (seg_ids[keys // len(gt_ids)], gt_ids[keys % len(gt_ids)])
    order = np.lexsort((pairs[1], -counts, pairs[0]))  # by segment, most overlap first
    seg, gt = pairs[0][order], pairs[1][order]
    first = np.r_[True, seg[1:] != seg[:-1]]
    return dict(zip(seg[first].tolist(), gt[first].tolist()))


def _ids_by_index(mapping: dict) -> np.ndarray:
    """fastremap.renumber's {old id: new index} as an array: ids[index] = old id."""
    ids = np.zeros(len(mapping), np.uint64)
    ids[np.fromiter(mapping.values(), np.int64, len(mapping))] = np.fromiter(
        mapping.keys(), np.uint64, len(mapping)
    )
    return ids


def score_synapses(
    found: Table,
    clefts: np.ndarray,
    truth: np.ndarray,
    segmentation: np.ndarray,
    pre: np.ndarray,
    post: np.ndarray,
    resolution: tuple[float, float, float],
    radius: float = 6.0,
) -> SynapseScores:
    """Score a synapse table (nm, the `synapse.table` contract) found on `segmentation`
    against cleft labels and a ground-truth segmentation `truth` (x, y, z voxel arrays of one
    volume at `resolution` nm whose origin is the table's); `pre[i]`, `post[i]` are true
    synapse i's objects."""
    centres, present = cleft_centres(clefts, len(pre))
    true_ids = np.flatnonzero(present)
    det = np.column_stack([found[a] for a in "xyz"]) / np.asarray(resolution, np.float64)
    rows, cols = match_centres(det, centres[true_ids], radius)
    matched = true_ids[cols]
    objects = majority_objects(segmentation, truth)
    objects[0] = 0  # no partner found stands for none

    def object_of(ids: np.ndarray) -> np.ndarray:
        return np.array([objects.get(int(i), 0) for i in ids], np.int64)

    right = int(
        np.sum(
            (object_of(found["pre_id"][rows]) == pre[matched])
            & (object_of(found["post_id"][rows]) == post[matched])
        )
    )
    detected, n_matched = len(det), len(rows)
    return SynapseScores(
        detected=detected,
        true=len(true_ids),
        matched=n_matched,
        right_direction=right,
        precision=n_matched / detected if detected else 0.0,
        recall=n_matched / len(true_ids) if len(true_ids) else 0.0,
        direction=right / n_matched if n_matched else 0.0,
    )
