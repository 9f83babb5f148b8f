"""Neuroglancer precomputed layers: create with an info, read any box, write whole chunks only.

cloud-volume's codecs encode and decode the chunks (raw, jpeg, compressed_segmentation). Reads
fetch each chunk by its key and check it before decoding (`chunk_io`, `chunk_checks`); writes
to file:// are encoded here and renamed into place, writes to s3:// and gs:// go through
cloud-volume's upload. That is always used with ``parallel=1``: its multi-process upload path
silently writes wrong data (cloud-volume 12.15); petavox parallelises with Ray tasks instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from petavox.tasks.core import chunk_io, foreign_volumes, objects, shard_reads
from petavox.tasks.core.errors import (
    LayerMismatchError,
    LayerNotFoundError,
    MisalignedWriteError,
)
from petavox.tasks.core.foreign_volumes import FOREIGN, check_writable
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.storage import StorageContext, local_path, normalize_url, scheme_of
from petavox.tasks.core.volume_shards import (
    AUTO_SHARD_BYTES,
    VolumeSharding,
    nested_sharding,
    sharding_for,
)

LayerType = Literal["image", "segmentation"]
Encoding = Literal["raw", "jpeg", "compressed_segmentation"]
#: see `volume_shards.sharding_for`
Sharding = Literal["none", "auto", "default"] | dict

SEGMENTATION_DTYPES = ("uint8", "uint16", "uint32", "uint64")
IMAGE_DTYPES = ("uint8", "uint16", "uint32", "uint64", "float32")


def scale_key(resolution: tuple[float, float, float]) -> str:
    return "_".join(str(int(r)) if float(r).is_integer() else str(r) for r in resolution)


@dataclass(frozen=True, kw_only=True)
class LayerSpec:
    """What a new layer holds. Sizes and offsets in voxels (x, y, z), resolution in nm."""

    layer_type: LayerType
    dtype: str
    size: Vec3
    resolution: tuple[float, float, float]
    chunk_size: Vec3 = Vec3(64, 64, 64)
    voxel_offset: Vec3 = Vec3(0, 0, 0)
    encoding: Encoding = "raw"
    num_channels: int = 1
    jpeg_quality: int = 90
    sharding: Sharding = "none"
    shard_bytes: int = AUTO_SHARD_BYTES
    compress_shards: bool = True  # gzip chunks inside shards (off on file://, see planned_info)
    # extra top-level info keys (e.g. "petavox_model"); viewers ignore keys they do not know
    extra: tuple[tuple[str, Any], ...] = ()

    def validate(self) -> None:
        dtype = np.dtype(self.dtype).name
        allowed = SEGMENTATION_DTYPES if self.layer_type == "segmentation" else IMAGE_DTYPES
        if dtype not in allowed:
            raise LayerMismatchError(
                f"a {self.layer_type} layer cannot hold {dtype}; use one of {', '.join(allowed)}"
            )
        if self.encoding == "compressed_segmentation" and dtype not in ("uint32", "uint64"):
            raise LayerMismatchError(
                f"compressed_segmentation encodes uint32 or uint64 only, not {dtype}; "
                "use encoding raw or convert the labels"
            )
        if self.encoding == "jpeg" and (dtype != "uint8" or self.num_channels not in (1, 3)):
            raise LayerMismatchError(
                "jpeg encodes uint8 images with 1 or 3 channels only; use encoding raw"
            )
        if any(s <= 0 for s in self.size) or any(c <= 0 for c in self.chunk_size):
            raise LayerMismatchError(
                f"layer size {self.size} and chunk size {self.chunk_size} must be positive"
            )

    def sharding_spec(self) -> dict | None:
        """The scale's sharding spec (None: unsharded), checked to be writable."""
        width = np.dtype(self.dtype).itemsize * self.num_channels
        bounds = Box.from_shape(self.size, self.voxel_offset)
        return sharding_for(
            self.sharding,
            bounds,
            self.chunk_size,
            width,
            self.encoding,
            self.shard_bytes,
            compress=self.compress_shards,
        )

    def to_info(self) -> dict[str, Any]:
        self.validate()
        scale: dict[str, Any] = {
            "key": scale_key(self.resolution),
            "size": list(self.size),
            "voxel_offset": list(self.voxel_offset),
            "resolution": list(self.resolution),
            "chunk_sizes": [list(self.chunk_size)],
            "encoding": self.encoding,
        }
        if self.encoding == "compressed_segmentation":
            scale["compressed_segmentation_block_size"] = [8, 8, 8]
        if self.encoding == "jpeg":
            scale["jpeg_quality"] = self.jpeg_quality
        sharding = self.sharding_spec()
        if sharding is not None:
            scale["sharding"] = sharding
        return {
            "@type": "neuroglancer_multiscale_volume",
            "type": self.layer_type,
            "data_type": np.dtype(self.dtype).name,
            "num_channels": self.num_channels,
            "scales": [scale],
            **dict(self.extra),
        }


