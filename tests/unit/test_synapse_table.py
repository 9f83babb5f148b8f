"""The synapse table contract: schema, Parquet round trip, bad tables refused."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.synapse.table import COLUMNS, checked, concat, empty, from_parquet, to_parquet


def table(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {name: rng.uniform(0, 1e4, n).astype(dtype) for name, dtype in COLUMNS.items()}
    out["synapse_id"] = rng.integers(0, 2**63, n, dtype=np.uint64) + np.uint64(2**63)
    return out


def test_parquet_round_trip_keeps_every_column_and_type():
    original = table(50, seed=1)
    back = from_parquet(to_parquet(original))
    assert list(back) == list(COLUMNS)
    for name, dtype in COLUMNS.items():
        assert back[name].dtype == dtype
        np.testing.assert_array_equal(back[name], original[name].astype(dtype))
    assert len(from_parquet(to_parquet(empty()))["synapse_id"]) == 0


def test_bad_tables_are_refused_and_pieces_concatenate():
    good = table(3, seed=2)
    with pytest.raises(ValueError, match="missing \\['pre_id'\\]"):
        checked({k: v for k, v in good.items() if k != "pre_id"})
    with pytest.raises(ValueError, match="differ in length"):
        checked({**good, "size": np.zeros(2, np.int64)})
    both = concat([good, table(4, seed=3)])
    assert len(both["x"]) == 7 and both["pre_id"].dtype == np.uint64
