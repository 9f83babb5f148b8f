"""tensorstore access to the same precomputed layers that `Layer` (cloud-volume) writes.

tensorstore reads and writes chunks from C++ threads; cloud-volume is the default path. Both
speak the same format, which the storage tests check in both directions on every backend.
"""

from __future__ import annotations

import re

import numpy as np
import tensorstore as ts

from petavox.tasks.core.errors import ChunkDataError
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext, tensorstore_kvstore
from petavox.tasks.core.transient import is_transient

_CHUNK_NAME = r"/\d+-\d+_\d+-\d+_\d+-\d+"
# the statuses tensorstore gives a chunk it cannot decode ("Error reading ...: Corrupted ...")
_BAD_DATA = re.compile(r"(FAILED_PRECONDITION|DATA_LOSS):")


def open_scale(
    url: str, mip: int = 0, context: StorageContext = StorageContext()
) -> ts.TensorStore:
    """The tensorstore of one scale of an existing layer, indexed x, y, z, channel in global
    voxel coordinates."""
    context.apply()
    spec = {
        "driver": "neuroglancer_precomputed",
        "kvstore": tensorstore_kvstore(url, context),
        "scale_index": mip,
    }
    return ts.open(spec).result()


def read(layer: Layer, box: Box, mip: int = 0) -> np.ndarray:
    """Voxels of `box`; tensorstore checks each chunk itself, and a chunk it cannot decode is
    a `ChunkDataError` naming the layer and the chunk (its key, when the message has it)."""
    store = open_scale(layer.url, mip, layer.context)
    (x0, y0, z0), (x1, y1, z1) = box.start, box.stop
    try:
        data = store[x0:x1, y0:y1, z0:z1].read().result()
    except ValueError as exc:  # tensorstore raises ValueError for every failed status
        if is_transient(exc) or not _BAD_DATA.match(str(exc)):
            raise
        found = re.search(re.escape(layer.scale(mip)["key"]) + _CHUNK_NAME, str(exc))
        key = found.group(0) if found else f"in {box}"
        raise ChunkDataError(layer.url, key, f"is truncated/corrupt: {exc}") from exc
    return data[..., 0] if data.shape[-1] == 1 else data


def write(layer: Layer, box: Box, data: np.ndarray, mip: int = 0) -> None:
    store = open_scale(layer.url, mip, layer.context)
    (x0, y0, z0), (x1, y1, z1) = box.start, box.stop
    values = data[..., np.newaxis] if data.ndim == 3 else data
    store[x0:x1, y0:y1, z0:z1].write(values).result()
