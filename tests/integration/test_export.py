"""`petavox export`: a layer's pyramid to OME-Zarr (NGFF 0.4 / Zarr v2), Zarr v3 (NGFF 0.5,
sharded) and precomputed, read back voxel for voxel at every level by the `ome-zarr` package,
`zarr` and tensorstore; chunking independence, resume, and bad input refused up front."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorstore as ts
from ledger_checks import undeclared_writes
from tree_compare import layer_files

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.workflows.cli import main
from petavox.workflows.config import ConfigError, parse_config
from petavox.workflows.failures import RunIncompleteError
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration

SIZE, OFFSET, RES = (72, 40, 12), (8, 16, 4), (8, 8, 30)


def make_layer(url: str, kind: str, channels: int = 1) -> Layer:
    """A 3-mip layer with voxel offset and random data at every mip (each mip written as is:
    export copies levels, it does not make them)."""
    dtype = {"image": "uint8", "segmentation": "uint64", "float": "float32"}[kind]
    spec = LayerSpec(
        layer_type="segmentation" if kind == "segmentation" else "image",
        dtype=dtype,
        size=Vec3(*SIZE),
        resolution=RES,
        chunk_size=Vec3(32, 16, 8),
        voxel_offset=Vec3(*OFFSET),
        encoding="compressed_segmentation" if kind == "segmentation" else "raw",
        num_channels=channels,
    )
    layer = Layer.create(url, spec).with_scales(Vec3(2, 2, 1), 2)
    rng = np.random.default_rng(len(url))
    for mip in range(3):
        shape = tuple(layer.bounds(mip).shape) + ((channels,) if channels > 1 else ())
        if kind == "segmentation":
            data = (rng.integers(0, 6, shape) + 2**40).astype(np.uint64)  # ids past 32 bits
        else:
            data = rng.integers(0, 250, shape).astype(dtype)
        layer.write(layer.bounds(mip), data, mip)
    return layer


@pytest.fixture(scope="module")
def layers(tmp_path_factory) -> dict[str, Layer]:
    root = tmp_path_factory.mktemp("export-src")
    return {
        "image": make_layer(f"file://{root}/image", "image"),
        "segmentation": make_layer(f"file://{root}/seg", "segmentation"),
        "channels": make_layer(f"file://{root}/rgb", "float", channels=2),
    }


def export(root: Path, source: str, dest: str, session, **params: Any):
    config = parse_config(
        {
            "output": f"file://{root}",
            "stages": [{"stage": "export", "input": source, "output": dest, **params}],
            "ray": {"ledger_flush_seconds": 0},
        }
    )
    return config, run(config, session=session, progress=False)


def expected(layer: Layer, mip: int) -> np.ndarray:
    data = layer.read(layer.bounds(mip), mip)
    return data.transpose(2, 1, 0) if data.ndim == 3 else data.transpose(3, 2, 1, 0)


def expected_transforms(layer: Layer, mip: int) -> list[dict]:
    res, start = layer.resolution(mip), layer.bounds(mip).start
    scale = [float(res[a]) for a in (2, 1, 0)]
    shift = [start[a] * res[a] + (res[a] - RES[a]) / 2 for a in (2, 1, 0)]
    if layer.num_channels > 1:
        scale, shift = [1.0, *scale], [0.0, *shift]
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


def read_ome_zarr(path: Path):
    """The first node of the `ome-zarr` package's reader (it checks the multiscales)."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    location = parse_url(str(path))
    assert location is not None, f"ome-zarr finds no OME-Zarr at {path}"
    return next(iter(Reader(location)()))


def check_with_ome_zarr(path: Path, layer: Layer) -> None:
    node = read_ome_zarr(path)
    names = [a["name"] for a in node.metadata["axes"]]
    assert names == (["c"] if layer.num_channels > 1 else []) + ["z", "y", "x"]
    assert all(a.get("unit") == "nanometer" for a in node.metadata["axes"] if a["name"] != "c")
    transforms = node.metadata["coordinateTransformations"]
    assert len(node.data) == len(transforms) == layer.num_mips
    for mip in range(layer.num_mips):
        assert transforms[mip] == expected_transforms(layer, mip)
        level = np.asarray(node.data[mip])
        assert level.dtype == layer.dtype
        np.testing.assert_array_equal(level, expected(layer, mip))


