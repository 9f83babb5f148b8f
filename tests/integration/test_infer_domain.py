"""`infer` fits the input to the model's training domain on a real local Ray: a volume at twice
the model's voxel size is resampled (still seamless), a faint one is normalised, both are said,
and the output layer records what was done for `segment`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from petavox.tasks.core.layers import Layer
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration

BUILTIN_NM = 8  # the built-in model's training voxel size


@pytest.fixture(scope="module")
def coarse(tmp_path_factory) -> tuple[Path, Path, np.ndarray]:
    """A synthetic volume (z,y,x on disk), the same averaged 2× on every axis (what a 16 nm
    microscope sees), and its labels taken every second voxel."""
    v = generate(SyntheticParams(shape=(96, 96, 32), seed=4))
    raw = v.raw.reshape(48, 2, 48, 2, 16, 2).astype(np.float64).mean(axis=(1, 3, 5))
    folder = tmp_path_factory.mktemp("coarse")
    np.save(folder / "fine.npy", v.raw.transpose(2, 1, 0))
    np.save(folder / "raw.npy", np.round(raw).astype(np.uint8).transpose(2, 1, 0))
    return folder / "raw.npy", folder / "fine.npy", v.labels[::2, ::2, ::2]


def infer(root: Path, raw: Path, session, nm: float, **params) -> Layer:
    stages = [
        {
            "stage": "ingest",
            "input": str(raw),
            "output": "raw",
            "resolution": [nm] * 3,
            "storage_chunk": [16, 16, 8],
        },
        {"stage": "infer", "output_dtype": "float32", **params},
    ]
    run(
        parse_config({"output": f"file://{root}", "stages": stages}),
        session=session,
        progress=False,
    )
    return Layer.open(f"file://{root}/boundary")


def printed(capsys) -> str:
    out = capsys.readouterr()
    return out.out + out.err


def membrane_contrast(boundary: np.ndarray, labels: np.ndarray) -> float:
    return float(boundary[labels == 0].mean() - boundary[labels > 0].mean())


def test_a_coarser_volume_is_resampled_to_the_models_voxels_seamlessly(
    tmp_path, coarse, ray_session, capsys
):
    raw, fine, _ = coarse
    whole = infer(tmp_path / "whole", raw, ray_session, 2 * BUILTIN_NM, chunk_shape=[48, 48, 16])
    assert "resampled in each task (× 2.00, 2.00, 2.00" in printed(capsys)
    record = whole.info["petavox_model"]
    assert record["model_scale"] == [2.0, 2.0, 2.0] and record["voxel_nm"] == [8.0, 8.0, 8.0]
    chunked = infer(tmp_path / "chunked", raw, ray_session, 2 * BUILTIN_NM, chunk_shape=[16, 32, 8])
    a, b = (layer.read(layer.bounds(0)) for layer in (whole, chunked))
    assert a.shape == (48, 48, 16) and np.abs(a - b).max() <= 1e-5  # the chunking is invisible
    off = infer(tmp_path / "off", raw, ray_session, 2 * BUILTIN_NM, resample="off")
    plain = off.read(off.bounds(0))
    assert off.info["petavox_model"]["model_scale"] is None
    # resampled, the model sees what it sees at its own voxel size: its output is close to its
    # prediction on the fine volume, averaged 2×; run on the coarse voxels as they are, it is not
    at8 = infer(tmp_path / "fine", fine, ray_session, BUILTIN_NM)
    own = at8.read(at8.bounds(0)).reshape(48, 2, 48, 2, 16, 2).mean(axis=(1, 3, 5))
    assert np.abs(a - own).mean() < 0.8 * np.abs(plain - own).mean()


def test_a_faint_volume_is_normalised_to_the_training_statistics(
    tmp_path, coarse, ray_session, capsys
):
    raw, _, labels = coarse
    faint = tmp_path / "faint.npy"
    data = np.load(raw).astype(np.float64)
    np.save(faint, np.round(100 + (data - data.mean()) * 0.4).astype(np.uint8))  # low contrast
    layer = infer(tmp_path / "n", faint, ray_session, BUILTIN_NM, chunk_shape=[48, 48, 16])
    err = printed(capsys)
    assert "normalised, x · " in err and "the model's training data 0.603 / 0.221" in err
    as_is = infer(tmp_path / "o", faint, ray_session, BUILTIN_NM, normalise="off")
    assert "not normalised (normalise: off)" in printed(capsys)
    fixed, unfixed = (x.read(x.bounds(0)) for x in (layer, as_is))
    assert membrane_contrast(fixed, labels) > membrane_contrast(unfixed, labels)
