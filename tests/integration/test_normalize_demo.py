"""Acceptance (issue 23): a uint16 version of the demo volume, with a per-section gain and
offset drift, through `normalize` (section mode) and the demo pipeline scores as the uint8 demo."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.evaluate.report import read_report, report_location
from petavox.tasks.synthetic.misalignment import random_misalignment
from petavox.workflows.config import RunConfig
from petavox.workflows.demo import (
    EVALUATION,
    MAX_SHIFT,
    WARP,
    demo_config,
    demo_shape,
    demo_volume,
    write_stacks,
)
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration

SIZE = 128
# the demo up to its scores (its cleft channel scores nothing here)
SCORED = ("ingest", "align", "infer", "segment", "evaluate")


def uint16_stack(raw_path: str, out_path: str, seed: int = 0) -> np.ndarray:
    """The demo's uint8 z,y,x stack spread over 0–60000 with a gain and an offset per section
    (blank voxels, the misalignment's fill, stay 0)."""
    raw = np.load(raw_path)
    rng = np.random.default_rng(seed)
    gain = rng.uniform(0.65, 1.0, raw.shape[0])[:, None, None] * 55000 / 255
    offset = rng.uniform(500, 4000, raw.shape[0])[:, None, None]
    data = np.where(raw > 0, np.round(offset + gain * raw), 0).astype(np.uint16)
    np.save(out_path, data)
    return data


def scored_config(output: str, stacks: dict[str, str], normalize: bool) -> RunConfig:
    """The demo's stages up to `evaluate`; with `normalize`, raw comes from the uint16 stack."""
    stages = [
        s.model_dump(mode="json", exclude_unset=True) | {"stage": s.stage}
        for s in demo_config(output, stacks, {}).stages
        if s.stage in SCORED and getattr(s, "output", None) != "clefts"
    ]
    if normalize:
        first = stages[0]
        assert first["output"] == "raw"
        stages[0] = {**first, "input": stacks["raw16"], "output": "raw16"}
        section = {"stage": "normalize", "input": "raw16", "output": "raw", "mode": "section"}
        stages.insert(1, {**section, "chunk_shape": first["chunk_shape"]})
    return RunConfig.model_validate({"output": output, "stages": stages})


def arand_of(config: RunConfig) -> float:
    report = read_report(*report_location(config.output, EVALUATION), StorageContext())
    return float(report["arand"])


def test_uint16_demo_normalized_scores_as_the_uint8_demo(tmp_path, ray_session):
    volume = demo_volume(SIZE, seed=0)
    known = random_misalignment(demo_shape(SIZE)[2], MAX_SHIFT, WARP, seed=0)
    stacks = write_stacks(volume, known, tmp_path)
    stacks["raw16"] = str(tmp_path / "raw16.npy")
    data = uint16_stack(stacks["raw"], stacks["raw16"])
    assert data.max() > 50000 and np.ptp(data[:, 40:60, 40:60].mean(axis=(1, 2))) > 3000

    reference = scored_config(f"file://{tmp_path}/uint8", stacks, normalize=False)
    normalized = scored_config(f"file://{tmp_path}/uint16", stacks, normalize=True)
    run(reference, session=ray_session, progress=False)
    run(normalized, session=ray_session, progress=False)
    base, got = arand_of(reference), arand_of(normalized)
    assert base < 0.3  # the uint8 pipeline works at this size
    assert abs(got - base) <= 0.01, (base, got)
