"""Zarr v2, Zarr v3 (sharded), N5 and OME-Zarr inputs in object storage and through stages on
Ray (issue 23): the same voxels, and the same outputs, as the same data ingested from .npy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from foreign_data import (
    OFFSET,
    volume,
    write_n5,
    write_ome_zarr,
    write_zarr2,
    write_zarr3_sharded,
)

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration

DATA = volume((8, 64, 64), seed=5)


def upload(server, folder: Path, prefix: str) -> None:
    client = server.boto3_client()
    for path in folder.rglob("*"):
        if path.is_file():
            key = f"{prefix}/{path.relative_to(folder)}"
            client.upload_file(str(path), server.bucket, key)


def test_volumes_in_object_storage(tmp_path, s3):
    """Each format read from the S3 test server: every level, voxel for voxel."""
    context = StorageContext(s3_endpoint=s3.endpoint)
    levels = {
        "ome04": write_ome_zarr(tmp_path / "ome04", DATA, "0.4"),
        "ome05": write_ome_zarr(tmp_path / "ome05", DATA, "0.5"),
    }
    for name, writer in [("z2", write_zarr2), ("z3", write_zarr3_sharded), ("n5", write_n5)]:
        writer(tmp_path / name, DATA)
        levels[name] = [DATA]
    upload(s3, tmp_path, "foreign")
    for name, expected in levels.items():
        layer = Layer.open(f"s3://{s3.bucket}/foreign/{name}", context)
        assert layer.num_mips == len(expected), name
        for mip, level in enumerate(expected):
            np.testing.assert_array_equal(layer.read(layer.bounds(mip), mip), level.transpose())
        if name.startswith("ome"):
            assert layer.bounds(2).start == Vec3(OFFSET[0] // 4, OFFSET[1] // 4, OFFSET[2])


def run_stages(root: Path, stages: list[dict], session) -> None:
    config = parse_config({"output": f"file://{root}", "stages": stages})
    run(config, session=session, progress=False)


def voxels(url: str) -> tuple[Box, np.ndarray]:
    layer = Layer.open(url)
    return layer.bounds(), layer.read(layer.bounds())


def test_ome_zarr_through_infer_and_segment_equals_npy(tmp_path, ray_session):
    """Acceptance: an OME-Zarr by the ome-zarr package (3 levels, 8x8x30 nm, an offset) →
    infer + segment gives the same segmentation as the same data ingested from .npy."""
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    em = np.ascontiguousarray(generate(SyntheticParams(shape=(64, 64, 16), seed=3)).raw.T)
    write_ome_zarr(tmp_path / "img.ome.zarr", em, "0.4")
    np.save(tmp_path / "img.npy", em)
    infer_segment = [
        {"stage": "infer", "output": "boundary", "model": "classical"},
        {"stage": "segment", "input": "boundary", "output": "seg"},
    ]
    zarr_run = [{**infer_segment[0], "input": str(tmp_path / "img.ome.zarr")}, infer_segment[1]]
    run_stages(tmp_path / "from_zarr", zarr_run, ray_session)
    ingest = {
        "stage": "ingest",
        "input": str(tmp_path / "img.npy"),
        "resolution": [8, 8, 30],
        "voxel_offset": list(OFFSET),
    }
    npy_run = [ingest, {**infer_segment[0], "input": "raw"}, infer_segment[1]]
    run_stages(tmp_path / "from_npy", npy_run, ray_session)
    for layer in ("boundary", "seg"):
        ours, theirs = (
            voxels(f"{tmp_path}/from_zarr/{layer}"),
            voxels(f"{tmp_path}/from_npy/{layer}"),
        )
        assert ours[0] == theirs[0] == Box.from_shape((64, 64, 16), OFFSET)
        np.testing.assert_array_equal(ours[1], theirs[1])
    assert len(np.unique(ours[1])) > 1  # a real segmentation, not one label
    assert Layer.open(f"{tmp_path}/from_zarr/seg").resolution() == (8, 8, 30)


def test_sharded_zarr3_and_n5_through_downsample_and_ingest(tmp_path, ray_session):
    """Zarr v3 sharded and N5 inputs → downsample into a new layer, and a .zarr folder given to
    ingest: the same voxels as from .npy."""
    write_zarr3_sharded(tmp_path / "v.zarr", DATA)
    write_n5(tmp_path / "v.n5", DATA)
    np.save(tmp_path / "v.npy", DATA)
    down = {"stage": "downsample", "mips": 2, "factor": [2, 2, 1], "chunk_shape": [64, 64, 8]}
    ingest = {"stage": "ingest", "input": str(tmp_path / "v.npy"), "resolution": [1, 1, 1]}
    ingest["storage_chunk"] = [16, 16, 4]
    run_stages(tmp_path / "npy", [ingest, {**down, "output": "ds"}], ray_session)
    for name in ("v.zarr", "v.n5"):
        stages = [
            {**down, "input": str(tmp_path / name), "output": "ds"},
            {"stage": "ingest", "input": str(tmp_path / name), "output": "copy"},
        ]
        run_stages(tmp_path / name.replace(".", "_"), stages, ray_session)
        ds, ref = (
            Layer.open(f"{tmp_path}/{name.replace('.', '_')}/ds"),
            Layer.open(f"{tmp_path}/npy/ds"),
        )
        for mip in range(3):
            np.testing.assert_array_equal(
                ds.read(ds.bounds(mip), mip), ref.read(ref.bounds(mip), mip)
            )
        copy = voxels(f"{tmp_path}/{name.replace('.', '_')}/copy")
        assert copy[0] == Box.from_shape((64, 64, 8))
        np.testing.assert_array_equal(copy[1], DATA.transpose())
