"""Training examples for the partner ranker (`partner_ranker`): the clefts the cleft-channel
detector finds in a whole volume, each matched to a true synapse (centres within `radius`
voxels, one to one, as `evaluate.synapse_scores` matches them) and described by its candidate
pairs' feature rows and which pairs are right (the segments' majority ground-truth objects are
the true presynaptic and postsynaptic objects; a partner split into several segments makes
several pairs right)."""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box
from petavox.tasks.evaluate.synapse_scores import cleft_centres, majority_objects, match_centres
from petavox.tasks.synapse.cleft_channel import CleftParams, cleft_voxels
from petavox.tasks.synapse.partner_ranker import PartnerRanker, pair_rows
from petavox.tasks.synapse.partners import owned_clefts
from petavox.tasks.synapse.side_partners import cleft_candidates


@dataclass(frozen=True)
class RankerExample:
    """One found cleft: its candidate pairs' feature rows and which of them are right."""

    rows: np.ndarray  # (n, width)
    right: np.ndarray  # (n,) bool


def ranker_examples(
    prob: np.ndarray,
    raw: np.ndarray,
    seg: np.ndarray,
    clefts: np.ndarray,
    truth: np.ndarray,
    pre: np.ndarray,
    post: np.ndarray,
    resolution: tuple[float, float, float],
    params: CleftParams,
    radius: float = 6.0,
) -> list[RankerExample]:
    """Examples from one volume (x, y, z arrays): a synapse model's output `prob` (…, 3), the
    image, the pipeline's segmentation, cleft labels 1..n and the ground-truth segmentation,
    true synapse i's objects `pre[i]`, `post[i]`. Clefts with fewer than two candidates or no
    right pair among them are left out."""
    _, sides, cleft, cut = cleft_voxels(prob, raw, seg, params.threshold)
    if sides is None:
        raise InputError("partner-ranker examples need a synapse model's three channels")
    box = Box((0, 0, 0), seg.shape)
    res = np.asarray(resolution, np.float64)
    cc = cc3d.connected_components(cleft, connectivity=26, out_dtype=np.uint32)
    found = list(owned_clefts(cc, box, box, box, params.min_size, params.max_extent))
    centres, present = cleft_centres(clefts, len(pre))
    true_ids = np.flatnonzero(present)
    det = np.array([where.mean(axis=0) for _, where, _ in found]).reshape(-1, 3)
    rows_of, cols = match_centres(det, centres[true_ids], radius)
    objects = majority_objects(seg, truth)
    examples = []
    for r, c in zip(rows_of, cols):
        k = true_ids[c]
        cands, _ = cleft_candidates(found[r][0], cut, sides, res, params.side_reach)
        if len(cands.labels) < 2:
            continue
        owner = np.array([objects.get(int(label), 0) for label in cands.labels])
        pairs, rows = pair_rows(cands)
        right = (owner[pairs[:, 0]] == pre[k]) & (owner[pairs[:, 1]] == post[k])
        if right.any():
            examples.append(RankerExample(rows, right))
    return examples


def accuracy(examples: list[RankerExample], ranker: PartnerRanker) -> float:
    """The share of examples whose top pair under `ranker` is right."""
    w = np.asarray(ranker.weights)
    return float(np.mean([e.right[int(np.argmax(e.rows @ w))] for e in examples] or [0.0]))
