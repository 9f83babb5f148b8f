"""Montage shading, seams and rendering on tiles cut from a real FIB-SEM section."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.align.displacement import grid_points
from petavox.tasks.montage.flatfield import Shading, estimate_shading, seam_steps
from petavox.tasks.montage.tile_matches import MatchParams, match_tiles
from petavox.tasks.montage.tile_render import (
    CubicSampler,
    coarse_inverse,
    feather,
    render_box,
    tile_pixels,
)
from petavox.tasks.montage.tile_solve import solve_tiles
from petavox.tasks.montage.tile_transforms import Lens, TileTransform, tile_mesh
from petavox.tasks.synthetic.tiles import TileDamage, cut_tiles


@pytest.fixture(scope="module")
def solved(neuroproof_stack):
    """Tiles with a tile gain of their own each (±5 %), matched and solved."""
    cut = cut_tiles(neuroproof_stack[:, :, 100], TileDamage(seed=11))
    gains = np.random.default_rng(0).uniform(-0.05, 0.05, len(cut.tiles))
    gains -= gains.mean()
    tiles = [
        np.clip(np.rint(t * np.exp(g)), 0, 255).astype(np.uint8) for t, g in zip(cut.tiles, gains)
    ]
    matches = match_tiles(tiles, cut.stage, MatchParams())
    transforms = solve_tiles(matches, cut.stage, tiles[0].shape)
    pairs = [(m.first, m.second) for m in matches if len(m.confidence)]
    return cut, tiles, gains, transforms, pairs


def rendered_in_pieces(images, transforms, start, size, step) -> np.ndarray:
    """The box at `start` of `size` rendered `step`-sized piece by piece."""
    out = np.zeros(size, np.float32)
    for x in range(0, size[0], step[0]):
        for y in range(0, size[1], step[1]):
            shape = (min(step[0], size[0] - x), min(step[1], size[1] - y))
            out[x : x + shape[0], y : y + shape[1]] = render_box(
                images, transforms, (start[0] + x, start[1] + y), shape
            )
    return out


def test_shading_and_tile_gains_are_recovered(solved):
    cut, tiles, gains, transforms, pairs = solved
    shading = estimate_shading(tiles, transforms, pairs)
    truth = np.log(cut.shading)
    truth -= truth.mean()
    error = shading.log_image - truth
    assert np.sqrt((error**2).mean()) < 0.1 * (truth.max() - truth.min())
    # a ramp of gains across the grid looks exactly like a linear shading term (both change
    # every overlap's brightness ratio by the same amount): only the rest is observable
    error = shading.gains - gains
    grid = np.column_stack([np.arange(9) % 3, np.arange(9) // 3, np.ones(9)])
    ramp = grid @ np.linalg.lstsq(grid, error, rcond=None)[0]
    assert np.abs(error - ramp).max() < 0.01
    assert np.abs(gains - grid @ np.linalg.lstsq(grid, gains, rcond=None)[0]).max() > 0.02


def test_seams_are_below_the_noise_only_once_the_shading_is_divided_out(solved):
    """A seam's step (mean brightness difference of two tiles over their overlap) against the
    pixel noise there: every seam below it after the flat-field, and without it the
    vignetting's steps stand out."""
    _cut, tiles, _, transforms, pairs = solved
    shading = estimate_shading(tiles, transforms, pairs)
    corrected = seam_steps([shading.correct(t, k) for k, t in enumerate(tiles)], transforms, pairs)
    assert len(corrected) == len(pairs)
    assert all(s["step"] <= s["noise"] for s in corrected)
    plain = Shading.none(tiles[0].shape, len(tiles))
    raw = seam_steps([plain.correct(t, k) for k, t in enumerate(tiles)], transforms, pairs)
    assert max(s["step"] / s["noise"] for s in raw) > 2


def test_rendering_does_not_depend_on_the_box(solved):
    _cut, tiles, _, transforms, _pairs = solved
    images = [CubicSampler(t.astype(np.float32)) for t in tiles]
    whole = render_box(images, transforms, (-8, -8), (260, 250))
    for step in ((64, 64), (100, 37)):
        pieces = rendered_in_pieces(images, transforms, (-8, -8), (260, 250), step)
        np.testing.assert_array_equal(pieces, whole)
    assert (whole > 0).mean() > 0.8


