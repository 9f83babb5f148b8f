"""Shard numbers of segment ids, vectorised, against cloud-volume's reference."""

from __future__ import annotations

import numpy as np
import pytest
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

from petavox.tasks.shards import shard_of, shards_of


@pytest.mark.parametrize(("hash_", "preshift", "shard_bits", "minishard_bits"),
                         [("murmurhash3_x86_128", 0, 4, 6), ("murmurhash3_x86_128", 3, 10, 2),
                          ("murmurhash3_x86_128", 0, 0, 5), ("identity", 2, 5, 3)])  # fmt: skip
def test_vectorised_shards_equal_cloud_volumes(hash_, preshift, shard_bits, minishard_bits):
    spec = ShardingSpecification(type="neuroglancer_uint64_sharded_v1", preshift_bits=preshift,
                                 hash=hash_, minishard_bits=minishard_bits,
                                 shard_bits=shard_bits)  # fmt: skip
    rng = np.random.default_rng(shard_bits)
    ids = np.concatenate([rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True),
                          np.arange(0, 300, dtype=np.uint64),
                          np.array([2**32 - 1, 2**32, 2**63, 2**64 - 1], np.uint64)])  # fmt: skip
    assert shards_of(ids, spec).tolist() == [shard_of(int(i), spec) for i in ids]
