"""The stages that read a segmentation (mesh, skeletonize, downsample) on a layer with a chunk
truncated to half or with its header overwritten: the stage fails on that chunk as bad input
(exit status 2) naming the layer and the chunk, and writes no meshes or skeletons of garbage
ids. Before the chunk checks, the truncated chunk meshed made-up ids and the overwritten
header killed the worker on every retry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run
from petavox.workflows.runner import ChunkFailedError

pytestmark = pytest.mark.integration

SHAPE = (64, 64, 32)
CHUNKS = {"half": "8_8_40/32-64_0-32_0-16", "header": "8_8_40/0-32_32-64_16-32"}
STAGES = {
    "mesh": {"chunk_shape": [64, 64, 32]},
    "skeletonize": {"chunk_shape": [64, 64, 32]},
    "downsample": {"mips": 1},
}


def corrupt_segmentation(root: Path, damage: str) -> tuple[Layer, str]:
    """A uint64 compressed_segmentation layer `root/seg` with one chunk damaged."""
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        size=Vec3(*SHAPE),
        resolution=(8, 8, 40),
        chunk_size=Vec3(32, 32, 16),
        encoding="compressed_segmentation",
    )
    layer = Layer.create(f"file://{root}/seg", spec)
    labels = generate(SyntheticParams(shape=SHAPE, seed=2)).labels.astype(np.uint64)
    layer.write(layer.bounds(), np.where(labels > 0, labels + np.uint64(2**40), labels))
    key = CHUNKS[damage]
    path = root / "seg" / key
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "half" else b"\xff" * 16 + data[16:])
    return layer, key


def written_objects(root: Path) -> list[str]:
    """Files under the layer's mesh/ and skeletons/ folders besides their info."""
    found = [p for folder in ("mesh", "skeletons") for p in (root / folder).rglob("*")]
    return sorted(str(p.relative_to(root)) for p in found if p.is_file() and p.name != "info")


@pytest.mark.parametrize("damage", sorted(CHUNKS))
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_fail_on_the_damaged_chunk_as_bad_input(tmp_path, ray_session, stage, damage):
    layer, key = corrupt_segmentation(tmp_path, damage)
    info_before = (tmp_path / "seg" / "info").read_bytes()
    stages = [{"stage": stage, "input": "seg", **STAGES[stage]}]
    config = parse_config({"output": f"file://{tmp_path}", "stages": stages})
    with pytest.raises(ChunkFailedError) as err:
        run(config, session=ray_session, progress=False)
    assert err.value.bad_input, err.value.details
    assert f"layer {layer.url}: chunk {key} is truncated/corrupt" in str(err.value)
    assert written_objects(tmp_path / "seg") == []
    if stage != "downsample":  # its new scales must be in the info before it writes them
        assert (tmp_path / "seg" / "info").read_bytes() == info_before  # no mesh/skeletons key


def test_the_command_exits_2_naming_the_chunk(tmp_path, ray_session):
    import ray

    layer, key = corrupt_segmentation(tmp_path, "half")
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", "mesh", layer.url, "--address", address],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"chunk {key} is truncated/corrupt" in proc.stderr
    assert written_objects(tmp_path / "seg") == []