def _scales_compatible(found: dict, wanted: dict) -> bool:
    keys = ("size", "voxel_offset", "resolution", "chunk_sizes", "encoding", "sharding")
    return all(found.get(k) == wanted.get(k) for k in keys)


@dataclass
class Layer:
    """An open precomputed layer. Picklable: the info travels with it, clients are per process."""

    url: str
    info: dict[str, Any]
    context: StorageContext = StorageContext()
    _clients: dict = field(default_factory=dict, repr=False, compare=False)

    # ---- opening and creating -------------------------------------------------------------
    @classmethod
    def open(cls, url: str, context: StorageContext = StorageContext()) -> Layer:
        url = normalize_url(url)
        info = read_info(url, context)
        if info is None:
            raise LayerNotFoundError(
                f"no precomputed layer at {url} (its info file is missing), nor Zarr or N5 "
                "metadata; check the URL, or run the stage that writes this layer first"
            )
        return cls(url, info, context)

    @classmethod
    def create(cls, url: str, spec: LayerSpec, context: StorageContext = StorageContext()) -> Layer:
        """Create the layer, or open it if one with the same geometry and type already exists."""
        url = normalize_url(url)
        check_writable(url)
        info = planned_info(url, spec, read_info(url, context))
        write_info(url, info, context)
        return cls(url, info, context)

    def __getstate__(self) -> dict:
        return {"url": self.url, "info": self.info, "context": self.context}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._clients = {}

    # ---- properties -----------------------------------------------------------------------
    @property
    def layer_type(self) -> str:
        return self.info["type"]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.info["data_type"])

    @property
    def num_channels(self) -> int:
        return int(self.info.get("num_channels", 1))

    @property
    def num_mips(self) -> int:
        return len(self.info["scales"])

    def scale(self, mip: int = 0) -> dict[str, Any]:
        if not 0 <= mip < self.num_mips:
            raise LayerMismatchError(
                f"layer {self.url} has mips 0..{self.num_mips - 1}, not mip {mip}"
            )
        return self.info["scales"][mip]

    def bounds(self, mip: int = 0) -> Box:
        s = self.scale(mip)
        return Box.from_shape(s["size"], s["voxel_offset"])

    def chunk_size(self, mip: int = 0) -> Vec3:
        return Vec3.of(self.scale(mip)["chunk_sizes"][0])

    def resolution(self, mip: int = 0) -> tuple[float, float, float]:
        r = self.scale(mip)["resolution"]
        return (r[0], r[1], r[2])

    # ---- pyramid --------------------------------------------------------------------------
    def with_scales(self, factor: Vec3, count: int) -> Layer:
        """Make sure mips 1..count exist (see `pyramid_info`); writes the info only if it grew."""
        info = pyramid_info(self.url, self.info, factor, count)
        if info != self.info:
            check_writable(self.url, self.info)
            write_info(self.url, info, self.context)
        return Layer(self.url, info, self.context)

    # ---- I/O ------------------------------------------------------------------------------
    def _client(self, mip: int, fill_missing: bool):
        key = (mip, fill_missing)
        if key not in self._clients:
            self.context.apply()
            from cloudvolume import CloudVolume  # heavy import, only where I/O happens

            compress = None if scheme_of(self.url) != "file" else False
            self._clients[key] = CloudVolume(
                self.url,
                mip=mip,
                info=self.info,
                provenance={},  # not fetched: a GET per task on object stores, never used
                parallel=1,
                progress=False,
                bounded=False,
                fill_missing=fill_missing,
                compress=compress,
                cache=False,
                lru_bytes=0,
                non_aligned_writes=False,
                delete_black_uploads=False,
            )
        return self._clients[key]

    def storage_chunks(self, box: Box, mip: int = 0) -> list[tuple[str, Box]]:
        """Object key and box of each storage chunk that `box` touches (inside the bounds)."""
        key = self.scale(mip)["key"]
        return [
            (f"{key}/{c.start.x}-{c.stop.x}_{c.start.y}-{c.stop.y}_{c.start.z}-{c.stop.z}", c)
            for c in box.cells(self.chunk_size(mip), self.bounds(mip))
        ]

    def read(self, box: Box, mip: int = 0, fill_missing: bool = False) -> np.ndarray:
        """Voxels of `box` as an x,y,z (or x,y,z,c) array; zeros outside the layer bounds.

        A missing chunk inside the bounds is an error unless `fill_missing`; a truncated or
        corrupt chunk always is, found before it is decoded (`chunk_checks`). Errors are
        `ChunkDataError`s naming the layer and the chunk.
        """
        if FOREIGN in self.info:
            arr = foreign_volumes.read_box(self, box, mip)
        elif "sharding" in self.scale(mip):
            arr = shard_reads.read_box(self, box, mip, fill_missing)
        else:
            arr = chunk_io.read_box(self, box, mip, fill_missing)
        return arr[..., 0] if self.num_channels == 1 else arr

    def write(self, box: Box, data: np.ndarray, mip: int = 0) -> None:
        """Write whole storage chunks (whole shards of a sharded scale); anything else is a
        `MisalignedWriteError`."""
        check_writable(self.url, self.info)
        bounds, sharding = self.bounds(mip), self.sharding(mip)
        if sharding is not None:
            sharding.check_writable(f"{self.url} mip {mip}")
        unit, what = self.write_unit(mip), "shards" if sharding else "storage chunks"
        if not box.is_aligned(unit, bounds.start, bounds):
            raise MisalignedWriteError(
                f"write of {box} to {self.url} mip {mip} does not cover whole {what} "
                f"({what} of {unit}, offset {bounds.start}, bounds {bounds})"
            )
        expected = tuple(box.shape) + ((self.num_channels,) if self.num_channels > 1 else ())
        if data.shape != expected:
            raise ValueError(f"data of shape {data.shape} written to {box} (needs {expected})")
        if data.dtype != self.dtype:
            raise LayerMismatchError(
                f"cannot write {data.dtype} data to {self.url}, a {self.dtype} layer"
            )
        params = self._client(mip, False).meta.compression_params(mip)
        if sharding is not None:
            chunk_io.write_shards(self, box, data, mip, params, sharding)
        else:
            chunk_io.write_chunks(self, box, data, mip, params)

    def sharding(self, mip: int = 0) -> VolumeSharding | None:
        """The scale's sharding, or None for an unsharded scale (one object per chunk)."""
        scale = self.scale(mip)
        return VolumeSharding.of_scale(scale) if "sharding" in scale else None

    def write_unit(self, mip: int = 0) -> Vec3:
        """The smallest box a write may cover: a shard of a sharded scale, else a chunk."""
        sharding = self.sharding(mip)
        return sharding.shape if sharding is not None else self.chunk_size(mip)


