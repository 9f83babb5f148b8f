"""The segment stage's guards without Ray: the boundary map's membrane share and its warning,
each chunk's top labels, and the driver's bounded sum of them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from small_layers import image_layer

from petavox.tasks.core.geometry import Chunk
from petavox.tasks.segment.label_counts import LabelCounts, top_counts
from petavox.workflows.segment_checks import (
    LargestSegments,
    SegmentSizes,
    boundary_warning,
    check_boundary,
    dominance_warning,
    membrane_stats,
    model_record,
    report_sizes,
    sizes_line,
)

URL = "file:///data/boundary"
MERGE = ("merge_threshold", 0.875)
CHUNK: Chunk = None  # type: ignore[assignment]  # the hooks do not look at the chunk


def test_membrane_share_of_a_boundary_map_uint8_or_float():
    values = np.array([[0], [127], [128], [255]], np.uint8)  # 128 / 255 ≥ 0.5
    assert membrane_stats(values) == pytest.approx((0.5, (127 + 128 + 255) / 255 / 4))
    floats = np.array([[0.0], [0.49], [0.5], [1.0]], np.float32)
    assert membrane_stats(floats)[0] == 0.5


def test_membrane_share_of_affinities_is_of_one_minus_their_mean():
    values = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5], [1.0, 0.0, 1.0]])
    fraction, mean = membrane_stats(values.astype(np.float32))
    assert fraction == 0.5  # boundaries 0, 2/3, 0.5, 1/3
    assert mean == pytest.approx((0 + 2 / 3 + 0.5 + 1 / 3) / 4)


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({}, (None, None)),
        ({"petavox_model": "x"}, (None, None)),
        ({"petavox_model": {"membrane_fraction": None, "model": "m.onnx"}}, (None, "m.onnx")),
        ({"petavox_model": {"membrane_fraction": True}}, (None, None)),
        ({"petavox_model": {"membrane_fraction": 0.0}}, (None, None)),
        ({"petavox_model": {"membrane_fraction": 0.098, "model": "m.onnx"}}, (0.098, "m.onnx")),
    ],
)
def test_the_model_record_is_read_only_when_usable(info, expected):
    assert model_record(info) == expected


def test_a_share_far_below_the_models_warns_with_the_figures_and_the_fix():
    text = boundary_warning(URL, 0.012, 0.08, 0.098, "file:///m.onnx", MERGE)
    assert text is not None
    assert text.startswith(f"boundary map {URL}: 1.2 % of sampled voxels are membrane")
    assert "the model file:///m.onnx predicted 9.8 % on its training data" in text
    assert "expect merged neurons" in text and "lower merge_threshold (now 0.875)" in text
    assert "intensity/resampling note" in text and "retrain" in text


def test_a_share_far_above_the_models_warns_of_splits():
    text = boundary_warning(URL, 0.25, 0.3, 0.098, None, ("boundary_threshold", 0.5))
    assert text is not None and "the model predicted 9.8 %" in text
    assert "expect split neurons" in text and "raise boundary_threshold (now 0.5)" in text


@pytest.mark.parametrize("fraction", [0.05, 0.098, 0.19])
def test_a_share_within_a_factor_two_of_the_models_is_fine(fraction):
    assert boundary_warning(URL, fraction, 0.1, 0.098, None, MERGE) is None


@pytest.mark.parametrize(
    ("fraction", "warned"),
    [(0.0, "under 3.0 %"), (0.029, "under 3.0 %"), (0.03, None), (0.6, None), (0.7, "over 60")],
)
def test_without_the_models_figure_only_implausible_shares_warn(fraction, warned):
    text = boundary_warning(URL, fraction, 0.1, None, None, MERGE)
    assert (text is None) if warned is None else (warned in text)


def test_check_boundary_samples_the_layer_and_reads_the_model_record(tmp_path):
    layer = image_layer(f"file://{tmp_path}/b", size=(64, 32, 16), fill=0)
    (warning,) = check_boundary(layer, MERGE)
    assert "0.0 % of sampled voxels" in warning and "under 3.0 %" in warning
    layer.write(layer.bounds(), np.full((64, 32, 16), 255, np.uint8))
    layer.info["petavox_model"] = {"membrane_fraction": 0.6, "model": "m"}
    assert check_boundary(layer, MERGE) == []  # 100 % against 60 %: within a factor 2


def test_check_boundary_leaves_unreadable_input_to_the_tasks(tmp_path, caplog):
    layer = image_layer(f"file://{tmp_path}/b")  # no chunk written
    with caplog.at_level(logging.INFO, logger="petavox"):
        assert check_boundary(layer, MERGE) == []
    assert "not checked" in caplog.text
    assert len(check_boundary(layer, MERGE, fill_missing=True)) == 1


def test_top_counts_sums_ids_drops_zero_and_keeps_the_largest():
    ids = np.array([0, 5, 7, 5, 9, 3], np.uint64)  # fragments already mapped: 5 appears twice
    counts = np.array([100, 10, 12, 4, 12, 1])
    found = top_counts(ids, counts, k=3)
    assert found == LabelCounts(ids=(5, 7, 9), counts=(14, 12, 12), labelled=39, distinct=4)
    assert not found.complete and top_counts(ids, counts, k=4).complete
    assert top_counts(np.array([0], np.uint64), np.array([8])) == LabelCounts((), (), 0, 0)


def test_largest_segments_sums_over_chunks_exactly_when_every_label_is_listed():
    counter = LargestSegments(total_chunks=2)
    counter.add(CHUNK, LabelCounts(ids=(1, 2), counts=(30, 10), labelled=40, distinct=2))
    counter.add(CHUNK, LabelCounts(ids=(2, 3), counts=(50, 20), labelled=70, distinct=2))
    sizes = counter.sizes()
    assert sizes == SegmentSizes(
        labelled=110, largest_id=2, largest=60, exact=True, segments=3, chunks=2, total_chunks=2
    )
    assert sizes.share == pytest.approx(60 / 110)


def test_largest_segments_is_a_lower_bound_with_no_count_of_segments_when_truncated():
    counter = LargestSegments(total_chunks=3)
    counter.add(CHUNK, LabelCounts(ids=(1,), counts=(30,), labelled=45, distinct=3))
    counter.add(CHUNK, LabelCounts(ids=(1,), counts=(20,), labelled=20, distinct=1))
    sizes = counter.sizes()
    assert sizes is not None and (sizes.largest, sizes.exact, sizes.segments) == (50, False, None)
    assert sizes_line("file:///s", sizes) == (
        "segmentation file:///s: the largest (id 1) holds at least 76.9 % of the labelled voxels "
        "(counted over the 2 of 3 chunks written now)"
    )


def test_largest_segments_keeps_bounded_memory_and_the_large_ids():
    counter = LargestSegments(total_chunks=100, capacity=4)
    for i in range(100):
        counts = LabelCounts(ids=(7, 1000 + i), counts=(100, 1), labelled=101, distinct=2)
        counter.add(CHUNK, counts)
        assert len(counter.counts) <= 8
    sizes = counter.sizes()
    assert sizes is not None
    assert (sizes.largest_id, sizes.largest, sizes.labelled) == (7, 10_000, 10_100)
    assert not sizes.exact and sizes.segments is None  # ids were dropped


def test_the_summary_line_and_the_dominance_warning():
    sizes = SegmentSizes(
        labelled=1000, largest_id=4, largest=372, exact=True, segments=412, chunks=8, total_chunks=8
    )
    assert sizes_line("file:///s", sizes) == (
        "segmentation file:///s: 412 segments; the largest (id 4) holds 37.2 % of the labelled "
        "voxels"
    )
    assert dominance_warning("file:///s", sizes, MERGE) is None
    big = SegmentSizes(1000, 4, 935, True, 2, 8, 8)
    text = dominance_warning("file:///s", big, MERGE)
    assert text is not None and "one segment (id 4) holds 93.5 % of the labelled voxels" in text
    assert "merge_threshold (now 0.875) too high" in text


def test_report_sizes_prints_warns_returns_and_starts_over(capsys, caplog):
    counter = LargestSegments(total_chunks=1)
    counter.add(CHUNK, LabelCounts(ids=(9, 2), counts=(99, 1), labelled=100, distinct=2))
    with caplog.at_level(logging.WARNING, logger="petavox"):
        sizes = report_sizes("file:///s", MERGE, counter)
    assert sizes is not None and sizes.share == 0.99
    assert "2 segments; the largest (id 9) holds 99.0 %" in capsys.readouterr().out
    assert "one segment (id 9) holds 99.0 %" in caplog.text
    assert counter.sizes() is None and report_sizes("file:///s", MERGE, counter) is None
