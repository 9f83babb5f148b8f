"""Scoring detected synapses against ground truth (cleft labels and objects)."""

import numpy as np

from petavox.tasks.evaluate.synapse_scores import (
    cleft_centres,
    majority_objects,
    match_centres,
    score_synapses,
)
from petavox.tasks.synapse import table as synapse_table

RES = (4.0, 4.0, 40.0)


def test_matching_is_one_to_one_within_the_radius():
    true = np.array([[0.0, 0, 0], [10, 0, 0]])
    found = np.array([[1.0, 0, 0], [2, 0, 0], [30, 0, 0]])
    rows, cols = match_centres(found, true, radius=5)
    # both detections are near the first true point; only one may have it, the closer
    assert rows.tolist() == [0] and cols.tolist() == [0]
    rows, cols = match_centres(found, true, radius=9)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (1, 1)]
    assert [len(a) for a in match_centres(found[:0], true, 5)] == [0, 0]


def test_cleft_centres_and_missing_clefts():
    clefts = np.zeros((6, 5, 4), np.uint32)
    clefts[1:3, 2, 1] = 1
    clefts[4, 0:4, 3] = 3
    centres, present = cleft_centres(clefts, 3)
    np.testing.assert_allclose(centres[[0, 2]], [[1.5, 2, 1], [4, 1.5, 3]])
    assert present.tolist() == [True, False, True]


def test_each_segment_stands_for_the_object_it_overlaps_most():
    truth = np.array([1, 1, 1, 2, 2, 2, 0, 0])
    seg = np.array([7, 7, 8, 8, 8, 9, 9, 9])
    assert majority_objects(seg, truth) == {7: 1, 8: 2, 9: 0}


def table(rows: list[dict]) -> dict:
    out = {name: np.array([r.get(name, 0) for r in rows]) for name in synapse_table.COLUMNS}
    return synapse_table.checked(out)


def test_scores_judge_partners_by_the_ground_truth_objects():
    shape = (40, 20, 4)
    truth = np.zeros(shape, np.uint32)
    truth[:, :10], truth[:, 10:] = 1, 2  # object 1 below y = 10, object 2 above
    truth[20:] += 2  # objects 3 and 4 on the right half
    seg = truth.astype(np.uint64) * 10  # the detector's segmentation: other ids...
    seg[:10, :10] = 5  # ...and object 1 split in two (5 and 10)
    clefts = np.zeros(shape, np.uint32)
    clefts[4:7, 9:11, 1:3] = 1  # synapse 0: 1 -> 2, at x ~ 5
    clefts[14:17, 9:11, 1:3] = 2  # synapse 1: 2 -> 1, at x ~ 15
    clefts[30:33, 9:11, 1:3] = 3  # synapse 2: 3 -> 4, never found
    pre, post = np.array([1, 2, 3]), np.array([2, 1, 4])

    def at(x: float, y: float, z: float) -> dict:
        return {"x": x * RES[0], "y": y * RES[1], "z": z * RES[2]}

    found = table(
        [
            {**at(5, 9.5, 1.5), "pre_id": 5, "post_id": 20},  # right (5 is part of object 1)
            {**at(15, 9.5, 1.5), "pre_id": 10, "post_id": 20},  # matched, the wrong way round
            {**at(5, 2, 1.5), "pre_id": 5, "post_id": 10},  # nothing there
        ]
    )
    scores = score_synapses(found, clefts, truth, seg, pre, post, RES, radius=3)
    assert (scores.detected, scores.true, scores.matched, scores.right_direction) == (3, 3, 2, 1)
    assert scores.precision == 2 / 3 and scores.recall == 2 / 3 and scores.direction == 0.5
