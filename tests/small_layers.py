"""Small precomputed layers for tests: created on file://, optionally filled with one value."""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec


def image_layer(
    url: str,
    size: tuple[int, int, int] = (64, 32, 16),
    chunk: tuple[int, int, int] = (32, 32, 16),
    fill: int | None = None,
) -> Layer:
    """A uint8 raw image layer at 8×8×40 nm; `fill` writes that value everywhere."""
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3(*size),
        resolution=(8, 8, 40),
        chunk_size=Vec3(*chunk),
    )
    layer = Layer.create(url, spec)
    if fill is not None:
        layer.write(layer.bounds(), np.full(size, fill, np.uint8))
    return layer
