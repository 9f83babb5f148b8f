"""`segment`'s guards on a real local Ray: a nearly blank boundary map is warned about before
dispatch and its one giant segment after the relabel; a good map gets neither warning."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run
from petavox.workflows.segment_checks import SegmentSizes

pytestmark = pytest.mark.integration

SHAPE = (64, 48, 24)  # x, y, z


def run_segment(tmp_path, boundary: np.ndarray, session, mode: str = "watershed"):
    """Ingest `boundary` (x, y, z) and segment it in 2 × 2 × 1 chunks; the reports."""
    np.save(tmp_path / "boundary.npy", boundary.transpose(2, 1, 0))
    stages = [
        {
            "stage": "ingest",
            "input": str(tmp_path / "boundary.npy"),
            "output": "boundary",
            "resolution": [8, 8, 8],
            "storage_chunk": [16, 16, 8],
        },
        {
            "stage": "segment",
            "mode": mode,
            "chunk_shape": [32, 32, 24],
            "halo": [8, 8, 8],
            "merge_threshold": 0.6,
        },
    ]
    config = parse_config({"output": f"file://{tmp_path}/run", "stages": stages})
    return config, run(config, session=session, progress=False)


def summary(reports) -> SegmentSizes:
    (sizes,) = [r.summary for r in reports if r.summary is not None]
    return sizes


@pytest.mark.parametrize("mode", ["watershed", "cc"])
def test_a_faint_map_is_warned_about_before_and_after(tmp_path, ray_session, caplog, capsys, mode):
    boundary = np.zeros(SHAPE, np.float32)
    boundary[[20, 44]] = 0.3  # two faint planes: fragments, but nothing a merge stops at
    with caplog.at_level(logging.WARNING, logger="petavox"):
        config, reports = run_segment(tmp_path, boundary, ray_session, mode)
    boundary_url = f"file://{tmp_path}/run/boundary"
    assert f"boundary map {boundary_url}: 0.0 % of sampled voxels are membrane" in caplog.text
    assert "under 3.0 %" in caplog.text
    (step,) = [r for r in reports if r.warnings]
    assert step.label.startswith("segment boundary")
    sizes = summary(reports)
    assert sizes.share == 1.0 and sizes.exact and sizes.segments == 1
    assert "one segment (id" in caplog.text
    assert "holds 100.0 % of the labelled voxels" in caplog.text
    out = capsys.readouterr().out
    assert "1 segment; the largest (id" in out and "holds 100.0 %" in out
    # a rerun finds every chunk done: no check, no count, nothing printed
    caplog.clear()
    again = run(config, session=ray_session, progress=False)
    assert all(r.summary is None and not r.warnings for r in again)
    assert "boundary map" not in caplog.text and capsys.readouterr().out == ""


def test_a_good_map_gets_the_summary_and_no_warning(tmp_path, ray_session, caplog, capsys):
    volume = generate(SyntheticParams(shape=SHAPE, seed=1))
    with caplog.at_level(logging.WARNING, logger="petavox"):
        _, reports = run_segment(tmp_path, boundary_from_labels(volume.labels, seed=1), ray_session)
    assert not any(r.warnings for r in reports)
    assert "boundary map" not in caplog.text and "one segment" not in caplog.text
    sizes = summary(reports)
    assert 0 < sizes.share < 0.5 and sizes.labelled == np.prod(SHAPE)
    assert f"the largest (id {sizes.largest_id}) holds" in capsys.readouterr().out
