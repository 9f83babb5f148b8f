"""Sharded volume scales: shard boxes agree with the format's own arithmetic, and the shards
petavox writes read back voxel-identical through cloud-volume and tensorstore."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
from cloudvolume.datasource.precomputed.common import compressed_morton_code
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    image_shard_shape_from_spec,
)

from petavox.tasks.core import objects, tensorstore_io
from petavox.tasks.core.errors import LayerMismatchError, MisalignedWriteError
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.volume_shards import (
    VolumeSharding,
    auto_sharding,
    morton_codes,
    shard_shape_in_chunks,
)


@pytest.mark.parametrize(
    ("grid", "inner"), [((5, 3, 2), 3), ((8, 8, 8), 4), ((1, 9, 4), 5), ((16, 2, 3), 7)]
)
def test_shard_boxes_are_the_formats_shards(grid, inner):
    grid = Vec3(*grid)
    chunk = Vec3(16, 8, 4)
    positions = np.array(list(itertools.product(*map(range, grid))))
    np.testing.assert_array_equal(
        morton_codes(positions, grid), compressed_morton_code(positions, tuple(grid))
    )
    total = sum(int(np.ceil(np.log2(n))) if n > 1 else 0 for n in grid)
    spec = {**auto_sharding(grid * chunk, chunk, 1, "raw"), "preshift_bits": inner}
    spec.update(minishard_bits=0, shard_bits=max(0, total - inner))
    shape = shard_shape_in_chunks(inner, grid)
    assert tuple(shape * chunk) == tuple(image_shard_shape_from_spec(spec, grid * chunk, chunk))
    sharding = VolumeSharding(spec, chunk, Box.from_shape(grid * chunk))
    assert sharding.problem() is None
    cv_spec = ShardingSpecification.from_dict(spec)
    for box in sharding.shard_boxes(sharding.bounds):
        assert sharding.is_whole(box)
        starts = [
            Vec3(x, y, z)
            for x in range(box.start.x, box.stop.x, chunk.x)
            for y in range(box.start.y, box.stop.y, chunk.y)
            for z in range(box.start.z, box.stop.z, chunk.z)
        ]
        shards = {cv_spec.compute_shard_location(c).shard_number for c in sharding.codes(starts)}
        assert len(shards) == 1  # every chunk of the box is in one shard...
    codes = morton_codes(positions, grid)
    numbers = {cv_spec.compute_shard_location(c).shard_number for c in codes}
    assert len(numbers) == len(sharding.shard_boxes(sharding.bounds))  # ...and boxes differ


def test_hashed_or_aliased_shards_are_not_written():
    chunk, bounds = Vec3(8, 8, 8), Box.from_shape((64, 64, 64))
    spec = auto_sharding(bounds.shape, chunk, 1, "raw")
    assert VolumeSharding(spec, chunk, bounds).problem() is None
    hashed = VolumeSharding({**spec, "hash": "murmurhash3_x86_128"}, chunk, bounds)
    assert "hashed" in hashed.problem()
    short = VolumeSharding({**spec, "shard_bits": 0, "preshift_bits": 1}, chunk, bounds)
    assert "share a shard" in short.problem()


def sharded_spec(**kw) -> LayerSpec:
    base = dict(
        layer_type="image",
        dtype="uint8",
        size=Vec3(160, 128, 24),
        resolution=(8, 8, 40),
        chunk_size=Vec3(32, 32, 8),
        sharding="auto",
        shard_bytes=2**15,  # 4 chunks of 32 × 32 × 8 per shard
    )
    return LayerSpec(**{**base, **kw})


@pytest.mark.parametrize(
    ("layer_type", "dtype", "encoding"),
    [
        ("image", "uint8", "raw"),
        ("image", "uint8", "jpeg"),
        ("segmentation", "uint64", "compressed_segmentation"),
        ("segmentation", "uint32", "raw"),
    ],
)
def test_sharded_layers_read_back_through_cloudvolume_and_tensorstore(
    tmp_path, layer_type, dtype, encoding
):
    from cloudvolume import CloudVolume

    four_chunks = 2**15 * np.dtype(dtype).itemsize
    spec = sharded_spec(
        layer_type=layer_type, dtype=dtype, encoding=encoding, shard_bytes=four_chunks
    )
    layer = Layer.create(f"file://{tmp_path}/layer", spec)
    sharding = layer.sharding(0)
    assert sharding is not None and sharding.problem() is None
    assert tuple(sharding.shape) == (64, 64, 8)  # 2 bits: one to x, one to y
    rng = np.random.default_rng(1)
    data = (np.linspace(0, 200, 160)[:, None, None] + rng.integers(0, 40, (160, 128, 24))).astype(
        dtype
    )
    with objects.recording_writes() as written:
        for shard in sharding.shard_boxes(layer.bounds()):
            layer.write(shard, data[shard.slices()])
    files = sorted(os.listdir(tmp_path / "layer" / "8_8_40"))
    assert len(files) == len(written) == 3 * 2 * 3 and all(f.endswith(".shard") for f in files)
    cv = CloudVolume(f"file://{tmp_path}/layer", fill_missing=False)
    via_cv = np.asarray(cv[:, :, :])[..., 0]
    via_ts = tensorstore_io.read(layer, layer.bounds())
    ours = Layer.open(layer.url).read(layer.bounds())
    if encoding == "jpeg":
        assert np.abs(via_cv.astype(int) - data).mean() < 6  # lossy on noise
    else:
        np.testing.assert_array_equal(via_cv, data)
    np.testing.assert_array_equal(via_ts, via_cv)
    np.testing.assert_array_equal(ours, via_cv)


def test_a_write_of_part_of_a_shard_is_refused_and_writes_nothing(tmp_path):
    layer = Layer.create(f"file://{tmp_path}/layer", sharded_spec())
    with pytest.raises(MisalignedWriteError, match=r"whole shards \(shards of 64,64,8,"):
        layer.write(Box((0, 0, 0), (32, 32, 8)), np.zeros((32, 32, 8), np.uint8))
    assert os.listdir(tmp_path / "layer") == ["info"]
    foreign = {**layer.info}
    foreign["scales"] = [{**layer.scale(0), "sharding": {**layer.scale(0)["sharding"]}}]
    foreign["scales"][0]["sharding"]["hash"] = "murmurhash3_x86_128"
    with pytest.raises(LayerMismatchError, match="cannot write: its chunks are hashed"):
        Layer(layer.url, foreign).write(layer.bounds(), np.zeros((160, 128, 24), np.uint8))
