import os

import numpy as np
import pytest

from petavox.tasks.core.errors import (
    ChunkDataError,
    LayerMismatchError,
    LayerNotFoundError,
    MisalignedWriteError,
)
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, pyramid_info


def image_spec(**kw):
    base = dict(
        layer_type="image",
        dtype="uint8",
        size=Vec3(100, 70, 20),
        resolution=(8, 8, 40),
        chunk_size=Vec3(32, 32, 8),
    )
    return LayerSpec(**{**base, **kw})


@pytest.fixture
def image(tmp_path):
    layer = Layer.create(f"file://{tmp_path}/img", image_spec())
    data = np.random.default_rng(0).integers(0, 255, (100, 70, 20), dtype=np.uint8)
    layer.write(layer.bounds(), data)
    return layer, data


def test_roundtrip_and_zero_fill_outside_bounds(image):
    layer, data = image
    reopened = Layer.open(layer.url)
    out = reopened.read(Box((-5, 10, 0), (50, 80, 20)))
    assert out.shape == (55, 70, 20)
    np.testing.assert_array_equal(out[5:, :60], data[:50, 10:70])
    assert not out[:5].any() and not out[5:, 60:].any()


def test_offset_layer_reads_in_global_coordinates(tmp_path):
    layer = Layer.create(f"file://{tmp_path}/off", image_spec(voxel_offset=Vec3(64, 32, 8)))
    data = np.arange(100 * 70 * 20, dtype=np.uint32).reshape(100, 70, 20) % 251
    layer.write(layer.bounds(), data.astype(np.uint8))
    np.testing.assert_array_equal(
        layer.read(Box((64, 32, 8), (74, 42, 12))), data[:10, :10, :4].astype(np.uint8)
    )


def test_misaligned_write_is_an_error_and_writes_nothing(tmp_path):
    layer = Layer.create(f"file://{tmp_path}/img", image_spec())
    with pytest.raises(MisalignedWriteError, match="whole storage chunks"):
        layer.write(Box((1, 0, 0), (33, 32, 8)), np.zeros((32, 32, 8), np.uint8))
    assert os.listdir(tmp_path / "img") == ["info"]


def test_wrong_dtype_write_is_an_error(image):
    layer, _ = image
    with pytest.raises(LayerMismatchError, match="uint16 data"):
        layer.write(Box((0, 0, 0), (32, 32, 8)), np.zeros((32, 32, 8), np.uint16))


def test_missing_chunk_names_layer_and_chunk(image):
    layer, data = image
    os.remove(layer.url[len("file://") :] + "/8_8_40/32-64_0-32_0-8")
    with pytest.raises(ChunkDataError) as err:
        layer.read(Box((0, 0, 0), (64, 32, 8)))
    assert "8_8_40/32-64_0-32_0-8" in str(err.value) and layer.url in str(err.value)
    filled = layer.read(Box((0, 0, 0), (64, 32, 8)), fill_missing=True)
    assert not filled[32:].any()
    np.testing.assert_array_equal(filled[:32], data[:32, :32, :8])


def test_corrupt_chunk_names_layer_and_chunk(image):
    layer, _ = image
    path = layer.url[len("file://") :] + "/8_8_40/64-96_32-64_8-16"
    with open(path, "wb") as f:
        f.write(b"not a chunk")
    with pytest.raises(ChunkDataError) as err:
        layer.read(Box((32, 32, 0), (100, 70, 20)))
    assert "64-96_32-64_8-16" in str(err.value) and "is truncated/corrupt" in str(err.value)


def test_missing_info(tmp_path):
    with pytest.raises(LayerNotFoundError, match="info file is missing"):
        Layer.open(f"file://{tmp_path}/none")


def test_create_reuses_a_compatible_layer_and_refuses_a_different_one(image):
    layer, data = image
    again = Layer.create(layer.url, image_spec())
    np.testing.assert_array_equal(again.read(again.bounds()), data)
    with pytest.raises(LayerMismatchError, match="a different layer already exists"):
        Layer.create(layer.url, image_spec(dtype="uint16"))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dict(layer_type="segmentation", dtype="float32"), "cannot hold float32"),
        (
            dict(layer_type="segmentation", dtype="uint8", encoding="compressed_segmentation"),
            "uint32 or uint64",
        ),
        (dict(dtype="uint16", encoding="jpeg"), "jpeg encodes uint8"),
    ],
)
def test_impossible_specs(spec, message):
    with pytest.raises(LayerMismatchError, match=message):
        image_spec(**spec).validate()


@pytest.mark.parametrize(
    ("dtype", "encoding"),
    [
        ("uint32", "compressed_segmentation"),
        ("uint64", "raw"),
        ("uint64", "compressed_segmentation"),
    ],
)
def test_segmentation_roundtrip(tmp_path, dtype, encoding):
    spec = image_spec(layer_type="segmentation", dtype=dtype, encoding=encoding)
    layer = Layer.create(f"file://{tmp_path}/seg", spec)
    labels = (
        np.random.default_rng(1)
        .integers(0, 2**40 if dtype == "uint64" else 2**31, (100, 70, 20))
        .astype(dtype)
    )
    layer.write(layer.bounds(), labels)
    np.testing.assert_array_equal(Layer.open(layer.url).read(layer.bounds()), labels)


def test_jpeg_is_close(tmp_path):
    layer = Layer.create(f"file://{tmp_path}/jpg", image_spec(encoding="jpeg"))
    x = np.linspace(0, 1, 100)[:, None, None]
    smooth = np.broadcast_to((x * 200 + 20), (100, 70, 20)).astype(np.uint8)
    layer.write(layer.bounds(), np.asfortranarray(smooth))
    diff = np.abs(layer.read(layer.bounds()).astype(int) - smooth)
    assert diff.mean() < 2


def test_pyramid_info_adds_consistent_scales_and_refuses_another_factor(image):
    layer, _ = image
    grown = layer.with_scales(Vec3(2, 2, 1), 2)
    assert [s["key"] for s in grown.info["scales"]] == ["8_8_40", "16_16_40", "32_32_40"]
    assert grown.bounds(1) == Box((0, 0, 0), (50, 35, 20))
    assert grown.bounds(2) == Box((0, 0, 0), (25, 18, 20))
    assert Layer.open(layer.url).num_mips == 3
    assert pyramid_info(layer.url, grown.info, Vec3(2, 2, 1), 2) == grown.info
    with pytest.raises(LayerMismatchError, match="differs from a"):
        pyramid_info(layer.url, grown.info, Vec3(2, 2, 2), 1)


def test_a_sharded_pyramid_made_with_other_tasks_is_refused_naming_its_sharding():
    """Downsample again with another chunk_shape: the same factor, but the new mips' shards
    would nest in other tasks. The error said "use the same downsample factor"."""
    spec = image_spec(size=Vec3(256, 256, 32), sharding={"chunks_per_shard": 4})
    info = spec.to_info()
    made = pyramid_info("file:///x", info, Vec3(2, 2, 1), 1, task=Vec3(256, 256, 32))
    assert pyramid_info("file:///x", made, Vec3(2, 2, 1), 1, task=Vec3(256, 256, 32)) == made
    with pytest.raises(
        LayerMismatchError, match="another chunk_shape; use the chunk_shape that made it"
    ) as err:
        pyramid_info("file:///x", made, Vec3(2, 2, 1), 1, task=Vec3(128, 128, 32))
    assert "factor" not in str(err.value)
