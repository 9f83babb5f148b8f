"""Misalignment apart from content motion (`tasks/align/drift.py`): the smoother, the choice of
its window, and a solve that undoes independent shifts but keeps a smooth motion."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.align.drift import choose_window, smooth_part, trend_weight
from petavox.tasks.align.flow import PairFlow
from petavox.tasks.align.solve import Pair, SolveParams, solve_sections


def test_a_straight_line_is_all_smooth():
    z = np.arange(80, dtype=np.float64)
    line = np.stack([0.3 * z - 4, -0.1 * z + 2], axis=1)
    for window in (12.0, 200.0, 2500.0):
        np.testing.assert_allclose(smooth_part(line, window), line, atol=1e-4)
    two = np.array([[0.0, 1.0], [5.0, -3.0]])
    np.testing.assert_array_equal(smooth_part(two, 10.0), two)  # no smooth/jitter split of 2


def test_the_window_follows_what_the_series_holds():
    rng = np.random.default_rng(0)
    z = np.arange(600, dtype=np.float64)
    jitter = rng.uniform(-10, 10, (600, 2))
    assert choose_window(jitter) >= 1000  # nothing smooth to keep: a long window
    curve = np.stack([20 * np.sin(z / 100), 15 * np.cos(z / 120)], axis=1)  # periods 628, 754
    series = curve + rng.normal(0, 0.3, (600, 2))
    window = choose_window(series)
    assert window <= 300  # a curve to follow: a short window
    error = smooth_part(series, window) - curve
    assert np.sqrt((error**2).sum(axis=1).mean()) <= 0.75  # of a curve swinging ±20 px


def test_a_trend_through_few_noisy_sections_is_mostly_not_kept():
    rng = np.random.default_rng(1)
    short = rng.uniform(-30, 30, (24, 2))
    assert trend_weight(short, np.zeros_like(short)) < 0.5
    trend = np.repeat(0.2 * np.arange(400.0)[:, None], 2, axis=1)
    assert trend_weight(rng.uniform(-3, 3, (400, 2)) + trend, trend) > 0.95


def translation_pairs(truth: np.ndarray, rng) -> list[Pair]:
    """Flows of pure translations `truth` (sections, 2), z against z−1 and z−2, with noise."""
    points = np.stack(np.meshgrid(np.arange(32, 224, 32.0), np.arange(32, 224, 32.0)), -1)
    points = points.reshape(-1, 2)
    pairs = []
    for z in range(1, len(truth)):
        for back in (1, 2):
            if z - back >= 0:
                d = np.tile(truth[z] - truth[z - back], (len(points), 1))
                d += rng.normal(0, 0.05, d.shape)
                flow = PairFlow(points=points, displacement=d, confidence=np.full(len(d), 0.9))
                pairs.append(Pair(moving=z, reference=z - back, flow=flow))
    return pairs


@pytest.mark.parametrize("window", ["auto", None])
def test_independent_shifts_are_undone_and_smooth_motion_kept(window):
    """The matches see shift + content motion; the solve with `drift_window` auto returns the
    shifts (within what a straight line through them hides), with None both."""
    rng = np.random.default_rng(3)
    n = 300
    z = np.arange(n, dtype=np.float64)
    shifts = rng.uniform(-5, 5, (n, 2))
    content = np.stack([0.25 * z + 6 * np.sin(z / 80), -0.1 * z + 4 * np.cos(z / 100)], axis=1)
    params = SolveParams(drift_window=window)
    solved = solve_sections(translation_pairs(shifts + content, rng), n, (0, 0), (256, 256), params)
    found = solved[0].matrices[:, :, 2]

    def rms(error: np.ndarray) -> float:
        error = error - np.median(error, axis=0)
        return float(np.sqrt((error**2).sum(axis=1).mean()))

    if window is None:
        assert rms(found - shifts - content) <= 1.0  # every motion undone: straightened
        assert rms(found - shifts) > 20
    else:
        assert rms(found - shifts) <= 1.0  # the content's motion is left in place