def planned_info(url: str, spec: LayerSpec, found: dict | None) -> dict:
    """The info a new layer gets, or the existing one when it is compatible; never writes.

    With `spec.sharding` "default", an existing layer's sharding (or its absence) is kept. On
    file:// chunks are stored uncompressed inside shards, as they are outside them (Layer's
    file:// client neither compresses nor inflates)."""
    spec = replace(spec, compress_shards=local_path(url) is None)
    wanted = spec.to_info()
    if found is None:
        return wanted
    check_writable(url, found)
    if spec.sharding == "default" and found.get("scales"):
        wanted["scales"][0].pop("sharding", None)
        if "sharding" in found["scales"][0]:
            wanted["scales"][0]["sharding"] = found["scales"][0]["sharding"]
    same = (
        found.get("type") == wanted["type"]
        and found.get("data_type") == wanted["data_type"]
        and found.get("num_channels") == wanted["num_channels"]
        and bool(found.get("scales"))
        and _scales_compatible(found["scales"][0], wanted["scales"][0])
    )
    if not same:
        raise LayerMismatchError(
            f"a different layer already exists at {url}: found {_describe(found)}, "
            f"this stage writes {_describe(wanted)}; choose another output or delete it"
        )
    return {**found, **dict(spec.extra)}


def pyramid_info(url: str, info: dict, factor: Vec3, count: int, task: Vec3 | None = None) -> dict:
    """`info` with mips 1..count, each `factor` coarser than the one before; never writes.

    When mip 0 is sharded, each new mip is too, with its own spec whose shards nest in the
    writing tasks (`task`: their shape in mip-0 voxels; see `volume_shards.nested_sharding`);
    otherwise new mips are unsharded. Existing mips must be exactly those of the same pyramid
    (so a rerun changes nothing); anything else is a `LayerMismatchError`.
    """
    info = json.loads(json.dumps(info))
    base = info["scales"][0]
    for mip in range(1, count + 1):
        f = factor**mip
        box = Box.from_shape(base["size"], base["voxel_offset"]).scale_down(f)
        res = [r * k for r, k in zip(base["resolution"], f)]
        scale = {
            **{k: v for k, v in base.items() if k != "sharding"},  # each mip its own, or none
            "key": scale_key((res[0], res[1], res[2])),
            "size": list(box.shape),
            "voxel_offset": list(box.start),
            "resolution": res,
        }
        if "sharding" in base and task is not None:
            width = np.dtype(info["data_type"]).itemsize * int(info["num_channels"])
            encoding = base["sharding"].get("data_encoding", "gzip")
            scale["sharding"] = nested_sharding(scale, width, task // f, encoding)
        if mip < len(info["scales"]):
            have = info["scales"][mip]
            if not _scales_compatible(have, scale) or have["key"] != scale["key"]:
                why = f"that differs from a {tuple(factor)} pyramid; use the same downsample factor"
                if _scales_compatible({**have, "sharding": 0}, {**scale, "sharding": 0}):
                    why = (
                        "sharded for tasks of another chunk_shape; use the chunk_shape that made it"
                    )
                raise LayerMismatchError(
                    f"layer {url} already has a mip {mip} ({have['key']}, size {have['size']}) "
                    f"{why} or write to a new layer"
                )
        else:
            info["scales"].append(scale)
    return info


def _describe(info: dict) -> str:
    s = (info.get("scales") or [{}])[0]
    return (
        f"{info.get('type')} {info.get('data_type')} x{info.get('num_channels')} "
        f"size {s.get('size')} offset {s.get('voxel_offset')} resolution {s.get('resolution')} "
        f"chunks {s.get('chunk_sizes')} {s.get('encoding')}"
        + (" sharded" if "sharding" in s else "")
    )


def read_info(url: str, context: StorageContext = StorageContext()) -> dict | None:
    """The layer's info, or None when there is nothing at `url`; a Zarr, N5 or OME-Zarr volume
    gets the one `foreign_volumes.foreign_info` makes from its metadata."""
    raw = foreign_volumes.info_object(url, context)
    if raw is None:
        return foreign_volumes.foreign_info(url, context)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LayerMismatchError(f"the info file of {url} is not valid JSON ({exc})") from None


def write_info(url: str, info: dict, context: StorageContext = StorageContext()) -> None:
    objects.put_json(url, "info", info, context)
