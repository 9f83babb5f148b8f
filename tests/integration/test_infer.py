"""`infer` on a real local Ray and file:// layers: seamless chunking, model checks, GPU actors."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ledger_checks import recorded_results
from onnx_models import conv_model

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, read_info
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.cli import exit_status
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run
from petavox.workflows.runner import ChunkFailedError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def raw_stack(tmp_path_factory) -> Path:
    """An odd-sized synthetic EM image, z, y, x on disk."""
    volume = generate(SyntheticParams(shape=(90, 78, 37), seed=3))
    folder = tmp_path_factory.mktemp("raw")
    np.save(folder / "raw.npy", volume.raw.transpose(2, 1, 0))
    return folder / "raw.npy"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    return {
        "boundary": conv_model(folder / "boundary.onnx"),
        "affinities": conv_model(folder / "affinities.onnx", channels=3),
        "two_channels": conv_model(folder / "two.onnx", channels=2),
        "valid_conv": conv_model(folder / "valid.onnx", pad=False),
        "rank4": conv_model(folder / "rank4.onnx", input_rank=4),
        "divisor8": conv_model(folder / "div8.onnx", divisor="8,8,8"),
    }


def infer_config(out: Path, raw: Path, name: str, **infer):
    stages = [
        {
            "stage": "ingest",
            "input": str(raw),
            "output": "raw",
            "resolution": [8, 8, 8],
            "storage_chunk": [16, 16, 8],
        },
        {"stage": "infer", "input": "raw", "output": name, **infer},
    ]
    return parse_config({"output": f"file://{out}", "stages": stages})


def infer(tmp_path, raw, name, session, **params) -> np.ndarray:
    run(infer_config(tmp_path, raw, name, **params), session=session, progress=False)
    layer = Layer.open(f"file://{tmp_path}/{name}")
    return layer.read(layer.bounds(0))


def test_chunked_inference_equals_whole_volume_inference(tmp_path, raw_stack, models, ray_session):
    common = {"model": str(models["boundary"]), "patch": [32, 24, 16], "overlap": [6, 6, 4]}
    whole = infer(tmp_path, raw_stack, "whole", ray_session, chunk_shape=[96, 80, 40], **common)
    assert whole.dtype == np.uint8 and whole.shape == (90, 78, 37)
    assert whole.std() > 10  # the model's output varies: membranes vs cytoplasm
    for shape in ([16, 16, 8], [32, 48, 16], [48, 16, 24]):
        chunked = infer(
            tmp_path,
            raw_stack,
            f"c{shape[0]}_{shape[1]}_{shape[2]}",
            ray_session,
            chunk_shape=shape,
            **common,
        )
        assert np.abs(chunked.astype(int) - whole).max() <= 1, shape


def test_the_built_in_unet_is_seamless_and_finds_membranes(tmp_path, raw_stack, ray_session):
    """The shipped model (same padding, so patch edges differ) through 3 chunkings."""
    common = {"patch": [48, 48, 32], "overlap": [8, 8, 4], "output_dtype": "float32"}
    whole = infer(tmp_path, raw_stack, "whole", ray_session, chunk_shape=[96, 80, 40], **common)
    for shape in ([16, 16, 8], [48, 32, 16]):
        chunked = infer(
            tmp_path, raw_stack, f"c{shape[0]}_{shape[1]}", ray_session, chunk_shape=shape, **common
        )
        assert np.abs(chunked - whole).max() <= 1e-3, shape
    labels = generate(SyntheticParams(shape=(90, 78, 37), seed=3)).labels
    # boundaries where the ground truth has membrane, interiors elsewhere (a held-out volume)
    assert whole[labels == 0].mean() > 0.6 and whole[labels > 0].mean() < 0.3


def test_float_output_and_affinities(tmp_path, raw_stack, models, ray_session):
    common = {"patch": [40, 40, 24], "overlap": [8, 8, 4], "output_dtype": "float32"}
    model = str(models["affinities"])
    whole = infer(
        tmp_path, raw_stack, "whole", ray_session, model=model, chunk_shape=[96, 80, 40], **common
    )
    chunked = infer(
        tmp_path, raw_stack, "chunked", ray_session, model=model, chunk_shape=[32, 16, 16], **common
    )
    assert whole.shape == (90, 78, 37, 3) and whole.dtype == np.float32
    assert np.abs(chunked - whole).max() <= 1e-3
    assert read_info(f"file://{tmp_path}/chunked")["num_channels"] == 3


def test_blending_reproduces_a_single_forward_pass_where_patches_agree(
    tmp_path, raw_stack, ray_session
):
    """A pointwise model gives the same value in every patch, so blending must return it."""
    model = conv_model(tmp_path / "pointwise.onnx", kernel=1)
    out = infer(
        tmp_path,
        raw_stack,
        "blended",
        ray_session,
        model=str(model),
        patch=[24, 24, 16],
        overlap=[8, 8, 4],
        output_dtype="float32",
        chunk_shape=[32, 32, 16],
    )
    raw = np.load(raw_stack).transpose(2, 1, 0).astype(np.float32) / 255
    expected = 1 / (1 + np.exp(-8 * ((1 - raw) - 0.5)))
    assert np.abs(out - expected).max() < 1e-5


def test_classical_fallback_runs_without_a_model(tmp_path, raw_stack, ray_session):
    out = infer(
        tmp_path, raw_stack, "classical", ray_session, model="classical", chunk_shape=[32, 32, 16]
    )
    raw = np.load(raw_stack).transpose(2, 1, 0)
    # dark voxels (membranes) get high boundary values
    assert out[raw < np.percentile(raw, 10)].mean() > out[raw > np.percentile(raw, 70)].mean() + 100


def plan_error(tmp_path, raw, **params) -> str:
    config = infer_config(tmp_path, raw, "out", **params)
    with pytest.raises(InputError) as info:
        plan_run(config)
    assert not (tmp_path / "out").exists()  # nothing dispatched, nothing written
    return str(info.value)


def test_bad_models_are_refused_before_dispatch(tmp_path, raw_stack, models):
    assert "does not exist" in plan_error(tmp_path, raw_stack, model=str(tmp_path / "no.onnx"))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf" * 50)
    assert "not a valid ONNX model" in plan_error(tmp_path, raw_stack, model=str(corrupt))
    text = plan_error(tmp_path, raw_stack, model=str(models["boundary"]), model_sha256="ab" * 32)
    assert "SHA-256" in text and "model_sha256" in text
    assert "(N, 1, Z, Y, X) boundaries or (N, 3, Z, Y, X)" in plan_error(
        tmp_path, raw_stack, model=str(models["two_channels"])
    )
    assert "same spatial size" in plan_error(tmp_path, raw_stack, model=str(models["valid_conv"]))
    text = plan_error(tmp_path, raw_stack, model=str(models["rank4"]))
    assert "not a valid ONNX model" in text or "one image channel" in text
    text = plan_error(tmp_path, raw_stack, model=str(models["divisor8"]), patch=[36, 36, 16])
    assert "multiple of (8, 8, 8)" in text


def test_right_checksum_is_accepted_and_hashed(tmp_path, raw_stack, models):
    import hashlib

    digest = hashlib.sha256(models["boundary"].read_bytes()).hexdigest()
    plans = plan_run(
        infer_config(
            tmp_path, raw_stack, "out", model=str(models["boundary"]), model_sha256=digest.upper()
        )
    )
    assert plans[-1].spec["model_sha256"] == digest


def test_gpu_actor_path_gives_the_same_result(tmp_path, raw_stack, models, ray_session):
    """device: gpu sends batches to model actors (here with no GPU reserved: CI has none)."""
    common = {
        "model": str(models["boundary"]),
        "patch": [32, 24, 16],
        "overlap": [6, 6, 4],
        "chunk_shape": [32, 32, 16],
    }
    cpu = infer(tmp_path, raw_stack, "cpu", ray_session, device="cpu", **common)
    gpu = infer(
        tmp_path,
        raw_stack,
        "actors",
        ray_session,
        device="gpu",
        gpus_per_actor=0,
        gpu_actors=2,
        batch=2,
        **common,
    )
    assert np.abs(cpu.astype(int) - gpu).max() <= 1
    results = recorded_results(tmp_path / "ledger" / "infer")
    used = {r.get("predictor") for r in results}
    assert {"OnnxPredictor", "ActorPredictor"} <= used


def float_image(url: str, image: np.ndarray) -> Layer:
    """A float32 image layer written directly (as another tool would), 16,16,8 chunks."""
    spec = LayerSpec(
        layer_type="image",
        dtype="float32",
        size=Vec3.of(image.shape),
        resolution=(8, 8, 8),
        chunk_size=Vec3(16, 16, 8),
    )
    layer = Layer.create(url, spec)
    layer.write(layer.bounds(0), image.astype(np.float32))
    return layer


def infer_layer(out: Path, source: str, name: str, session) -> np.ndarray:
    stages = [
        {
            "stage": "infer",
            "input": source,
            "output": name,
            "model": "classical",
            "chunk_shape": [32, 32, 16],
        }
    ]
    run(
        parse_config({"output": f"file://{out}", "stages": stages}), session=session, progress=False
    )
    layer = Layer.open(f"file://{out}/{name}")
    return layer.read(layer.bounds(0))


def test_a_float_image_in_0_1_infers_like_its_uint8_version(tmp_path, raw_stack, ray_session):
    raw = np.load(raw_stack).transpose(2, 1, 0)
    float_image(f"file://{tmp_path}/raw01", raw.astype(np.float32) / 255)
    as_uint8 = infer(
        tmp_path, raw_stack, "u8", ray_session, model="classical", chunk_shape=[32] * 3
    )
    as_float = infer_layer(tmp_path, "raw01", "f32", ray_session)
    np.testing.assert_array_equal(as_float, as_uint8)


def test_one_nan_voxel_in_a_float_image_stops_infer_naming_layer_and_chunk(
    tmp_path, raw_stack, ray_session
):
    """Before: the classical filter zeroed 627,214 voxels around it and the run succeeded."""
    image = np.load(raw_stack).transpose(2, 1, 0).astype(np.float32) / 255
    image[40, 30, 20] = np.nan
    layer = float_image(f"file://{tmp_path}/raw", image)
    with pytest.raises(ChunkFailedError) as err:
        infer_layer(tmp_path, "raw", "boundary", ray_session)
    text = str(err.value)
    assert err.value.bad_input and exit_status(err.value) == 2
    assert re.search(r"stage infer failed on chunk \d+_\d+_\d+: ValueRangeError", text)
    assert f"infer input {layer.url}: 1 NaN value in section 20" in text
    assert "first at voxel x,y,z 40,30,20" in text and "box [" in text
    # a float image in 0-255 (not 0-1) is refused with what was found and the fix
    float_image(f"file://{tmp_path}/raw255", np.load(raw_stack).transpose(2, 1, 0))
    with pytest.raises(ChunkFailedError, match=r"lie outside 0-1 \(min \d+, max 2\d\d\)") as err:
        infer_layer(tmp_path, "raw255", "boundary255", ray_session)
    assert "rescale the layer to 0-1, or write it as uint8" in str(err.value)


def test_the_cli_exits_2_on_a_nan_in_the_infer_input(tmp_path, ray_session):
    import ray

    image = np.full((32, 32, 16), 0.5, np.float32)
    image[3, 4, 5] = np.inf
    float_image(f"file://{tmp_path}/raw", image)
    address = ray.get_runtime_context().gcs_address
    args = [f"file://{tmp_path}/raw", f"file://{tmp_path}/boundary", "--model", "classical"]
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", "infer", *args, "--address", address],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stderr
    assert "1 infinite value in section 5 (first at voxel x,y,z 3,4,5)" in proc.stderr
