"""The synapse table: one row per detected synapse, the contract between detection (which
writes it per chunk) and the outputs built from it (table, annotation layer, connectome).

Columns (all positions in nm, in the volume's physical frame = voxel × resolution):

| column | type | meaning |
| --- | --- | --- |
| synapse_id | uint64 | unique, stable under rechunking (derived from the cleft's owner voxel) |
| x, y, z | float64 | cleft centroid |
| pre_x, pre_y, pre_z | float64 | a point on the presynaptic side (line annotation start) |
| post_x, post_y, post_z | float64 | a point on the postsynaptic side (line annotation end) |
| size | int64 | cleft voxels |
| confidence | float32 | detector score in [0, 1] |
| pre_id, post_id | uint64 | segment ids of the two partners (0: none found) |
"""

from __future__ import annotations

import io

import numpy as np

from petavox.tasks.core.objects import get, list_keys
from petavox.tasks.core.storage import StorageContext

COLUMNS: dict[str, type] = {
    "synapse_id": np.uint64,
    "x": np.float64,
    "y": np.float64,
    "z": np.float64,
    "pre_x": np.float64,
    "pre_y": np.float64,
    "pre_z": np.float64,
    "post_x": np.float64,
    "post_y": np.float64,
    "post_z": np.float64,
    "size": np.int64,
    "confidence": np.float32,
    "pre_id": np.uint64,
    "post_id": np.uint64,
}


def empty() -> dict[str, np.ndarray]:
    return {name: np.zeros(0, dtype) for name, dtype in COLUMNS.items()}


def checked(table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`table` with exactly the schema's columns, each cast to its type, all of one length."""
    missing = set(COLUMNS) - set(table)
    extra = set(table) - set(COLUMNS)
    if missing or extra:
        raise ValueError(f"synapse table columns: missing {sorted(missing)}, extra {sorted(extra)}")
    out = {
        name: np.asarray(table[name]).astype(dtype, copy=False) for name, dtype in COLUMNS.items()
    }
    lengths = {len(v) for v in out.values()}
    if len(lengths) > 1:
        raise ValueError(f"synapse table columns differ in length: {sorted(lengths)}")
    return out


def columns_to_parquet(columns: dict[str, np.ndarray]) -> bytes:
    """Any named columns as Parquet (zstd); the outputs built from the table use it too."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, compression="zstd")
    return buf.getvalue()


def columns_from_parquet(data: bytes) -> dict[str, np.ndarray]:
    import pyarrow.parquet as pq

    read = pq.read_table(io.BytesIO(data))
    return {name: read.column(name).to_numpy() for name in read.column_names}


def to_parquet(table: dict[str, np.ndarray]) -> bytes:
    return columns_to_parquet(checked(table))


def from_parquet(data: bytes) -> dict[str, np.ndarray]:
    return checked(columns_from_parquet(data))


def concat(tables: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not tables:
        return empty()
    return checked({name: np.concatenate([t[name] for t in tables]) for name in COLUMNS})


def read_tables(url: str, prefix: str, context: StorageContext) -> dict[str, np.ndarray]:
    """Every table (``*.parquet``) under `prefix` of the folder `url`, in key order, in one."""
    keys = sorted(k for k in list_keys(url, prefix, context) if k.endswith(".parquet"))
    return concat([from_parquet(get(url, key, context) or b"") for key in keys])
