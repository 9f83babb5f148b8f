"""`petavox plan`'s exact object counts against a real run: every scale an ingest and a
downsample write holds, file by file, the objects the plan predicted, unsharded and sharded."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.workflows.config import parse_config
from petavox.workflows.costs.cluster import workers
from petavox.workflows.costs.estimate import estimate_stages
from petavox.workflows.pipeline import plan_stages, run

pytestmark = pytest.mark.integration


def demo_sized(tmp_path, sharding) -> dict:
    """The demo's raw volume size, storage chunks and task shape; a pyramid as the demo's."""
    stack = tmp_path / "raw.npy"
    rng = np.random.default_rng(0)
    np.save(stack, rng.integers(0, 255, (64, 256, 256), dtype=np.uint8))  # z, y, x
    ingest = {
        "stage": "ingest",
        "input": str(stack),
        "resolution": [8, 8, 8],
        "storage_chunk": [32, 32, 16],
        "sharding": sharding,
    }
    if sharding != "auto":  # auto: one shard of the whole volume, a task of its own
        ingest["chunk_shape"] = [128, 128, 32]
    pyramid = {"stage": "downsample", "input": "raw", "mips": 2, "factor": [2, 2, 2]}
    return {"output": f"file://{tmp_path}/out", "stages": [ingest, pyramid]}


def files(folder) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


@pytest.mark.parametrize("sharding", ["none", 4, "auto"])
def test_predicted_volume_objects_are_the_files_written(tmp_path, ray_session, sharding):
    config = parse_config(demo_sized(tmp_path, sharding))
    estimates = estimate_stages(plan_stages(config), workers(2))
    run(config, session=ray_session, progress=False)
    predicted = {
        t.key: t.objects
        for stage in estimates
        for step in stage.steps
        for t in step.shape.traffic
        if t.what == "write"
    }
    assert set(predicted) == {"8_8_8", "16_16_16", "32_32_32"}
    written = {key: files(tmp_path / "out" / "raw" / key) for key in predicted}
    assert written == predicted
    if sharding == "none":
        assert predicted == {"8_8_8": 8 * 8 * 4, "16_16_16": 4 * 4 * 2, "32_32_32": 2 * 2 * 1}
    stored = sum(p.stat().st_size for p in (tmp_path / "out" / "raw" / "8_8_8").rglob("*"))
    ingest = estimates[0].steps[0].totals
    assert ingest.bytes_written <= stored <= ingest.bytes_written * 1.01  # + shard indexes
