"""`align` on a real local Ray and file:// layers: accuracy against known misalignment, drift,
render-chunk invariance, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from petavox.tasks.align.displacement import grid_points
from petavox.tasks.align.render import SectionTransforms
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.tasks.synthetic.misalignment import (
    apply,
    random_misalignment,
    residuals,
    straight_line_part,
)
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run

pytestmark = pytest.mark.integration


def align_config(out: Path, raw: np.ndarray, name: str = "aligned", **align):
    np.save(out / "raw.npy", raw.transpose(2, 1, 0))
    stages = [
        {
            "stage": "ingest",
            "input": str(out / "raw.npy"),
            "output": "raw",
            "resolution": [8, 8, 8],
            "storage_chunk": [64, 64, 8],
        },
        {"stage": "align", "output": name, **align},
    ]
    return parse_config({"output": f"file://{out}", "stages": stages})


def solved(out: Path) -> SectionTransforms:
    (work,) = (out / "intermediate" / "align").iterdir()
    return SectionTransforms.from_arrays(get_arrays(f"file://{work}", "transforms.npz"))


def inner_points(size: int, margin: int = 40, step: int = 16) -> np.ndarray:
    return grid_points((margin, margin), (size - margin, size - margin), step)


@pytest.mark.parametrize(
    ("warp", "rotation", "tile", "limit"),
    [(0.0, 0.0, None, 0.2), (5.0, 0.0, None, 0.8), (5.0, 3.0, [96, 96], 0.8)],
)
def test_known_translations_and_warps_are_undone(
    tmp_path, ray_session, warp, rotation, tile, limit
):
    """Shifts up to ±30 px (and smooth warps up to 5 px, and rotations up to 3° estimated in
    xy tiles) of a stack whose content does not move, every motion undone (`drift_window`
    None): plain RMS residual ≤ 0.2 px (≤ 0.8 px)."""
    aligned = motionless_stack(192, 24, seed=4)
    known = random_misalignment(
        24, max_shift=30, warp=warp, rotation=rotation, centre=(96.0, 96.0), seed=1
    )
    raw = apply(aligned, known)
    config = align_config(tmp_path, raw, chunk_shape=[128, 128, 16], tile=tile, drift_window=None)
    run(config, session=ray_session, progress=False)
    per_section = residuals(solved(tmp_path), known, inner_points(192))
    assert np.sqrt((per_section**2).mean()) <= limit
    out = Layer.open(f"file://{tmp_path}/aligned")
    result = out.read(out.bounds(0))
    assert out.num_mips == 3  # with its pyramid
    assert neighbour_correlation(raw) < 0.5 < 0.9 < neighbour_correlation(result)


def neighbour_correlation(volume: np.ndarray) -> float:
    inner = volume[40:-40, 40:-40].astype(np.float64)
    return float(
        np.mean(
            [
                np.corrcoef(inner[..., z - 1].ravel(), inner[..., z].ravel())[0, 1]
                for z in range(1, volume.shape[2])
            ]
        )
    )


def test_rendering_does_not_depend_on_the_chunking(tmp_path, ray_session):
    aligned = generate(SyntheticParams(shape=(136, 120, 12), seed=5)).raw
    raw = apply(aligned, random_misalignment(12, max_shift=15, warp=3, seed=2))
    results = []
    for name, shape in (("one", [192, 128, 16]), ("small", [64, 64, 8])):
        run(
            align_config(tmp_path, raw, name, chunk_shape=shape, mips=0),
            session=ray_session,
            progress=False,
        )
        layer = Layer.open(f"file://{tmp_path}/{name}")
        results.append(layer.read(layer.bounds(0)))
    np.testing.assert_array_equal(results[0], results[1])
    assert results[0].any()


def motionless_stack(size: int, sections: int, seed: int) -> np.ndarray:
    """EM-like sections whose content changes along z but never moves: a slow cross-fade of
    two synthetic sections plus noise. The neurite volumes of the generator drift as a whole
    (their content moves ~0.1 px per section), which no aligner can tell from misalignment;
    this stack tests that the aligner's own errors do not pile up into a drift."""
    rng = np.random.default_rng(seed)
    base = generate(SyntheticParams(shape=(size, size, 2), seed=seed, neurite_spacing=10)).raw
    a, b = (base[:, :, k].astype(np.float32) for k in range(2))
    w = 0.5 + 0.5 * np.sin(2 * np.pi * np.arange(sections) / 60.0)
    stack = w * a[..., None] + (1 - w) * b[..., None]
    stack += rng.normal(0, 6, stack.shape)
    return np.clip(np.rint(stack), 1, 255).astype(np.uint8)


@pytest.mark.parametrize("window", [None, "auto"])
def test_no_drift_over_200_sections(tmp_path, ray_session, window):
    """Every motion undone: the aligner's own errors do not pile up into a drift. Content
    motion kept (the default): the straight line through the random shifts is taken for the
    content's (`straight_line_part`, 1.06 px here), and nothing more piles up."""
    known = random_misalignment(200, max_shift=30, seed=3)
    raw = apply(motionless_stack(160, 200, seed=6), known)
    run(
        align_config(tmp_path, raw, mips=0, drift_window=window),
        session=ray_session,
        progress=False,
    )
    per_section = residuals(solved(tmp_path), known, inner_points(160, margin=40))
    rms = np.sqrt((per_section**2).mean())
    if window is None:
        assert per_section[-1] <= 2.0
        assert rms <= 1.0
    else:
        assert rms <= straight_line_part(known) + 0.5


def test_real_sections_warped_by_known_transforms_are_restored(tmp_path, ray_session, gala_dir):
    """gala's aligned FIB-SEM crop (200×100 px sections), shifted ±15 px (the sections are only
    100 px high) and warped 3 px, estimated in 96×64 tiles: plain residual within 1 px of what
    a straight line through the shifts hides."""
    aligned = np.ascontiguousarray(np.load(gala_dir / "test.npz")["raw"].transpose(2, 1, 0))
    known = random_misalignment(aligned.shape[2], max_shift=15, warp=3, seed=7)
    raw = apply(aligned, known)
    run(align_config(tmp_path, raw, mips=0, tile=[96, 64]), session=ray_session, progress=False)
    points = grid_points((25, 25), (aligned.shape[0] - 25, aligned.shape[1] - 25), 8)
    per_section = residuals(solved(tmp_path), known, points)
    assert np.sqrt((per_section**2).mean()) <= straight_line_part(known) + 1.0


def test_bad_align_input_is_refused_before_dispatch(tmp_path):
    raw = np.zeros((40, 40, 4), np.uint8)
    with pytest.raises(InputError, match="smaller than the matching patch"):
        plan_run(align_config(tmp_path, raw))
    assert not (tmp_path / "aligned").exists()
