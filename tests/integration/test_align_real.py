"""`align` on a real, registered FIB-SEM stack misaligned by known shifts (the truth is the
original), on a real local Ray: the content's own motion through z is kept, damaged sections
are flagged in the quality report, and `status` points to it. Scored with the plain residual:
aligned vs original, only the median offset removed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petavox.tasks.core.layers import Layer
from petavox.tasks.evaluate.alignment_scores import alignment_score
from petavox.tasks.synthetic.misalignment import apply, random_misalignment, straight_line_part
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run, status

pytestmark = pytest.mark.integration

SECTIONS, BLANK, NOISE = 120, 40, 70


def config_for(out: Path, raw: np.ndarray, **align):
    np.save(out / "raw.npy", raw.transpose(2, 1, 0))
    stages = [
        {"stage": "ingest", "input": str(out / "raw.npy"), "output": "raw", "resolution": [10] * 3},
        {"stage": "align", "input": "raw", "output": "aligned", "mips": 0, **align},
    ]
    return parse_config({"output": f"file://{out}", "stages": stages})


def aligned_of(out: Path) -> np.ndarray:
    layer = Layer.open(f"file://{out}/aligned")
    return layer.read(layer.bounds(0))


@pytest.fixture(scope="module")
def damaged(neuroproof_stack):
    """The first 120 sections shifted ±15 px each; one section blanked, one replaced by noise."""
    original = neuroproof_stack[:, :, :SECTIONS]
    known = random_misalignment(SECTIONS, max_shift=15, seed=0)
    raw = apply(original, known)
    raw[:, :, BLANK] = 0
    raw[:, :, NOISE] = np.random.default_rng(0).integers(1, 256, raw.shape[:2], dtype=np.uint8)
    return original, known, raw


def test_content_motion_is_kept_and_bad_sections_are_flagged(tmp_path, ray_session, damaged):
    original, known, raw = damaged
    config = config_for(tmp_path, raw)
    run(config, session=ray_session, progress=False)
    report = json.loads((tmp_path / "aligned" / "alignment" / "report.json").read_text())
    flagged = report["summary"]["flagged"]
    assert flagged == {str(BLANK): ["weak", "bridged"], str(NOISE): ["weak", "bridged"]}
    assert Image.open(tmp_path / "aligned" / "alignment" / "report.png").format == "PNG"
    solve = [row for row in status(config) if "solve" in row.label]
    assert solve[0].note == f"report: file://{tmp_path}/aligned/alignment/report.json"

    good = [z for z in range(SECTIONS) if z not in (BLANK, NOISE)]
    score = alignment_score(aligned_of(tmp_path)[:, :, good], original[:, :, good])
    # what no aligner keeping the content's steady motion can know (the straight line through
    # the shifts: 0.22 px here), and the content's own motion faster than the kept smooth part
    # (aligning the untouched stack with a straight-line window moves it by 1.2 px RMS)
    assert score.rms <= np.hypot(straight_line_part(known), 1.2) + 0.3
    assert score.worst <= 3.5
    assert score.drift <= 2.5


def test_undoing_every_motion_bends_the_real_stack(tmp_path, ray_session, damaged):
    """The content of this stack moves ~0.27 px per section: undone (`drift_window` None), the
    aligned stack is straightened by tens of pixels from first to last section."""
    original, _, raw = damaged
    run(config_for(tmp_path, raw, drift_window=None), session=ray_session, progress=False)
    good = [z for z in range(SECTIONS) if z not in (BLANK, NOISE)]
    score = alignment_score(aligned_of(tmp_path)[:, :, good], original[:, :, good])
    assert score.drift > 20
    assert score.rms > 8