@pytest.mark.parametrize("kind", ["image", "segmentation", "channels"])
def test_ome_zarr_of_every_level_reads_back_with_the_ome_zarr_package(
    tmp_path, layers, ray_session, kind
):
    layer = layers[kind]
    config, _ = export(tmp_path, layer.url, "out.ome.zarr", ray_session, format="ome-zarr")
    path = tmp_path / "out.ome.zarr"
    check_with_ome_zarr(path, layer)
    attrs = json.loads((path / ".zattrs").read_text())
    assert attrs["multiscales"][0]["version"] == "0.4"
    assert ("image-label" in attrs) == (kind == "segmentation")
    assert attrs["petavox"]["input"] == layer.url
    assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    assert not undeclared_writes(config)  # every chunk object is in the ledger, once


def test_zarr3_is_sharded_ngff_05_read_by_ome_zarr_zarr_and_tensorstore(
    tmp_path, layers, ray_session
):
    import zarr

    layer = layers["segmentation"]
    export(tmp_path, layer.url, "seg.zarr", ray_session, format="zarr3")
    path = tmp_path / "seg.zarr"
    check_with_ome_zarr(path, layer)
    group = zarr.open_group(str(path), mode="r")
    assert group.metadata.zarr_format == 3
    ome = group.attrs["ome"]
    assert ome["version"] == "0.5" and "image-label" in ome
    for mip in range(layer.num_mips):
        array = group[str(mip)]
        # inner chunks are the layer's (clipped to the level); a level this small is one shard
        chunks = tuple(min(c, s) for c, s in zip((8, 16, 32), array.shape))
        assert array.chunks == chunks
        assert array.shards == tuple(-(-s // c) * c for s, c in zip(array.shape, chunks))
        np.testing.assert_array_equal(array[...], expected(layer, mip))
        spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": f"{path}/{mip}/"}}
        np.testing.assert_array_equal(ts.open(spec).result().read().result(), array[...])


def test_precomputed_copy_rechunked_and_sharded_has_the_same_voxels(tmp_path, layers, ray_session):
    layer = layers["segmentation"]
    params = {"format": "precomputed", "storage_chunk": [16, 16, 4], "sharding": 4}
    export(tmp_path, layer.url, "copy", ray_session, **params)
    copy = Layer.open(f"file://{tmp_path}/copy")
    assert copy.num_mips == layer.num_mips and copy.sharding(0) is not None
    for mip in range(layer.num_mips):
        assert copy.chunk_size(mip) == Vec3(16, 16, 4) and copy.bounds(mip) == layer.bounds(mip)
        box = layer.bounds(mip)
        np.testing.assert_array_equal(copy.read(box, mip), layer.read(box, mip))


def level_files(path: Path) -> dict[str, bytes]:
    """The arrays' files (metadata and chunks) of every level, not the group's."""
    return {k: v for k, v in layer_files(path).items() if "/" in k}


@pytest.mark.parametrize("fmt", ["ome-zarr", "zarr3"])
def test_two_task_shapes_write_identical_stores(tmp_path, layers, ray_session, fmt):
    layer = layers["image"]
    chunking = {"storage_chunk": [16, 8, 4]} | ({"sharding": 8} if fmt == "zarr3" else {})
    stores = []
    for name, shape in (("a", [32, 16, 8]), ("b", [64, 48, 12])):
        export(tmp_path, layer.url, name, ray_session, format=fmt, chunk_shape=shape, **chunking)
        stores.append(level_files(tmp_path / name))
    assert stores[0] == stores[1] and len(stores[0]) > 10


def test_an_interrupted_export_resumes_with_the_unfinished_chunks_only(
    tmp_path, layers, ray_session
):
    layer = layers["image"]
    params = {"format": "ome-zarr", "chunk_shape": [32, 16, 8], "max_failures": 1}
    _, reference = export(tmp_path, layer.url, "ref", ray_session, **params)
    source = Path(layer.url.removeprefix("file://"))
    missing = source / "8_8_30" / "8-40_16-32_4-12"
    saved = missing.read_bytes()
    missing.unlink()
    try:
        with pytest.raises(RunIncompleteError, match="8-40_16-32_4-12"):
            export(tmp_path, layer.url, "out", ray_session, **params)
        # levels are written, but no group says they make a pyramid
        assert (tmp_path / "out" / "0" / ".zarray").exists()
        assert not (tmp_path / "out" / ".zattrs").exists()
        assert not (tmp_path / "out" / ".zgroup").exists()
    finally:
        missing.write_bytes(saved)
    _, reports = export(tmp_path, layer.url, "out", ray_session, **params)
    assert [(r.ran, r.skipped) for r in reports] == [(1, reports[0].total - 1)] + [
        (r.total, 0) for r in reference[1:]
    ]
    assert level_files(tmp_path / "out") == level_files(tmp_path / "ref")
    check_with_ome_zarr(tmp_path / "out", layer)
    # a lost chunk object is found by the rerun and written again
    (tmp_path / "out" / "0" / "0" / "0" / "0").unlink()
    _, reports = export(tmp_path, layer.url, "out", ray_session, **params)
    assert [r.ran for r in reports] == [1, 0, 0]
    assert level_files(tmp_path / "out") == level_files(tmp_path / "ref")


def refused(argv: list[str], capsys) -> str:
    """What `petavox ARGV` prints on stderr; its exit status must be 2 (argparse's own
    refusals exit through SystemExit)."""
    try:
        status = main([*argv, "--quiet"])
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    return capsys.readouterr().err


def test_bad_input_is_refused_before_any_work(tmp_path, layers, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image = layers["image"].url
    err = refused(["export", image, "a.zarr", "--format", "tiff"], capsys)
    assert "--format: invalid choice: 'tiff'" in err and "'zarr3'" in err
    with pytest.raises(ConfigError, match="'ome-zarr', 'zarr3' or 'precomputed'"):
        parse_config(
            {
                "output": "o",
                "stages": [{"stage": "export", "input": image, "output": "a", "format": "tiff"}],
            }
        )
    shutil.copytree(layers["image"].url.removeprefix("file://"), tmp_path / "layer")
    err = refused(["export", image, "layer", "--format", "ome-zarr"], capsys)
    assert "already holds a precomputed store" in err and "Zarr v2" in err
    (tmp_path / "v3").mkdir()
    (tmp_path / "v3" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group"}')
    assert "holds a Zarr v3 store" in refused(["export", image, "v3"], capsys)
    assert "did not write" in refused(["export", image, "v3", "--format", "zarr3"], capsys)
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "info").write_text(
        json.dumps({"@type": "neuroglancer_annotations_v1", "annotation_type": "POINT"})
    )
    assert "not an image or segmentation layer" in refused(["export", "ann", "x.zarr"], capsys)
    assert "has no shards" in refused(["export", image, "y.zarr", "--sharding", "auto"], capsys)
    for name in ("a.zarr", "x.zarr", "y.zarr"):
        assert not (tmp_path / name).exists()  # nothing written, not even a ledger
    assert sorted(p.name for p in (tmp_path / "v3").iterdir()) == ["zarr.json"]


def test_round_trip_precomputed_ome_zarr_precomputed(tmp_path, layers, ray_session):
    """The acceptance of issue 23: precomputed → OME-Zarr → precomputed, voxel for voxel at
    every level. Its second leg reads OME-Zarr through `Layer` (`zarr://` URLs)."""
    for kind in ("image", "segmentation"):
        layer = layers[kind]
        export(tmp_path, layer.url, f"{kind}.ome.zarr", ray_session, format="ome-zarr")
        zarr_url = f"zarr://{tmp_path}/{kind}.ome.zarr"
        back = tmp_path / f"{kind}-back"
        export(tmp_path, zarr_url, str(back), ray_session, format="precomputed")
        copy = Layer.open(f"file://{back}")
        assert copy.num_mips == layer.num_mips and copy.layer_type == layer.layer_type
        for mip in range(layer.num_mips):
            assert copy.bounds(mip) == layer.bounds(mip)
            assert copy.resolution(mip) == layer.resolution(mip)
            box = layer.bounds(mip)
            np.testing.assert_array_equal(copy.read(box, mip), layer.read(box, mip))
