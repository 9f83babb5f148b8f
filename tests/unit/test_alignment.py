"""Alignment kernels: patch flow, meshes, the sparse solve, rendering, known misalignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from petavox.tasks.align.displacement import MeshGrid, SectionAffines, grid_points
from petavox.tasks.align.flow import FlowParams, PairFlow, estimate_pair
from petavox.tasks.align.render import SectionTransforms, box_fields, source_box, warp_box
from petavox.tasks.align.solve import Pair, SolveParams, solve_sections
from petavox.tasks.core.geometry import Box
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.tasks.synthetic.misalignment import Misalignment, random_misalignment, realigned


@pytest.fixture(scope="module")
def section() -> np.ndarray:
    return generate(SyntheticParams(shape=(192, 192, 3), seed=1)).raw[:, :, 1].astype(np.float32)


@pytest.mark.parametrize("shift", [(7.3, -12.6), (-25.5, 28.25), (0.0, 0.4)])
def test_flow_finds_a_known_shift_to_a_tenth_of_a_pixel(section, shift):
    moving = ndimage.shift(section, shift, order=3, cval=0.0)  # content moves by `shift`
    flow = estimate_pair(section, moving, FlowParams())
    ok = flow.confidence > 0.3
    assert ok.sum() >= 6
    assert np.abs(flow.displacement[ok] - shift).max() <= 0.15
    # patches that hold the zero band moved in from the edge are not trusted
    assert flow.confidence.min() == 0 or abs(shift[0]) < 1


def test_mesh_interpolation_is_exact_for_affine_fields():
    mesh = MeshGrid.covering((10, -5), (200, 120), 32)
    nodes_at = mesh.origin + mesh.spacing * np.stack(
        np.meshgrid(np.arange(mesh.shape[0]), np.arange(mesh.shape[1]), indexing="ij"), -1
    ).reshape(-1, 2)

    def field(p):
        return np.stack([0.01 * p[:, 0] - 0.02 * p[:, 1] + 3, 0.03 * p[:, 0] + 1], axis=1)

    points = np.random.default_rng(0).uniform(-20, 240, (200, 2))  # some beyond the mesh
    np.testing.assert_allclose(mesh.interpolate(field(nodes_at), points), field(points), atol=1e-9)
    _, weight = mesh.weights(points)
    np.testing.assert_allclose(weight.sum(axis=1), 1)


def simulated_pairs(
    truth: SectionTransforms, sections: int, rng, outliers: float, missing: int | None
) -> list[Pair]:
    """Flows that the true fields imply at raw positions of the reference, with noise."""
    grid = grid_points((16, 16), (240, 240), 32)
    pairs = []
    for z in range(1, sections):
        for back in (1, 2):
            if z - back < 0:
                continue
            aligned = grid.copy()  # p with p + u(p) = q, the raw position in the reference
            for _ in range(30):
                aligned = grid - truth.at(z - back, aligned)
            d = truth.at(z, aligned) - truth.at(z - back, aligned)
            d += rng.normal(0, 0.05, d.shape)
            bad = rng.random(len(d)) < outliers
            d[bad] += rng.uniform(-20, 20, (bad.sum(), 2))
            conf = np.full(len(d), 0.8)
            if missing in (z, z - back):
                conf[:] = 0.0  # a damaged section: nothing matches it
            pairs.append(
                Pair(
                    moving=z,
                    reference=z - back,
                    flow=PairFlow(points=grid.copy(), displacement=d, confidence=conf),
                )
            )
    return pairs


def smooth_truth(sections: int, rng) -> SectionTransforms:
    """Translations in ±30 px, rotations in ±2°, scales in ±1 % and, per section, a smooth warp
    of a few pixels on a mesh."""
    mesh = MeshGrid.covering((-64, -64), (320, 320), 64)
    ix, iy = np.meshgrid(np.arange(mesh.shape[0]), np.arange(mesh.shape[1]), indexing="ij")
    pos = mesh.origin + mesh.spacing * np.stack([ix.ravel(), iy.ravel()], axis=1)
    phase = rng.uniform(0, 2 * np.pi, (sections, 2))
    warp = np.stack(
        [
            np.outer(np.sin(pos[:, 0] / 80 + phase[z, 0]), [3.0, 1.5])
            + np.outer(np.cos(pos[:, 1] / 90 + phase[z, 1]), [0.6, 2.0])
            for z in range(sections)
        ]
    )
    angle = np.deg2rad(rng.uniform(-2, 2, sections))
    scale = rng.uniform(-0.01, 0.01, sections)
    matrices = np.zeros((sections, 2, 3))
    matrices[:, 0, 0] = matrices[:, 1, 1] = np.cos(angle) - 1 + scale
    matrices[:, 0, 1], matrices[:, 1, 0] = -np.sin(angle), np.sin(angle)
    matrices[:, :, :2] *= 128  # SectionAffines' pixel units: half the 256-px section
    matrices[:, :, 2] = rng.uniform(-30, 30, (sections, 2))
    return SectionTransforms(0, SectionAffines((128.0, 128.0), 128.0, matrices), warp, mesh)


@pytest.mark.parametrize(("outliers", "missing", "limit"), [(0.0, None, 0.5), (0.1, 17, 0.75)])
def test_solve_recovers_translations_and_warps(outliers, missing, limit):
    """Pairwise flows implied by known fields (affine + warp, + noise, + 20-px outliers, + a
    section that matches nothing) give back the fields, up to what no alignment can see: a
    deformation common to all sections. The truth's translations are random, not smooth along
    z, so here every motion is undone (`drift_window` None; see test_drift.py)."""
    rng = np.random.default_rng(2)
    sections = 40
    truth = smooth_truth(sections, rng)
    pairs = simulated_pairs(truth, sections, rng, outliers=outliers, missing=missing)
    params = SolveParams(drift_window=None)
    found = SectionTransforms(0, *solve_sections(pairs, sections, (0, 0), (256, 256), params))
    points = grid_points((20, 20), (230, 230), 15)
    diff = np.stack(
        [found.at(z, points) - truth.at(z, points) for z in range(sections) if z != missing]
    )
    diff -= diff.mean(axis=0)
    assert np.sqrt((diff**2).sum(-1).mean()) <= limit


def test_rendering_does_not_depend_on_the_box_and_undoes_a_shift():
    rng = np.random.default_rng(3)
    raw = rng.integers(1, 255, (70, 60, 4), dtype=np.uint8)
    mesh = MeshGrid.covering((0, 0), (70, 60), 20)
    nodes = rng.normal(0, 1.0, (4, mesh.size, 2))
    matrices = rng.normal(0, 0.5, (4, 2, 3))
    matrices[:, :, 2] = [[3.0, -2.0], [0.5, 0.25], [-7, 4], [0, 0]]
    transforms = SectionTransforms(0, SectionAffines((35.0, 30.0), 35.0, matrices), nodes, mesh)
    volume = Box((0, 0, 0), raw.shape)

    def render(box: Box) -> np.ndarray:
        fields = box_fields(transforms, box)
        read = source_box(fields, box, volume)
        return warp_box(fields, raw[read.slices()], read, box)

    whole = render(volume)
    pieces = np.zeros_like(whole)
    for x0, y0, z0 in itertools.product(range(0, 70, 24), range(0, 60, 32), range(0, 4, 3)):
        box = Box((x0, y0, z0), (min(x0 + 24, 70), min(y0 + 32, 60), min(z0 + 3, 4)))
        pieces[box.slices()] = render(box)
    np.testing.assert_array_equal(pieces, whole)
    # a pure integer translation moves the content back exactly
    affines = SectionAffines.translations((0.0, 0.0), 1.0, np.array([[5.0, -3.0]] * 4))
    shift = SectionTransforms(0, affines, np.zeros((4, mesh.size, 2)), mesh)
    fields = box_fields(shift, volume)
    read = source_box(fields, volume, volume)
    out = warp_box(fields, raw[read.slices()], read, volume)
    np.testing.assert_array_equal(out[10:60, 10:50], raw[15:65, 7:47])


def test_known_misalignment_inverts_its_warp():
    mis = random_misalignment(3, max_shift=20, warp=5, seed=4)
    points = np.random.default_rng(5).uniform(0, 256, (100, 2))
    for z in range(3):
        u = mis.alignment(z, points)
        np.testing.assert_allclose(mis.forward(z, points + u), u, atol=1e-6)
        assert np.abs(u - mis.shifts[z]).max() <= 5.0 + 1e-9


def test_a_realigned_stack_has_its_content_back_off_by_the_error_with_black_margins():
    def shifts(*per_section: tuple[float, float]) -> Misalignment:
        table = np.asarray(per_section, np.float64)
        return Misalignment(
            shifts=table,
            waves=np.zeros((len(table), 1, 2, 4)),
            rotations=np.zeros(len(table)),
            centre=(0.0, 0.0),
        )

    rng = np.random.default_rng(2)
    stack = rng.integers(1, 255, (40, 30, 2), dtype=np.uint8)
    labels = rng.integers(1, 9, (40, 30, 2)).astype(np.uint32)
    known, error = shifts((3, -2), (-5, 4)), shifts((0, 0), (1, 0))
    for data, as_labels in ((stack, False), (labels, True)):
        out = realigned(data, known, error, as_labels)
        # section 0: content back in place; its content shifted 3 px out at x's end and 2 px
        # at y's start is gone
        np.testing.assert_array_equal(out[:37, 2:, 0], data[:37, 2:, 0])
        assert not out[37:, :, 0].any() and not out[:, :2, 0].any()
        # section 1: one pixel off in x (the error), margins where the shift took content out
        np.testing.assert_array_equal(out[5:39, :26, 1], data[6:40, :26, 1])
        assert not out[:4, :, 1].any() and not out[:, 26:, 1].any()


def test_known_rotation_turns_the_content_about_the_centre():
    mis = random_misalignment(2, max_shift=0, rotation=5, centre=(100.0, 60.0), seed=8)
    for z in range(2):
        angle = mis.rotations[z]
        assert 0 < abs(np.rad2deg(angle)) <= 5
        raw = np.array([[100.0 + 40 * np.cos(a), 60.0 + 40 * np.sin(a)] for a in (0.3, 2.0)])
        content = raw - mis.forward(z, raw)  # where each raw pixel's content sits, aligned
        turned = [np.arctan2(*(c - (100, 60))[::-1]) for c in content]
        np.testing.assert_allclose(turned, np.array([0.3, 2.0]) - angle, atol=1e-9)
        np.testing.assert_allclose(np.linalg.norm(content - (100, 60), axis=1), 40, atol=1e-9)


def test_shifts_of_a_real_section_are_found_without_bias(neuroproof_stack):
    """A real FIB-SEM section against itself moved by known shifts (bicubic, black outside):
    every patch within 0.15 px, their median within 0.1 px (measured: ≤ 0.07 px). Unwindowed
    patches cut at the coarse shift were pulled 0.4-0.5 px per pixel of offset towards no shift
    (here: patches off by up to 1.8 px, medians by 0.15-0.27 px)."""
    section = neuroproof_stack[:, :, 60].astype(np.float32)
    rng = np.random.default_rng(4)
    for _ in range(4):
        a, b = rng.uniform(-15, 15, (2, 2))
        ref = np.clip(np.rint(ndimage.shift(section, a, order=3, cval=0.0)), 0, 255)
        moving = np.clip(np.rint(ndimage.shift(section, b, order=3, cval=0.0)), 0, 255)
        flow = estimate_pair(ref, moving, FlowParams())
        ok = flow.confidence >= 0.2
        assert ok.sum() >= 9
        error = flow.displacement[ok] - (b - a)
        assert np.abs(error).max() <= 0.15
        assert np.abs(np.median(error, axis=0)).max() <= 0.1
