"""Synapse detection from a cleft probability channel (a CNN's output, made by `infer`) on one
block of cleft probability + segmentation + raw image.

Clefts are the 26-connected components of probability >= `threshold` with at least `min_size`
voxels and at most `max_extent` on every axis; confidence is their mean probability. The owner
rule and the synapse ids are the classical detector's (`partners.owned_clefts`): a cleft belongs
to the chunk holding its lowest voxel in global (z, y, x) order and its id is that voxel's index
+ 1; with a halo of at least `required_halo` the synapse set is the same for any chunking.

Partners and direction are the classical detector's too (`partners.synapse_row`), on the
segmentation with the cleft voxels (probability >= threshold) taken out: a segmentation that
fills the membranes (no 0 between segments) then has a gap at every cleft, as the membrane of
a ground-truth segmentation is, so rays cross the cleft to the segment on either side, and the
direction's dark-voxel counts see the partners' cytoplasm, not the dark cleft itself. The rays
start from the cleft's darker half by cytoplasm darkness (`detection.cytoplasm_darkness`, the
classical detector's cue): a cleft that runs past a junction onto a third segment's membrane
is still assigned by the part flanked by the postsynaptic density and the vesicle cloud
(synthetic clefts, perfect channel: partners and direction right for 0.88 of clefts with
all voxels casting rays, 0.93 with the darker half; seeds 100-114 chose the half).

With a synapse model's two more channels (presynaptic side, postsynaptic side: `prob` is
(x, y, z, 3), as `infer` writes a "synapses" model's output), partners and direction come from
them instead (`side_partners.side_row`): the pair of segments around the cleft a learned ranker
scores highest (`partner_ranker`); a cleft with too little presynaptic probability around it
(`min_presynaptic`) is not a synapse.

No data (in-plane squares of image 0, `detection.no_data`: the black margins of aligned
sections, padding) holds no segment and no cleft. A cleft touching the volume's outer faces is
kept only when both partners are found (`partners.kept_at_faces`).

The probabilities are uint8 (0-255) or float in 0-1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cc3d
import numpy as np

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.ml.synapse_targets import SIDE_REACH
from petavox.tasks.synapse.detection import (
    NO_DATA_WIDTH,
    axis_scale,
    boundaries,
    cytoplasm_darkness,
    no_data,
)
from petavox.tasks.synapse.partner_ranker import PartnerRanker, load_ranker
from petavox.tasks.synapse.partners import (
    as_table,
    as_unit,
    kept_at_faces,
    look,
    owned_clefts,
    synapse_row,
)
from petavox.tasks.synapse.side_partners import side_row


@dataclass(frozen=True, kw_only=True)
class CleftParams:
    """Thresholds of the cleft-channel detector; lengths in voxels along x (scaled per axis)."""

    threshold: float = 0.5  # cleft voxels: probability at least this (0-1)
    sigma: float = 1.0  # Gaussian weighting of the cytoplasm darkness that picks the rays
    min_size: int = 15  # voxels
    max_extent: int = 20  # voxels on every axis; larger components are not clefts
    vesicle_depth: tuple[float, float] = (3.0, 6.0)  # slab of the vesicle cloud
    psd_depth: tuple[float, float] = (0.5, 3.0)  # slab of the postsynaptic density
    vesicle_threshold: float = 0.4  # image below this in a slab counts as dark (0-1)
    reach: int = 10  # how far rays look for the partners
    normal_radius: float = 6.0  # the partners' voxels this close to the cleft give its normal
    whole_sides: bool = True  # direction from each side's voxels, not its partner's alone
    side_reach: float = SIDE_REACH  # with side channels: where partners are looked for (as trained)
    # with side channels: a cleft needs this much presynaptic probability around it
    # (`side_partners`; chosen on demo seeds 1-3, see README "The built-in synapse model")
    min_presynaptic: float = 0.35
    # with side channels: picks the partners among the segments near the cleft
    partner_ranker: PartnerRanker = field(default_factory=load_ranker)


def required_halo(params: CleftParams, resolution: tuple[float, float, float]) -> Vec3:
    """The smallest halo (per axis, voxels) with which the synapse set does not depend on the
    chunking: clefts of up to `max_extent` whole, with their partners and direction cue within
    reach, and the no-data mask and boundaries there exact."""
    scale = axis_scale(resolution)
    gauss = np.floor(4.0 * params.sigma * scale + 0.5)  # scipy's kernel radius
    reach = np.ceil(look(params) * scale) + 1  # the rays' farthest voxel (rounded)
    # beyond those: the boundaries look one voxel further, no data NO_DATA_WIDTH + 1 more
    beyond = np.maximum(gauss, reach) + NO_DATA_WIDTH + 2
    return Vec3.of(int(params.max_extent + v) for v in beyond)


def detect_clefts(
    prob: np.ndarray,
    raw: np.ndarray,
    seg: np.ndarray,
    read: Box,
    write: Box,
    volume: Box,
    resolution: tuple[float, float, float],
    params: CleftParams,
) -> dict[str, np.ndarray]:
    """The synapses this block owns as a synapse table (`table`): `prob` (cleft probability),
    `raw` and `seg` cover `read` (the write box grown by at least `required_halo`, clipped to
    the `volume`)."""
    unit, sides, cleft, seg = cleft_voxels(prob, raw, seg, params.threshold)
    assign = _assigner(raw, seg, sides, np.asarray(resolution, np.float64), params)
    inner = write.grow(params.max_extent).intersection(read)
    keep = np.zeros_like(cleft)
    keep[inner.slices(read.start)] = True
    cc = cc3d.connected_components(cleft & keep, connectivity=26, out_dtype=np.uint32)
    rows = []
    for voxels, where, synapse_id in owned_clefts(
        cc, read, write, volume, params.min_size, params.max_extent
    ):
        row = assign(where, voxels)
        if row.pop("presynaptic", 1.0) < params.min_presynaptic:
            continue
        if not kept_at_faces(row, where, volume):
            continue
        confidence = float(np.mean(unit[tuple(voxels.T)]))
        row.update(synapse_id=synapse_id, size=len(voxels), confidence=confidence)
        rows.append(row)
    return as_table(rows)


def cleft_voxels(
    prob: np.ndarray, raw: np.ndarray, seg: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """A block's cleft probability (0-1), side channels (…, 2, or None), cleft voxels
    (probability >= `threshold`, not no data) and segmentation without them or no data."""
    unit, missing = as_unit(prob), no_data(raw)
    sides = None
    if unit.ndim == 4:  # (x, y, z, 1) or a "synapses" model's cleft + two sides
        unit, sides = unit[..., 0], (unit[..., 1:] if unit.shape[-1] == 3 else None)
    cleft = (unit >= np.float32(threshold)) & ~missing
    return unit, sides, cleft, np.where(cleft | missing, 0, seg)


def _assigner(
    raw: np.ndarray, seg: np.ndarray, sides: np.ndarray | None, res: np.ndarray, params: CleftParams
) -> Callable[[np.ndarray, np.ndarray], dict]:
    """The block's partner finder, (global voxels, block voxels) of a cleft → its row: from the
    side channels, else rays and dark-voxel counts (`partners.synapse_row`)."""
    if sides is not None:
        reach, ranker = params.side_reach, params.partner_ranker
        return lambda where, voxels: side_row(where, voxels, seg, sides, res, reach, ranker)
    img, edge = as_unit(raw), boundaries(seg)
    darkness = cytoplasm_darkness(img, edge, params.sigma * axis_scale(tuple(res)))
    return lambda where, voxels: synapse_row(where, voxels, img, seg, edge, res, params, darkness)
