"""Shard numbers of segment ids and the numpy shard writer, against cloud-volume's reference."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from cloudvolume.cacheservice import CacheService
from cloudvolume.cloudvolume import SharedConfiguration
from cloudvolume.datasource.precomputed.sharding import (
    ShardingSpecification,
    ShardReader,
    synthesize_shard_files,
)

from petavox.tasks.core.shards import gather, shard_files, shard_of, shards_of


@pytest.mark.parametrize(
    ("hash_", "preshift", "shard_bits", "minishard_bits"),
    [
        ("murmurhash3_x86_128", 0, 4, 6),
        ("murmurhash3_x86_128", 3, 10, 2),
        ("murmurhash3_x86_128", 0, 0, 5),
        ("identity", 2, 5, 3),
    ],
)
def test_vectorised_shards_equal_cloud_volumes(hash_, preshift, shard_bits, minishard_bits):
    spec = ShardingSpecification(
        type="neuroglancer_uint64_sharded_v1",
        preshift_bits=preshift,
        hash=hash_,
        minishard_bits=minishard_bits,
        shard_bits=shard_bits,
    )
    rng = np.random.default_rng(shard_bits)
    ids = np.concatenate(
        [
            rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True),
            np.arange(0, 300, dtype=np.uint64),
            np.array([2**32 - 1, 2**32, 2**63, 2**64 - 1], np.uint64),
        ]
    )
    assert shards_of(ids, spec).tolist() == [shard_of(int(i), spec) for i in ids]


# (hash, preshift_bits, shard_bits, minishard_bits, minishard_index_encoding, data_encoding)
WRITER_SPECS = [
    ("murmurhash3_x86_128", 0, 2, 3, "gzip", "gzip"),
    ("murmurhash3_x86_128", 3, 0, 0, "gzip", "raw"),
    ("murmurhash3_x86_128", 0, 3, 6, "raw", "gzip"),
    ("identity", 2, 3, 0, "raw", "raw"),
    ("identity", 0, 1, 4, "gzip", "gzip"),
    ("identity", 5, 0, 2, "raw", "raw"),
]


def _spec(hash_, preshift, shard_bits, minishard_bits, index_encoding, data_encoding):
    return ShardingSpecification(
        type="neuroglancer_uint64_sharded_v1",
        preshift_bits=preshift,
        hash=hash_,
        minishard_bits=minishard_bits,
        shard_bits=shard_bits,
        minishard_index_encoding=index_encoding,
        data_encoding=data_encoding,
    )


def _chunks(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct keys (random, small, consecutive: shared minishards and preshifted neighbours),
    chunks of 0 to 60 bytes (some empty) in one buffer, in no particular order."""
    rng = np.random.default_rng(seed)
    keys = np.concatenate(
        [
            rng.integers(1, 2**64 - 1, 600, dtype=np.uint64, endpoint=True),
            np.arange(0, 200, dtype=np.uint64),
            np.array([2**32, 2**63, 2**64 - 1], np.uint64),
        ]
    )
    keys = rng.permutation(np.unique(keys))
    sizes = rng.integers(0, 61, len(keys))
    sizes[::50] = 0
    offsets = np.r_[0, np.cumsum(sizes)]
    data = rng.integers(0, 8, int(offsets[-1]), dtype=np.uint8)  # compressible
    return keys, data, offsets


def _reader(folder, spec) -> ShardReader:
    settings = dict(
        cdn_cache=False,
        compress=None,
        compress_level=None,
        green=False,
        mip=0,
        parallel=1,
        progress=False,
        secrets=None,
        spatial_index_db=None,
        cache_locking=False,
        codec_threads=1,
    )
    config = SharedConfiguration(**settings)
    url = folder.as_uri()
    cache = CacheService(url, enabled=False, config=config, meta=SimpleNamespace(cloudpath=url))
    return ShardReader(url, cache, spec)


@pytest.mark.parametrize("params", WRITER_SPECS)
def test_shard_files_are_cloud_volumes_bytes(params):
    spec = _spec(*params)
    keys, data, offsets = _chunks(seed=params[2] + 8 * params[3])
    got = shard_files(spec, keys, data, offsets)
    # cloud-volume writes minishards in the order it first meets them: give it ours
    order = np.lexsort(
        (
            keys,
            [spec.compute_shard_location(int(k)).minishard_number for k in keys],
            shards_of(keys, spec),
        )
    )
    chunks = {int(keys[i]): data[offsets[i] : offsets[i + 1]].tobytes() for i in order}
    want = synthesize_shard_files(spec, chunks)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    assert shard_files(spec, keys[:0], b"", [0]) == {}
    pieces = [data[offsets[i] : offsets[i + 1]].tobytes() for i in range(len(keys))]
    assert shard_files(spec, keys, pieces) == got  # one piece per key: the same files


@pytest.mark.parametrize("params", WRITER_SPECS)
def test_cloud_volumes_shard_reader_reads_back_every_chunk(params, tmp_path):
    spec = _spec(*params)
    keys, data, offsets = _chunks(seed=7)
    files = shard_files(spec, keys, data.tobytes(), offsets)
    assert len(files) == len(set(shards_of(keys, spec).tolist()))
    for name, blob in files.items():
        (tmp_path / name).write_bytes(blob)
    want = {int(k): data[offsets[i] : offsets[i + 1]].tobytes() for i, k in enumerate(keys)}
    reader = _reader(tmp_path, spec)
    read = reader.get_data(list(want))  # an empty chunk comes back as b"" or not at all
    assert {k: v for k, v in read.items() if v} == {k: v for k, v in want.items() if v}
    assert set(read) <= set(want) and all(read.get(k, b"") == b"" for k in want if not want[k])
    disassembled = {}
    for blob in files.values():
        disassembled.update(reader.disassemble_shard(blob))
    assert {int(k): v for k, v in disassembled.items()} == want


def test_shard_files_refuses_duplicate_keys_and_bad_offsets():
    spec = _spec(*WRITER_SPECS[0])
    with pytest.raises(ValueError, match="duplicate"):
        shard_files(spec, np.array([5, 5], np.uint64), b"ab", [0, 1, 2])
    with pytest.raises(ValueError, match="offsets"):
        shard_files(spec, np.array([5, 6], np.uint64), b"ab", [0, 2])


@pytest.mark.parametrize("piece", [1, 5000])  # the byte index and the slice copy
def test_gather_concatenates_byte_ranges_in_order(piece):
    data = (np.arange(100 * piece) % 251).astype(np.uint8)
    starts = np.array([40, 0, 7, 90, 3]) * piece
    sizes = np.array([3, 0, 5, 10, 1]) * piece
    want = np.concatenate([data[a : a + n] for a, n in zip(starts, sizes)])
    np.testing.assert_array_equal(gather(data, starts, sizes), want)
    assert gather(data, starts[:0], sizes[:0]).size == 0
