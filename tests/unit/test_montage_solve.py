"""Montage matching and solve on tiles cut from real FIB-SEM sections with known transforms.

The tiles (`tasks/synthetic/tiles.py`): a 3×3 grid with 15-25 % overlap, stage positions off
by up to ±20 px, each tile rotated up to ±1° and scaled up to ±0.5 %, a radial lens distortion
of 1.5 px at the tile corners, vignetting and a scan gradient, fresh noise. The residual is
plain: where the montage puts each tile pixel against where it truly is, only the mean offset
removed.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from petavox.tasks.montage.montage_quality import section_report
from petavox.tasks.montage.tile_matches import MatchParams, match_tiles
from petavox.tasks.montage.tile_solve import TileSolveParams, montage_tiles, solve_tiles
from petavox.tasks.synthetic.tiles import (
    TileDamage,
    cut_tiles,
    mosaic_section,
    placement_residuals,
)

CASES = [(30, 0.15, 1), (100, 0.2, 2), (200, 0.25, 3)]  # section, overlap, seed


def rms(values: np.ndarray) -> float:
    return float(np.sqrt((values**2).mean()))


@pytest.fixture(scope="module", params=CASES, ids=[f"z{c[0]}-overlap{c[1]}" for c in CASES])
def real_cut(request, neuroproof_stack):
    """A cut, its first matches and the montage's (refined) matches and transforms."""
    z, overlap, seed = request.param
    cut = cut_tiles(neuroproof_stack[:, :, z], TileDamage(overlap=overlap, seed=seed))
    first = match_tiles(cut.tiles, cut.stage, MatchParams())
    return cut, first, *montage_tiles(cut.tiles, cut.stage, MatchParams(), TileSolveParams())


def test_real_tiles_are_placed_within_half_a_pixel(real_cut):
    cut, _, _, found = real_cut
    assert rms(placement_residuals(found, cut.truth)) <= 0.5
    assert abs(found[0].lens.kappa - cut.truth[0].lens.kappa) < 0.3  # the lens, recovered


def match_errors(cut, matches) -> np.ndarray:
    """How far apart each matched point pair truly is (px)."""
    return np.concatenate(
        [
            np.linalg.norm(
                cut.truth[m.first].forward(m.first_points)
                - cut.truth[m.second].forward(m.second_points),
                axis=1,
            )
            for m in matches
            if len(m.confidence)
        ]
    )


def test_matches_measured_again_through_the_solution_are_truer(real_cut):
    """Near corners the two views of a seam patch differ by more than a shift (rotation,
    lens): measured again with the patch warped by the solution, the matches get closer to
    the truth."""
    cut, first, refined, _ = real_cut
    before, after = match_errors(cut, first), match_errors(cut, refined)
    assert len(before) == len(after)
    assert rms(after) < 0.8 * rms(before)


def test_exact_matches_give_the_exact_tiles(neuroproof_stack):
    """The solve itself adds no error: each matched point moved to where its content truly is
    in the second tile, the tiles come out where they are (a shear free per tile let the solve
    trade rotation for it here: 0.20-0.29 px)."""
    for z, overlap, seed in CASES:
        cut = cut_tiles(neuroproof_stack[:, :, z], TileDamage(overlap=overlap, seed=seed))
        exact = [
            dataclasses.replace(
                m,
                second_points=cut.truth[m.second].inverse(
                    cut.truth[m.first].forward(m.first_points)
                ),
            )
            for m in match_tiles(cut.tiles, cut.stage, MatchParams())
        ]
        found = solve_tiles(exact, cut.stage, cut.tiles[0].shape)
        assert rms(placement_residuals(found, cut.truth)) < 0.05


