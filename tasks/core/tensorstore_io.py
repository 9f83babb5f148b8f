"""tensorstore access to the same precomputed layers that `Layer` (cloud-volume) writes.

tensorstore reads and writes chunks from C++ threads; cloud-volume is the default path. Both
speak the same format, which the storage tests check in both directions on every backend.
"""

from __future__ import annotations

import numpy as np
import tensorstore as ts

from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext, tensorstore_kvstore


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
    store = open_scale(layer.url, mip, layer.context)
    (x0, y0, z0), (x1, y1, z1) = box.start, box.stop
    data = store[x0:x1, y0:y1, z0:z1].read().result()
    return data[..., 0] if data.shape[-1] == 1 else data


def write(layer: Layer, box: Box, data: np.ndarray, mip: int = 0) -> None:
    store = open_scale(layer.url, mip, layer.context)
    (x0, y0, z0), (x1, y1, z1) = box.start, box.stop
    values = data[..., np.newaxis] if data.ndim == 3 else data
    store[x0:x1, y0:y1, z0:z1].write(values).result()
