"""Partners and direction of one cleft from predicted sides: the presynaptic-side and
postsynaptic-side channels of a "synapses" model (`ml.synapse_targets`).

The segments within `reach` voxels of the cleft (along x, scaled per axis by the resolution)
are its candidates; a learned ranker (`partner_ranker`) picks the ordered pair (presynaptic,
postsynaptic) from their side-channel mass and where they lie: over the cleft's face, on
either side of its plane, or past its rim. The model's sides are blurry rings around the cleft,
so the segment with the most presynaptic probability is often a neighbour at the rim; taking
it, as the first rule did, gave partners and direction right for 0.844 of the clefts matched on
demo seeds 0-5, the ranker (fit on seeds 401-413) 0.893. Partners and direction still come
from one learned cue, so a cleft that runs onto a third segment's membrane, or a partner split
near the cleft, does not send a ray to the wrong segment. The partner points are each side's
probability-weighted centroid on its segment; positions are in nm.

The row also says how sure the model is that there is a presynaptic side at all (`presynaptic`:
the 95th percentile of the presynaptic probability around the cleft). A dark membrane the cleft
channel took for a cleft often has none: on demo seeds 1-3 (threshold 0.3) the false detections'
median was 0.35 against the true ones' 0.55, and keeping clefts at 0.35 or more
(`CleftParams.min_presynaptic`) raised the precision from 0.80 to 0.89 for a recall of 0.89
instead of 0.90.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.synapse.partner_ranker import Candidates, PartnerRanker, candidates
from petavox.tasks.synapse.partners import geometry_row


def side_row(
    where: np.ndarray,
    voxels: np.ndarray,
    seg: np.ndarray,
    sides: np.ndarray,
    res: np.ndarray,
    reach: float,
    ranker: PartnerRanker,
) -> dict:
    """Centroid, partners, their points (nm) and `presynaptic` evidence of one cleft (`where`:
    global voxels (n, 3), `voxels`: the same in the block); `seg` is the block's segmentation
    without the cleft voxels, `sides` its (x, y, z, 2) presynaptic and postsynaptic
    probabilities (0-1); `ranker` picks the partners among the segments within `reach`."""
    found, lo = cleft_candidates(voxels, seg, sides, res, reach)
    pre, post = ranker.choose(found)
    centre = where.mean(axis=0) * res
    origin = (where[0] - voxels[0] + lo) * res  # the crop's first voxel, nm in the volume
    points = np.argwhere(found.near) * res + origin
    on = found.labels[found.index] if len(found.labels) else np.zeros(0, np.int64)
    pre_point = _centroid(points, found.sides[:, 0], on == pre, centre)
    post_point = _centroid(points, found.sides[:, 1], on == post, centre)
    presynaptic = float(np.percentile(found.sides[:, 0], 95)) if len(on) else 0.0
    return {**geometry_row(centre, pre_point, post_point, pre, post), "presynaptic": presynaptic}


def cleft_candidates(
    voxels: np.ndarray, seg: np.ndarray, sides: np.ndarray, res: np.ndarray, reach: float
) -> tuple[Candidates, np.ndarray]:
    """The segments within `reach` of the cleft at block `voxels`, on the crop around it, and
    the crop's first voxel in the block."""
    scale = res / res[0]
    grow = np.ceil(reach / scale).astype(np.int64) + 1
    lo = np.maximum(voxels.min(axis=0) - grow, 0)
    hi = np.minimum(voxels.max(axis=0) + grow + 1, seg.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    cleft = np.zeros(hi - lo, bool)
    cleft[tuple((voxels - lo).T)] = True
    return candidates(cleft, seg[crop], sides[crop], scale, reach), lo


def _centroid(points: np.ndarray, weights: np.ndarray, mine: np.ndarray, centre: np.ndarray):
    """The `weights`-weighted mean of `points` where `mine`; `centre` when they weigh nothing."""
    w = np.where(mine, weights, 0.0)
    total = float(w.sum())
    return centre if total <= 0 else (points * w[:, None]).sum(axis=0) / total
