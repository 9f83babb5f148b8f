"""The patch grid and blending of `infer`: coverage, weights, and exactness for a trivial model."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.infer.patches import PatchGrid, axis_starts, fit_patch, predict_blended, taper


@given(st.integers(0, 50), st.integers(1, 300), st.integers(2, 64), st.data())
def test_axis_starts_cover_the_extent_with_the_overlap(start, extent, patch, data):
    overlap = data.draw(st.integers(0, patch - 1))
    starts = axis_starts(start, start + extent, patch, overlap)
    assert starts[0] == start and starts == sorted(set(starts))
    if extent <= patch:
        assert starts == [start]
        return
    assert starts[-1] + patch == start + extent
    for a, b in pairwise(starts):
        assert b - a <= patch - overlap  # neighbours overlap by at least `overlap`


def test_tapers_of_neighbours_sum_to_one_in_the_overlap():
    patch, overlap = 32, 8
    w = taper(patch, overlap)
    assert w.min() > 0 and w[overlap:-overlap].min() == 1
    stride = patch - overlap
    np.testing.assert_allclose(w[stride:] + w[: patch - stride], 1, atol=1e-6)


def test_fit_patch_clips_to_the_volume_rounded_to_the_divisor():
    assert fit_patch(Vec3(128, 128, 64), Vec3(200, 100, 37), Vec3(4, 4, 4)) == (128, 100, 40)
    assert fit_patch(Vec3(64, 64, 64), Vec3(30, 65, 64), Vec3(8, 8, 8)) == (32, 64, 64)


@st.composite
def grids(draw):
    shape = [draw(st.integers(3, 40)) for _ in range(3)]
    offset = [draw(st.integers(-5, 5)) for _ in range(3)]
    bounds = Box.from_shape(shape, offset)
    patch = Vec3(*(draw(st.integers(2, 24)) for _ in range(3)))
    overlap = Vec3(*(draw(st.integers(0, p - 1)) for p in patch))
    start = [draw(st.integers(b, e - 1)) for b, e in zip(bounds.start, bounds.stop)]
    stop = [draw(st.integers(s + 1, e)) for s, e in zip(start, bounds.stop)]
    return PatchGrid(bounds=bounds, patch=patch, overlap=overlap), Box(start, stop)


@settings(max_examples=60, deadline=None)
@given(grids(), st.integers(1, 3))
def test_blending_a_model_that_returns_its_input_returns_the_image(grid_box, batch):
    """Whatever the patches, overlaps, mirrored edges and batch, weights are normalised."""
    grid, box = grid_box
    rng = np.random.default_rng(0)
    data = rng.random(tuple(grid.bounds.shape), dtype=np.float32)
    read = grid.read_box(box)
    assert read.contains(box)
    cut = data[read.slices(grid.bounds.start)]
    out = predict_blended(grid, cut, read.start, box, 1, lambda x: x.copy(), batch)
    np.testing.assert_allclose(out[..., 0], data[box.slices(grid.bounds.start)], rtol=1e-5)


def test_touching_patches_cover_the_box_and_no_other_patch_does():
    grid = PatchGrid(
        bounds=Box.from_shape((100, 60, 30)), patch=Vec3(32, 32, 16), overlap=Vec3(8, 8, 4)
    )
    box = Box((40, 10, 5), (64, 20, 20))
    patches = grid.touching(box)
    covered = np.zeros(tuple(grid.bounds.shape), bool)
    for p in patches:
        assert not p.intersection(box).is_empty()
        covered[p.intersection(grid.bounds).slices()] = True
    assert covered[box.slices()].all()
    # order is fixed: z, then y, then x
    keys = [(p.start[2], p.start[1], p.start[0]) for p in patches]
    assert keys == sorted(keys)
