"""`normalize` (16-bit / float EM → uint8) on a real local Ray, and 16-bit input through ingest
and infer: chunking independence, masks, section drift, and the refusals before any work."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.core.errors import LayerMismatchError, ValueRangeError
from petavox.tasks.core.layers import Layer
from petavox.workflows import cli
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run
from petavox.workflows.runner import RaySession

pytestmark = pytest.mark.integration

SHAPE_ZYX = (20, 150, 200)
BLANK = (slice(None), slice(0, 30), slice(0, 40))  # z, y, x: a blank corner (0)
SATURATED = (5, slice(100, 120), slice(100, 150))  # a saturated patch (65535) in section 5
GAIN = np.linspace(0.6, 1.4, SHAPE_ZYX[0])  # section-to-section brightness drift


def drifting_stack(path) -> np.ndarray:
    """A uint16 z,y,x stack: textured values around 20000 × a per-section gain, with a blank
    corner and a saturated patch; returned as x, y, z."""
    rng = np.random.default_rng(0)
    texture = rng.normal(20000, 6000, SHAPE_ZYX) * GAIN[:, None, None]
    data = texture.clip(1, 60000).astype(np.uint16)
    data[BLANK] = 0
    data[SATURATED] = 65535
    np.save(path, data)
    return data.transpose(2, 1, 0)


def normalize_run(tmp_path, name: str, chunk_shape, **options):
    config = parse_config(
        {
            "output": f"file://{tmp_path}/{name}",
            "stages": [
                {
                    "stage": "ingest",
                    "input": str(tmp_path / "stack.npy"),
                    "output": "raw16",
                    "resolution": [8, 8, 8],
                    "storage_chunk": [32, 32, 8],
                },
                {
                    "stage": "normalize",
                    "input": "raw16",
                    "output": "raw",
                    "storage_chunk": [32, 32, 8],
                    "chunk_shape": chunk_shape,
                    **options,
                },
            ],
        }
    )
    return config


def normalized(tmp_path, ray_session, name: str, chunk_shape, **options) -> np.ndarray:
    config = normalize_run(tmp_path, name, chunk_shape, **options)
    run(config, session=ray_session, progress=False)
    layer = Layer.open(f"{config.output}/raw")
    assert layer.dtype == np.uint8
    return layer.read(layer.bounds())


@pytest.mark.parametrize(
    "options",
    [
        {"mode": "global"},
        {"mode": "section"},
        {"mode": "section", "clahe": True, "clahe_tile": 48},
    ],
    ids=["global", "section", "section-clahe"],
)
def test_normalize_does_not_depend_on_the_chunking(tmp_path, ray_session, options):
    drifting_stack(tmp_path / "stack.npy")
    small = normalized(tmp_path, ray_session, "small", [64, 64, 8], **options)
    large = normalized(tmp_path, ray_session, "large", [96, 128, 16], **options)
    np.testing.assert_array_equal(small, large)
    assert len(np.unique(small)) > 200  # the full uint8 range is used, not a constant


def test_blank_and_saturated_voxels_are_zero_and_the_others_are_not(tmp_path, ray_session):
    truth = drifting_stack(tmp_path / "stack.npy")
    out = normalized(tmp_path, ray_session, "masks", [64, 64, 8], mode="section", clahe=True)
    masked = (truth == 0) | (truth == 65535)
    assert masked.sum() == 30 * 40 * 20 + 20 * 50
    assert (out[masked] == 0).all()
    assert (out[~masked] >= 1).all()


def test_section_mode_takes_out_the_brightness_drift(tmp_path, ray_session):
    truth = drifting_stack(tmp_path / "stack.npy")
    valid = (truth > 0) & (truth < 65535)

    def medians(out: np.ndarray) -> np.ndarray:
        return np.array([np.median(out[..., z][valid[..., z]]) for z in range(out.shape[2])])

    section = medians(normalized(tmp_path, ray_session, "section", [96, 128, 16], mode="section"))
    whole = medians(normalized(tmp_path, ray_session, "global", [96, 128, 16], mode="global"))
    assert np.ptp(section) <= 6  # every section's median maps to about the same grey
    assert np.ptp(whole) > 50  # one mapping keeps the drift


def test_ingest_takes_float64_sources_as_float32(tmp_path, ray_session):
    data = np.random.default_rng(1).random((8, 40, 50))  # z, y, x float64 in 0-1
    np.save(tmp_path / "f.npy", data)
    config = parse_config(
        {
            "output": f"file://{tmp_path}/out",
            "stages": [
                {"stage": "ingest", "input": str(tmp_path / "f.npy"), "resolution": [8] * 3}
            ],
        }
    )
    run(config, session=ray_session, progress=False)
    layer = Layer.open(f"{config.output}/raw")
    assert layer.dtype == np.float32
    np.testing.assert_array_equal(layer.read(layer.bounds()), data.transpose(2, 1, 0).astype("f4"))


def test_ingest_refuses_a_narrow_dtype_before_ray_starts(tmp_path, monkeypatch, capsys):
    drifting_stack(tmp_path / "stack.npy")

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started")

    monkeypatch.setattr(RaySession, "__init__", no_ray)
    argv = [
        *("ingest", str(tmp_path / "stack.npy"), f"file://{tmp_path}/raw"),
        *("--resolution", "8,8,8", "--dtype", "uint8"),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "do not fit the layer dtype uint8" in err and "petavox normalize" in err
    assert "ingest as uint16" in err
    assert not (tmp_path / "raw").exists()  # nothing written


def test_ingest_refuses_fractional_floats_for_an_integer_dtype(tmp_path):
    np.save(tmp_path / "f.npy", np.random.default_rng(2).random((8, 40, 50)))
    stage = {"stage": "ingest", "input": str(tmp_path / "f.npy"), "resolution": [8] * 3}
    config = parse_config(
        {"output": f"file://{tmp_path}/out", "stages": [{**stage, "dtype": "uint8"}]}
    )
    with pytest.raises(ValueRangeError, match=r"fractional.*ingest as float32.*petavox normalize"):
        plan_run(config)


def test_infer_refuses_uint16_and_points_at_normalize(tmp_path):
    drifting_stack(tmp_path / "stack.npy")
    config = parse_config(
        {
            "output": f"file://{tmp_path}/out",
            "stages": [
                {"stage": "ingest", "input": str(tmp_path / "stack.npy"), "resolution": [8] * 3},
                {"stage": "infer", "input": "raw", "model": "classical"},
            ],
        }
    )
    with pytest.raises(LayerMismatchError, match=r"uint16.*petavox normalize .*/raw OUTPUT_URL"):
        plan_run(config)
