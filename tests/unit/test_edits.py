"""A proofreader's edits file: parsing with clear refusals, and what a split and a join do."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petavox.tasks.core.errors import InputError
from petavox.tasks.segment.edits import Edits


def test_edits_are_read_from_json():
    edits = Edits.parse(json.dumps({"join": [[3, 9]], "split": [{"a": [1, 2], "b": [5]}]}), "f")
    assert edits.joins == ((3, 9),) and edits.splits == (((1, 2), (5,)),)
    assert edits.watched.tolist() == [1, 2, 3, 5, 9]
    assert edits and not Edits()
    assert edits.digest() != Edits().digest()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[1, 2", "is not JSON"),
        ('{"merge": []}', "expected"),
        ('{"join": [[1, 2, 3]]}', "pair of supervoxel ids"),
        ('{"join": [[1, -2]]}', "supervoxel ids"),
        ('{"split": [{"a": [1], "b": [1]}]}', "disjoint"),
        ('{"split": [{"a": [1]}]}', "a split is"),
    ],
)
def test_bad_edits_are_refused_naming_the_file_and_the_problem(text, problem):
    with pytest.raises(InputError, match=problem) as err:
        Edits.parse(text, "edits.json")
    assert "edits.json" in str(err.value)


def test_a_split_drops_the_edges_between_its_sides_in_either_order():
    edits = Edits(splits=(((1, 2), (5,)),))
    edges = np.array([[1, 5], [5, 2], [1, 2], [5, 7], [3, 4]], np.uint64)
    assert edits.kept(edges).tolist() == [False, False, True, True, True]


def test_joins_put_segments_together_and_say_which_splits_did_not_separate():
    ids = np.array([1, 2, 3, 4, 5], np.uint64)
    segments = np.array([10, 10, 20, 30, 40], np.uint64)
    edits = Edits(joins=((3, 4), (4, 5)), splits=(((1,), (2,)),))
    joins = edits.join_map(ids, segments)
    assert joins.tolist() == [[30, 20], [40, 20]]  # three segments, one id: the smallest
    assert edits.unseparated(ids, segments) == [0]  # 1 and 2 still share segment 10
    assert edits.missing(ids) == [] and Edits(joins=((1, 99),)).missing(ids) == [99]