def test_the_rendered_section_is_the_original(solved, neuroproof_stack):
    """Rendered at the truth's transforms from the shading-corrected tiles, the section is the
    original (up to the tiles' noise and one brightness scale): the renderer's own error."""
    cut, tiles, _, transforms, pairs = solved
    shading = estimate_shading(tiles, transforms, pairs)
    images = [CubicSampler(shading.correct(t, k)) for k, t in enumerate(tiles)]
    original = neuroproof_stack[:, :, 100].astype(np.float64)
    rendered = render_box(images, cut.truth, (0, 0), original.shape).astype(np.float64)
    inner = rendered > 0
    inner[:12], inner[-12:], inner[:, :12], inner[:, -12:] = False, False, False, False
    assert np.corrcoef(rendered[inner], original[inner])[0, 1] > 0.97


def test_inverse_undoes_forward_with_lens_and_mesh():
    lens = Lens((90, 70), 2.0)
    mesh = tile_mesh(lens.shape, 32)
    nodes = np.random.default_rng(1).normal(0, 0.8, (mesh.size, 2))
    angle = np.deg2rad(0.8)
    matrix = 1.004 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    transform = TileTransform(lens, matrix, np.array([30.0, -12.0]), mesh, nodes)
    points = np.random.default_rng(2).uniform(0, 89, (200, 2))
    np.testing.assert_allclose(transform.inverse(transform.forward(points)), points, atol=1e-6)
    again = TileTransform.from_json(lens, transform.to_json())
    np.testing.assert_allclose(again.forward(points), transform.forward(points))


def _warped_tiles() -> list[TileTransform]:
    """Two overlapping tiles with the lens, a rotation, a scale and a rough mesh each."""
    lens = Lens((150, 130), 2.0)
    mesh = tile_mesh(lens.shape, 32)
    rng = np.random.default_rng(3)
    out = []
    for degrees, offset in ((0.9, (-20.0, -15.0)), (-1.1, (95.0, 4.0))):
        angle = np.deg2rad(degrees)
        c, s = np.cos(angle), np.sin(angle)
        matrix = 1.003 * np.array([[c, -s], [s, c]])
        nodes = rng.normal(0, 0.5, (mesh.size, 2))
        out.append(TileTransform(lens, matrix, np.array(offset), mesh, nodes))
    return out


def test_render_inverse_is_the_exact_inverse_with_lens_rotation_and_mesh():
    """The render's inverse (exact only every GRID_STEP px, interpolated between, then Newton
    steps) lands within 0.01 px of `TileTransform.inverse` on every pixel of the tile, a mesh's
    kinks included; and its elementwise forward is `forward`."""
    for transform in _warped_tiles():
        lo, hi = transform.footprint()
        start, stop = np.floor(lo).astype(int) - 7, np.ceil(hi).astype(int) + 5
        x, y = tile_pixels(transform, start, stop)
        exact = transform.inverse(grid_points(tuple(start), tuple(stop)))
        guess = np.column_stack([c.ravel() for c in coarse_inverse(transform, start, stop)])
        near = feather(exact[:, 0], exact[:, 1], transform.lens.shape) > -2
        assert near.sum() > 150 * 130
        error = np.hypot(x.ravel() - exact[:, 0], y.ravel() - exact[:, 1])[near]
        assert error.max() < 0.01
        assert np.abs(guess - exact)[near].max() > 0.05  # the Newton steps are needed
        points = exact[near]
        landed = np.column_stack(transform.landing(points[:, 0], points[:, 1]))
        np.testing.assert_allclose(landed, transform.forward(points), atol=1e-9)


def test_render_of_warped_tiles_does_not_depend_on_the_box():
    transforms = _warped_tiles()
    rng = np.random.default_rng(4)
    images = [CubicSampler(rng.uniform(0, 255, (150, 130)).astype(np.float32)) for _ in range(2)]
    whole = render_box(images, transforms, (-30, -21), (281, 160))
    for step in ((37, 23), (64, 71), (16, 16)):
        pieces = rendered_in_pieces(images, transforms, (-30, -21), (281, 160), step)
        np.testing.assert_array_equal(pieces, whole)
    assert (whole > 0).mean() > 0.7
