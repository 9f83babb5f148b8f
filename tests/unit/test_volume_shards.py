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
from petavox.tasks.core.errors import ChunkDataError, LayerMismatchError, MisalignedWriteError
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.volume_shards import (
    VolumeSharding,
    auto_sharding,
    morton_codes,
    shard_shape,
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
    shape = shard_shape(inner, grid * chunk, chunk)
    assert tuple(shape) == tuple(image_shard_shape_from_spec(spec, grid * chunk, chunk))
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
    assert sharding.spec["data_encoding"] == "raw"  # on file:// chunks are never gzipped
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


@pytest.fixture
def written(tmp_path):
    """A sharded uint64 segmentation layer (4 chunks per shard) and its voxels."""
    spec = sharded_spec(
        layer_type="segmentation",
        dtype="uint64",
        encoding="compressed_segmentation",
        shard_bytes=4 * 32 * 32 * 8 * 8,
    )
    layer = Layer.create(f"file://{tmp_path}/seg", spec)
    data = np.random.default_rng(2).integers(0, 5, (160, 128, 24)).astype(np.uint64) + 2**40
    for shard in layer.sharding(0).shard_boxes(layer.bounds()):
        layer.write(shard, data[shard.slices()])
    return layer, data, tmp_path / "seg" / "8_8_40"


def test_reads_of_a_few_chunks_use_byte_ranges_and_of_most_the_whole_file(written, monkeypatch):
    from petavox.tasks.core import shard_reads

    layer, data, _ = written
    used = []
    for name in ("_whole_file", "_ranges"):
        real = getattr(shard_reads, name)
        monkeypatch.setattr(
            shard_reads, name, lambda *a, _real=real, _n=name: used.append(_n) or _real(*a)
        )
    halo = Box((60, 0, 0), (70, 32, 8))  # across a shard face: 1 chunk of each of 2 shards
    np.testing.assert_array_equal(layer.read(halo), data[halo.slices()])
    assert set(used) == {"_ranges"}
    used.clear()
    box = Box((0, 0, 0), (64, 64, 8))  # one whole shard
    np.testing.assert_array_equal(layer.read(box), data[box.slices()])
    assert used == ["_whole_file"]


@pytest.mark.parametrize("whole", [True, False])
def test_truncated_and_overwritten_shards_are_named_never_decoded(written, monkeypatch, whole):
    from petavox.tasks.core import shard_reads

    monkeypatch.setattr(shard_reads, "WHOLE_SHARE", 0.0 if whole else 2.0)
    layer, _, folder = written
    box = Box((0, 0, 0), (64, 64, 8))
    first = folder / "00.shard" if (folder / "00.shard").exists() else sorted(folder.iterdir())[0]
    content = first.read_bytes()
    first.write_bytes(content[: len(content) // 2])
    with pytest.raises(ChunkDataError, match=rf"{first.name} is truncated/corrupt: .*outside"):
        layer.read(box)
    first.write_bytes(b"\xff" * 16 + content[16:])  # a shard index pointing anywhere
    with pytest.raises(ChunkDataError, match=rf"{first.name} is truncated/corrupt"):
        layer.read(box)
    garbled = bytearray(content)
    garbled[16:200] = bytes(184)  # the first chunk's gzip stream zeroed
    first.write_bytes(bytes(garbled))
    with pytest.raises(ChunkDataError, match=r"\(chunk 0-32_0-32_0-8\) is truncated/corrupt"):
        layer.read(box)
    first.unlink()
    with pytest.raises(ChunkDataError, match=rf"{first.name} \(chunk 0-32_0-32_0-8\) is missing"):
        layer.read(box)
    assert not layer.read(box, fill_missing=True).any()


def test_the_default_shards_big_layers_and_keeps_what_a_layer_has(tmp_path):
    from petavox.tasks.core.layers import planned_info
    from petavox.tasks.core.volume_shards import AUTO_SHARDING_CHUNKS

    chunk = Vec3(64, 64, 64)
    small = LayerSpec(
        layer_type="image", dtype="uint8", size=chunk * 8, resolution=(8, 8, 8), sharding="default"
    )
    assert "sharding" not in small.to_info()["scales"][0]
    side = round((AUTO_SHARDING_CHUNKS * 2) ** (1 / 3)) + 1
    big = LayerSpec(**{**small.__dict__, "size": chunk * side})
    spec = big.to_info()["scales"][0]["sharding"]
    assert VolumeSharding(spec, chunk, Box.from_shape(big.size)).problem() is None
    assert 2 ** (spec["preshift_bits"] + spec["minishard_bits"]) == 1024  # 256 MiB of uint8
    # an existing layer keeps its own choice, either way
    unsharded = LayerSpec(**{**big.__dict__, "sharding": "none"}).to_info()
    assert planned_info("file:///x", big, unsharded) == unsharded
    sharded = LayerSpec(**{**small.__dict__, "sharding": {"chunks_per_shard": 8}}).to_info()
    assert planned_info("file:///x", small, sharded) == sharded
