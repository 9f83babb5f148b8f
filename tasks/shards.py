"""Neuroglancer's uint64 sharded format: the spec of hashed segment ids, and which shard holds
an id (so the merge task of that shard is the one that writes it)."""

from __future__ import annotations

from typing import Literal

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
