"""`ingest` sources that are volumes `Layer.open` reads: Zarr v2/v3, N5, OME-Zarr and precomputed,
local, in object storage or over http(s) (see `foreign_volumes`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .foreign_volumes import METADATA, foreign_info
from .geometry import Box, Vec3
from .layers import Layer
from .sources import SourceError, VolumeSource
from .storage import StorageContext, normalize_url, split_volume_url


class LayerSource(VolumeSource):
    """A volume read through `Layer` (mip 0; source voxel 0 is the layer's first voxel). Any
    integer or float dtype is read: ingest converts it to the layer's, checking the values."""

    def __init__(self, url: str, context: StorageContext) -> None:
        self.url = normalize_url(url)
        try:
            info = foreign_info(self.url, context, strict=False)
        except ValueError as exc:  # VolumeFormatError is one
            raise SourceError(f"source {exc}") from None
        if info is not None and info.get("num_channels", 1) != 1:
            raise SourceError(
                f"source {url} has {info['num_channels']} channels; ingest copies one: choose "
                "it with #channel=N after the URL"
            )
        self.layer = Layer(self.url, info, context) if info else Layer.open(self.url, context)
        self.shape, self.dtype = self.layer.bounds(0).shape, self.layer.dtype

    @property
    def resolution(self) -> tuple[float, float, float]:
        return self.layer.resolution(0)

    @property
    def voxel_offset(self) -> Vec3:
        return self.layer.bounds(0).start

    def _read(self, box: Box) -> np.ndarray:
        return np.asfortranarray(self.layer.read(box.translate(self.voxel_offset), 0))


def is_volume(spec: str, path: Path) -> bool:
    """A URL (other than file://), a format prefix, '#' options, or a folder with a layer's
    or a Zarr/N5 volume's metadata."""
    fmt, store, fragment = split_volume_url(spec)
    if fmt or fragment or ("://" in store and not store.startswith("file://")):
        return True
    return path.is_dir() and any((path / name).is_file() for name in ("info", *METADATA))
