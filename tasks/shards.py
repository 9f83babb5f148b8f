"""Neuroglancer's uint64 sharded format: the spec of hashed segment ids, and which shard holds
an id (so the merge task of that shard is the one that writes it)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification


def sharding_spec(shard_bits: int, minishard_bits: int,
                  data_encoding: Literal["raw", "gzip"]) -> dict:  # fmt: skip
    """The JSON form of a spec with murmurhash-hashed ids (even shards whatever the ids)."""
    return {"@type": "neuroglancer_uint64_sharded_v1", "preshift_bits": 0,
            "hash": "murmurhash3_x86_128", "minishard_bits": minishard_bits,
            "shard_bits": shard_bits, "minishard_index_encoding": "gzip",
            "data_encoding": data_encoding}  # fmt: skip


def shard_of(label: int, spec: ShardingSpecification) -> int:
    """The shard `label` is stored in."""
    return int(spec.compute_shard_location(label).shard_number, 16)


_C1, _C2, _C3, _C4 = (np.uint32(c) for c in (0x239B961B, 0xAB0E9789, 0x38B34AE5, 0xA1E38B93))


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _fmix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def murmurhash3_x86_128_low64(keys: np.ndarray) -> np.ndarray:
    """The low 64 bits of MurmurHash3_x86_128 (seed 0) of each uint64 key's 8 little-endian
    bytes: what Neuroglancer's sharded format hashes ids with. Written out in numpy because
    cloud-volume hashes one id at a time in Python (~18 µs each, most of a connectome's time)."""
    keys = np.asarray(keys, np.uint64).ravel()
    k1 = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)  # bytes 0-3
    k2 = (keys >> np.uint64(32)).astype(np.uint32)  # bytes 4-7
    with np.errstate(over="ignore"):
        h2 = _rotl(k2 * _C2, 16) * _C3  # the 8-byte tail: k2 into h2, k1 into h1
        h1 = _rotl(k1 * _C1, 15) * _C2
        h3 = h4 = np.zeros_like(h1)
        length = np.uint32(8)
        h1, h2, h3, h4 = h1 ^ length, h2 ^ length, h3 ^ length, h4 ^ length
        h1 = h1 + h2 + h3 + h4
        h2, h3, h4 = h2 + h1, h3 + h1, h4 + h1
        h1, h2, h3, h4 = _fmix(h1), _fmix(h2), _fmix(h3), _fmix(h4)
        h1 = h1 + h2 + h3 + h4
        h2 = h2 + h1
    return h1.astype(np.uint64) | (h2.astype(np.uint64) << np.uint64(32))


def shards_of(labels: np.ndarray, spec: ShardingSpecification) -> np.ndarray:
    """`shard_of` for an array of ids at once (int64 shard numbers)."""
    keys = np.asarray(labels, np.uint64) >> np.uint64(spec.preshift_bits)
    if spec.hash == "murmurhash3_x86_128":
        keys = murmurhash3_x86_128_low64(keys)
    shards = (keys >> np.uint64(spec.minishard_bits)) & np.uint64((1 << spec.shard_bits) - 1)
    return shards.astype(np.int64)
