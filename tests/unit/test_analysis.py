"""`analysis`: Bingham's test finds a planted preferred direction (and its subset) and none among
uniform axes, at the rate its p-value promises; connection strengths and class sizes count
what they are given."""

from __future__ import annotations

import numpy as np

from petavox.tasks.analysis.classes import class_sizes, class_summary
from petavox.tasks.analysis.connections import strengths
from petavox.tasks.analysis.orientation import angle_degrees, orientation_test
from petavox.workflows.analyze import neuron_axes


def uniform_axes(n: int, rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(direction: np.ndarray, n: int, degrees: float, rng) -> np.ndarray:
    """Axes within about `degrees` of `direction`, half of them pointing the other way."""
    d = direction / np.linalg.norm(direction)
    v = d + np.tan(np.radians(degrees)) * rng.normal(size=(n, 3)) / np.sqrt(3)
    v *= np.where(rng.random(n) < 0.5, -1, 1)[:, None]
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_a_planted_direction_is_found_with_its_subset():
    rng = np.random.default_rng(0)
    direction = np.array([1.0, 2.0, -0.5])
    axes = np.concatenate([uniform_axes(30, rng), near(direction, 12, 5, rng)])
    found = orientation_test(axes)
    assert found.p_value < 0.01 and found.aligned_p_value < 0.01
    assert angle_degrees(found.direction, direction) < 10
    assert found.aligned >= 12 and found.expected_aligned < 3
    few = orientation_test(np.concatenate([uniform_axes(8, rng), near(direction, 6, 5, rng)]))
    assert few.aligned >= 6 and few.aligned_p_value < 0.01  # six of fourteen: a subset


def test_uniform_axes_show_no_direction_at_the_promised_rate():
    rng = np.random.default_rng(1)
    found = [orientation_test(uniform_axes(40, rng), trials=1) for _ in range(400)]
    p = np.array([f.p_value for f in found])
    assert 0.0 < (p < 0.05).mean() < 0.1  # about 5 % below 0.05, as a p-value should be
    assert (p < 0.01).mean() < 0.03
    subset = np.array(
        [orientation_test(uniform_axes(12, rng), trials=200).aligned_p_value for _ in range(100)]
    )
    assert 0.0 < (subset < 0.2).mean() < 0.35  # calibrated: about a fifth below 0.2
    assert (subset < 0.01).mean() < 0.05


def test_too_few_axes_give_no_direction():
    found = orientation_test(np.array([[1.0, 0, 0], [0, 0, 0]]))
    assert found.count == 1 and found.p_value == 1.0


def test_strengths_count_pairs_by_synapses_over_files_and_keep_the_strongest():
    first = {"pre_id": np.array([1, 1, 2]), "post_id": np.array([2, 3, 3]), "synapses": [1, 7, 1]}
    second = {"pre_id": np.array([4, 5]), "post_id": np.array([1, 1]), "synapses": [12, 2]}
    s = strengths([first, second], top=2)
    assert s["pairs"] == 5 and s["synapses"] == 23
    assert s["pairs_by_synapses"] == {"1": 2, "2": 1, "7": 1, "12": 1}
    assert s["pairs_with_at_least"] == {"2": 3, "5": 2, "10": 1}
    assert s["strongest"] == [
        {"pre": 4, "post": 1, "synapses": 12},
        {"pre": 1, "post": 3, "synapses": 7},
    ]


def test_class_sizes_gather_partitions():
    parts = [(np.array(["glia", "neuron"]), np.array([1.0, 2.0])), (np.array(["neuron"]), [4.0])]
    sizes = class_sizes(parts)
    summary = class_summary(sizes)
    assert summary["neuron"]["segments"] == 2 and summary["neuron"]["volume_um3"] == 6.0
    assert summary["glia"]["volume_p50_um3"] == 1.0


def test_the_tested_axes_are_the_neurons_else_the_large_segments():
    """Classified: the class neuron, whatever its size; the skeleton's axis, else the voxels'.
    Unclassified: segments of `size_factor` times the median voxels or more."""
    nan = float("nan")
    table = {
        "segment_id": np.array([1, 2, 3, 4], np.uint64),
        "voxels": np.array([10, 10, 500, 10]),
        **{f"skeleton_axis_{a}": np.array([v, nan, 0.0, 0.0]) for a, v in zip("xyz", (1, 0, 0))},
        **{f"axis_{a}": np.array([0.0, v, 0.0, 0.0]) for a, v in zip("xyz", (0, 1, 0))},
    }
    names = np.array(["neuron", "neuron", "neurite", "glia"])
    ids, axes = neuron_axes([(table, names)], size_factor=10)
    assert ids.tolist() == [1, 2]
    np.testing.assert_array_equal(axes, [[1, 0, 0], [0, 1, 0]])
    ids, _ = neuron_axes([(table, None)], size_factor=10)
    assert ids.tolist() == [3]
