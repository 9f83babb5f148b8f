"""The flat-field's overlap sampling: restricted to the box two tiles can share, capped per pair,
smoothed only around the samples, and all of it as the whole-tile computation would give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from petavox.tasks.montage import flatfield
from petavox.tasks.montage.flatfield import (
    EDGE_PX,
    SAMPLE_STEP,
    SMOOTH_SIGMA,
    Shading,
    estimate_shading,
    overlap_points,
    overlap_samples,
    seam_steps,
    smoothed_log,
)
from petavox.tasks.montage.tile_transforms import Lens, TileTransform, tile_mesh
from petavox.tasks.synthetic.tiles import TileDamage, cut_tiles

SHAPE = (120, 100)


def whole_tile_points(shape, first, second, step=SAMPLE_STEP):
    """The grid over the whole of `first` every `step` px, kept where it lands in `second`."""
    lo, hi = EDGE_PX, np.asarray(shape) - 1 - EDGE_PX
    xs, ys = (np.arange(lo, h + 1, step, dtype=np.float64) for h in hi)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    there = second.inverse(first.forward(grid))
    inside = np.all((there >= lo) & (there <= hi), axis=1)
    return grid[inside], there[inside]


def placed(offset, degrees, scale, seed) -> TileTransform:
    """A tile with a strong lens, its own rotation and scale, and a bent mesh."""
    lens = Lens(SHAPE, 3.0)
    mesh = tile_mesh(SHAPE, 32)
    nodes = np.random.default_rng(seed).normal(0, 1.0, (mesh.size, 2))
    a = np.deg2rad(degrees)
    matrix = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return TileTransform(lens, matrix, np.asarray(offset, np.float64), mesh, nodes)


FIRST = placed((0, 0), 2.0, 1.0, 0)
SECONDS = {
    "beside": placed((95, 6), -3.0, 1.01, 1),
    "below": placed((-4, 82), 1.0, 0.99, 2),
    "corner": placed((104, 88), -2.0, 1.0, 3),
    "left and above": placed((-100, -85), 3.0, 1.0, 4),
    "on top": placed((9, -5), -1.0, 1.0, 5),
    "apart": placed((300, 0), 0.0, 1.0, 6),
}


def same_points(found, expected):
    order = [np.lexsort(p[0].T) for p in (found, expected)]
    assert len(found[0]) == len(expected[0])
    for a, b in zip(found, expected):
        np.testing.assert_allclose(a[order[0]], b[order[1]], atol=1e-9)


@pytest.mark.parametrize("name", list(SECONDS))
def test_the_overlap_bounds_lose_no_overlap_pixel(name):
    second = SECONDS[name]
    expected = whole_tile_points(SHAPE, FIRST, second)
    same_points(overlap_points(SHAPE, FIRST, second, None), expected)
    same_points(overlap_points(SHAPE, second, FIRST, None), whole_tile_points(SHAPE, second, FIRST))
    if name == "apart":
        assert len(expected[0]) == 0
    else:
        assert len(expected[0]) > 20


@pytest.mark.parametrize("name", ["beside", "on top"])
def test_a_capped_pair_is_the_whole_tile_grid_at_a_coarser_step(name):
    second = SECONDS[name]
    dense = overlap_points(SHAPE, FIRST, second, None)
    p_i, p_j, weight = overlap_samples(SHAPE, FIRST, second, 300)
    step = round(SAMPLE_STEP * np.sqrt(weight))
    assert step > SAMPLE_STEP
    assert len(p_i) <= 1.2 * 300
    same_points((p_i, p_j), whole_tile_points(SHAPE, FIRST, second, step))
    # each sample stands for `weight` samples of the dense grid
    assert abs(len(p_i) * weight / len(dense[0]) - 1) < 0.15


def test_smoothing_a_crop_is_smoothing_the_whole_tile():
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (90, 70)).astype(np.uint8)
    whole = np.log1p(ndimage.gaussian_filter(tile.astype(np.float64), SMOOTH_SIGMA))
    for low, high in (((0, 0), (89, 69)), ((2, 40), (20, 67)), ((30, 10), (50, 25))):
        points = rng.uniform(low, high, (200, 2))
        expected = ndimage.map_coordinates(whole, points.T, order=1)
        np.testing.assert_allclose(smoothed_log(tile, points), expected, rtol=1e-12)


def test_the_shading_image_is_its_polynomial():
    shading = Shading((7, 5), 3, np.random.default_rng(0).normal(0, 0.1, 9), np.zeros(2))
    gx, gy = np.meshgrid(np.arange(7.0), np.arange(5.0), indexing="ij")
    points = np.column_stack([gx.ravel(), gy.ravel()])
    values = flatfield._basis(points, (7, 5), 3) @ shading.coefficients
    np.testing.assert_allclose(shading.log_image.ravel(), values - values.mean(), atol=1e-12)


@pytest.fixture(scope="module")
def small_cut(neuroproof_stack):
    return cut_tiles(neuroproof_stack[:, :, 100], TileDamage(overlap=0.2, seed=2))


def test_small_tiles_are_sampled_in_full_and_coarser_samples_fit_the_same(small_cut, monkeypatch):
    tiles, truth = small_cut.tiles, small_cut.truth
    pairs = [(a, b) for a in range(9) for b in range(a + 1, 9)]
    found = estimate_shading(tiles, truth, pairs)
    seams = seam_steps([t.astype(np.float32) for t in tiles], truth, pairs)
    monkeypatch.setattr(flatfield, "MAX_SAMPLES", None)
    dense = estimate_shading(tiles, truth, pairs)
    np.testing.assert_array_equal(found.coefficients, dense.coefficients)
    assert seams == seam_steps([t.astype(np.float32) for t in tiles], truth, pairs)
    monkeypatch.setattr(flatfield, "MAX_SAMPLES", 150)
    coarse = estimate_shading(tiles, truth, pairs)
    for k in range(len(tiles)):
        ratio = np.exp(coarse.log_image + coarse.gains[k] - dense.log_image - dense.gains[k])
        assert np.abs(ratio - 1).max() < 0.01
    coarse_seams = seam_steps([t.astype(np.float32) for t in tiles], truth, pairs)
    assert [s["tiles"] for s in coarse_seams] == [s["tiles"] for s in seams]
    for a, b in zip(coarse_seams, seams):
        count = len(overlap_points(tiles[0].shape, *(truth[k] for k in a["tiles"]), 150)[0])
        assert abs(a["step"] - b["step"]) < 4 * np.sqrt(2) * b["noise"] / np.sqrt(count)
        assert abs(a["noise"] / b["noise"] - 1) < 0.25
