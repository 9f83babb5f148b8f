"""Watershed seeds: threshold components leak through a membrane gap, distance maxima do not."""

from __future__ import annotations

import numpy as np

from petavox.tasks.evaluate.metrics import evaluate
from petavox.tasks.segment.watershed import WatershedParams, watershed_fragments


def two_cells_with_a_gap(gap: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Two 20-voxel cubes side by side (x), separated by a membrane with a small hole."""
    labels = np.zeros((42, 20, 20), np.uint32)
    labels[:20], labels[22:] = 1, 2
    boundary = np.zeros(labels.shape, np.float32)
    boundary[20:22] = 1
    boundary[20:22, 9 : 9 + gap, 9 : 9 + gap] = 0  # the hole
    return labels, boundary


def test_threshold_seeds_merge_cells_through_a_gap_and_distance_seeds_do_not():
    labels, boundary = two_cells_with_a_gap()
    merged = watershed_fragments(boundary, WatershedParams(smoothing=0.0, seed_threshold=0.5))
    assert len(np.unique(merged)) == 1
    split = watershed_fragments(
        boundary,
        WatershedParams(smoothing=0.0, seed_threshold=0.5, seeds="distance", seed_radius=3.0),
    )
    assert evaluate(split, labels).voi_merge < 0.05
    assert not set(np.unique(split[:20])) & set(np.unique(split[22:]))  # no fragment spans both
