"""The alignment quality report: per-section matches, residuals and flags, and its picture."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from petavox.tasks.align.flow import PairFlow
from petavox.tasks.align.quality import alignment_report
from petavox.tasks.align.render import SectionTransforms
from petavox.tasks.align.report_plot import report_png
from petavox.tasks.align.solve import Pair, SolveParams, solve_motion
from petavox.tasks.core.geometry import Box

SECTIONS = 12
POINTS = np.stack(np.meshgrid(np.arange(32, 224, 32.0), np.arange(32, 224, 32.0)), -1).reshape(
    -1, 2
)


def pairs_of(shifts: np.ndarray, blank: int, scrambled: int, rng) -> list[Pair]:
    """Translation flows (z against z−1 and z−2); section `blank` matches nothing, and half the
    patches of section `scrambled` are 6 px off against every neighbour (a fold: they still
    match, somewhere else)."""
    pairs = []
    for z in range(1, SECTIONS):
        for back in (1, 2):
            if z - back < 0:
                continue
            d = np.tile(shifts[z] - shifts[z - back], (len(POINTS), 1))
            d += rng.normal(0, 0.05, d.shape)
            conf = np.full(len(d), 0.9)
            if blank in (z, z - back):
                conf[:] = 0.0
            if scrambled in (z, z - back):
                d[::2] += 6.0 if z == scrambled else -6.0
            flow = PairFlow(points=POINTS.copy(), displacement=d, confidence=conf)
            pairs.append(Pair(moving=z, reference=z - back, flow=flow))
    return pairs


def report_of(blank: int = 4, scrambled: int = 8) -> dict:
    rng = np.random.default_rng(0)
    shifts = rng.uniform(-10, 10, (SECTIONS, 2))
    pairs = pairs_of(shifts, blank, scrambled, rng)
    params = SolveParams(drift_window=None)
    affines, nodes, mesh = solve_motion(pairs, SECTIONS, (0, 0), (256, 256), params)
    solved = SectionTransforms(100, affines, nodes, mesh)
    volume = Box((0, 0, 100), (256, 256, 100 + SECTIONS))
    return alignment_report(pairs, solved, solved, volume, params, None)


def test_a_blank_section_is_weak_and_bridged_and_a_fold_has_a_large_residual():
    report = report_of()
    rows = {row["z"]: row for row in report["per_section"]}
    assert sorted(rows) == list(range(100, 100 + SECTIONS))
    assert report["summary"]["flagged"] == {"104": ["weak", "bridged"], "108": ["large residual"]}
    assert rows[104]["matched"] == 0.0 and rows[104]["residual_px"] is None
    assert rows[103]["matched"] == 1.0 and rows[103]["residual_px"] < 0.2
    assert rows[108]["residual_px"] > 2.0
    assert report["summary"]["residual_median_px"] < 0.2
    assert rows[105]["content_motion_px"] == [0.0, 0.0]  # nothing kept when drift_window is None


def test_a_section_at_the_end_with_nothing_beyond_it_is_weak_but_not_bridged():
    report = report_of(blank=SECTIONS - 1)
    assert report["summary"]["flagged"][str(100 + SECTIONS - 1)] == ["weak"]


def test_the_picture_is_a_png_of_every_section():
    report = report_of()
    png = report_png(report["per_section"], "test stack")
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.size[0] > 600 and image.size[1] > 500