def test_without_the_lens_model_the_placement_misses(real_cut):
    """The lens is what the affine alone cannot take up: the same matches, solved without it,
    leave the tiles further from the truth than the bar."""
    cut, _, matches, _ = real_cut
    shape = cut.tiles[0].shape
    full = rms(placement_residuals(solve_tiles(matches, cut.stage, shape), cut.truth))
    plain = TileSolveParams(lens=False, mesh_spacing=0)
    without = rms(placement_residuals(solve_tiles(matches, cut.stage, shape, plain), cut.truth))
    assert without > 0.5 and without > 2 * full


def true_neighbours(cut, min_overlap: int) -> set[tuple[int, int]]:
    """Pairs whose true footprints overlap by `min_overlap` px both ways."""
    boxes = [t.footprint() for t in cut.truth]
    out = set()
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            lo = np.maximum(boxes[i][0], boxes[j][0])
            hi = np.minimum(boxes[i][1], boxes[j][1])
            if ((hi - lo) >= min_overlap).all():
                out.add((i, j))
    return out


def side_neighbours(columns: int, rows: int) -> set[tuple[int, int]]:
    """Pairs of the grid that share a seam (not only a corner)."""
    ids = np.arange(columns * rows).reshape(rows, columns)
    right = zip(ids[:, :-1].ravel(), ids[:, 1:].ravel())
    below = zip(ids[:-1].ravel(), ids[1:].ravel())
    return {(int(a), int(b)) for a, b in [*right, *below]}


def test_every_seam_is_matched_and_no_pair_that_does_not_overlap(real_cut):
    """Stage errors of ±20 px make non-neighbours look close and neighbours far: every pair
    sharing a seam is matched, no pair that does not truly overlap is. (Corner pairs may go
    unmatched: at 15 % overlap they share 14×14 px, where the lens moves the two views 3 px
    apart.)"""
    cut, matches, _, _ = real_cut
    matched = {(m.first, m.second) for m in matches if len(m.confidence)}
    assert side_neighbours(*cut.grid) <= matched <= true_neighbours(cut, 1)


def test_a_blank_tile_stays_at_its_stage_position_and_is_flagged(neuroproof_stack):
    cut = cut_tiles(neuroproof_stack[:, :, 60], TileDamage(seed=7))
    tiles = list(cut.tiles)
    tiles[4] = np.full_like(tiles[4], 128)  # the middle tile: nothing to match
    matches = match_tiles(tiles, cut.stage, MatchParams())
    assert not any(len(m.confidence) for m in matches if 4 in (m.first, m.second))
    found = solve_tiles(matches, cut.stage, tiles[0].shape)
    np.testing.assert_allclose(found[4].forward(np.zeros((1, 2)))[0], cut.stage[4], atol=1e-6)
    np.testing.assert_allclose(found[4].matrix, np.eye(2), atol=1e-6)  # no rotation or scale
    urls = [f"t{k}" for k in range(9)]
    report = section_report(0, urls, cut.stage, matches, found, 50.0, [])
    assert report["summary"]["flagged"] == {"4": ["disconnected"]}
    others = [k for k in range(9) if k != 4]
    assert (
        rms(placement_residuals([found[k] for k in others], [cut.truth[k] for k in others])) <= 0.5
    )


def test_long_seams_of_rotated_tiles_are_matched_true_at_once(neuroproof_stack):
    """640 px tiles rotated up to ±1°: along a seam the content drifts by up to 11 px, more
    than a 32 px patch sees. The coarse offset (correlated part by part) and the patches'
    guide (long patches first, their affine) make the first matches true: without the guide
    this solve was 2.7 px off."""
    damage = TileDamage(overlap=0.1, seed=1, margin=8)
    cut = cut_tiles(mosaic_section(neuroproof_stack, int(640 * 2.8) + 18), damage)
    assert cut.tiles[0].shape == (640, 640)
    matches = match_tiles(cut.tiles, cut.stage, MatchParams())
    assert len(matches) == 20 and all(len(m.confidence) for m in matches)
    assert np.median(match_errors(cut, matches)) < 0.2
    found = solve_tiles(matches, cut.stage, cut.tiles[0].shape)
    assert rms(placement_residuals(found, cut.truth)) <= 0.5
