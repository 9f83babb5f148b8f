"""Partners and direction from a synapse model's side channels (`side_partners`), and the
"synapses" training target they are learned from (`synapse_targets`): perfect side channels
from the generator give the true partners on segmentations that fill the membranes or split a
partner next to its cleft; one segment holding both sides (a merge across the cleft) still gives
two partners; the synapse set does not depend on the blocks."""

from __future__ import annotations

import numpy as np
import pytest
from cleft_volumes import (
    assert_same_whatever_the_blocks,
    bold,
    counts,
    filled,
    perfect,
    perfect_sides,
    split_behind_clefts,
)

from petavox.tasks.core.geometry import Box
from petavox.tasks.ml.examples import make_target
from petavox.tasks.ml.synapse_targets import synapse_flags
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.cleft_channel import CleftParams, detect_clefts
from petavox.tasks.synapse.partner_ranker import load_ranker
from petavox.tasks.synapse.side_partners import side_row

SHAPE = (128, 128, 64)
RES = (8.0, 8.0, 8.0)
SEEDS = (21, 22, 23)


@pytest.fixture(scope="module")
def volumes():
    return bold(SEEDS, SHAPE)


def whole(prob, raw, seg) -> synapse_table.Table:
    box = Box((0, 0, 0), seg.shape)
    return detect_clefts(prob, raw, seg, box, box, box, RES, CleftParams())


def test_flags_mark_the_cleft_and_each_partner_near_it_only():
    labels = np.zeros((30, 20, 20), np.uint32)
    labels[:14], labels[17:] = 1, 2
    clefts = np.zeros(labels.shape, np.uint32)
    clefts[14:17, 8:12, 8:12] = 1
    flags = synapse_flags(labels, clefts, pre=[2], post=[1], reach=3.0)
    assert np.array_equal(flags & 1 > 0, clefts > 0)
    pre, post = (flags & 2) > 0, (flags & 4) > 0
    assert np.all(labels[pre] == 2) and np.all(labels[post] == 1)
    xs = np.unique(np.nonzero(pre)[0])
    assert xs.min() == 17 and xs.max() == 19  # within 3 voxels of the cleft's last plane
    assert not pre[17, 0, 0]  # beside the cleft, but farther than 3 voxels from it
    target = make_target(flags, "synapses")
    assert target.shape == (3, *labels.shape) and np.array_equal(target[1] > 0, pre)


@pytest.mark.parametrize("segmentation", ["membranes filled", "post split behind the cleft"])
def test_perfect_sides_give_the_true_partners(volumes, segmentation):
    totals = np.zeros(4, int)
    for volume in volumes:
        seg = filled(volume.labels)
        if segmentation != "membranes filled":
            seg = split_behind_clefts(seg, volume, depth=3.0)
        totals += counts(whole(perfect_sides(volume), volume.raw, seg), volume, seg, RES)
    detected, true, matched, right = totals
    assert true >= 40 and matched / detected >= 0.95 and matched / true >= 0.95, totals
    assert right / matched >= 0.97, totals


def test_the_cleft_alone_is_the_rays_detector(volumes):
    """Side channels change the partners, not which clefts are found."""
    volume = volumes[0]
    seg = filled(volume.labels)
    sides = whole(perfect_sides(volume), volume.raw, seg)
    cleft = whole(perfect(volume), volume.raw, seg)
    np.testing.assert_array_equal(sides["synapse_id"], cleft["synapse_id"])
    np.testing.assert_array_equal(sides["x"], cleft["x"])


def test_a_merge_across_the_cleft_still_gives_two_partners():
    """Segment 1 holds the presynaptic side and most of the postsynaptic side (the partner
    merged into it); segment 2 holds the rest of the postsynaptic side: the pair is (1, 2)."""
    seg = np.zeros((20, 12, 12), np.uint64)
    seg[:9], seg[11:] = 1, 1
    seg[11:, :4] = 2
    sides = np.zeros((*seg.shape, 2), np.float32)
    sides[5:9, ..., 0] = 1.0
    sides[11:15, ..., 1] = 1.0
    cleft = np.zeros(seg.shape, bool)
    cleft[9:11] = True
    voxels = np.argwhere(cleft)
    row = side_row(voxels, voxels, seg, sides, np.array(RES), 5.0, load_ranker())
    assert (row["pre_id"], row["post_id"]) == (1, 2)
    assert row["pre_x"] < row["x"] < row["post_x"]
    assert row["presynaptic"] == 1.0
    nothing = side_row(voxels, voxels, seg, np.zeros_like(sides), np.array(RES), 5.0, load_ranker())
    assert (nothing["pre_id"], nothing["post_id"]) == (0, 0)  # no side seen: no partner
    assert nothing["presynaptic"] == 0.0


def test_a_cleft_without_a_presynaptic_side_is_not_a_synapse(volumes):
    """The same clefts with the presynaptic channel faded below `min_presynaptic`: none is a
    synapse; with the rule off (0) they are all found again, partners and all."""
    volume = volumes[0]
    seg, prob = filled(volume.labels), perfect_sides(volume)
    box = Box((0, 0, 0), seg.shape)
    found = whole(prob, volume.raw, seg)
    assert len(found["x"]) >= 10
    faded = prob.copy()
    faded[..., 1] = np.minimum(faded[..., 1], round(0.3 * 255))
    assert len(whole(faded, volume.raw, seg)["x"]) == 0
    off = detect_clefts(faded, volume.raw, seg, box, box, box, RES, CleftParams(min_presynaptic=0))
    np.testing.assert_array_equal(off["synapse_id"], found["synapse_id"])
    np.testing.assert_array_equal(off["pre_id"], found["pre_id"])


def test_same_synapses_whatever_the_blocks(volumes):
    volume = volumes[1]
    prob, seg = perfect_sides(volume), filled(volume.labels)
    assert_same_whatever_the_blocks(prob, volume.raw, seg, RES)
