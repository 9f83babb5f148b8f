"""Export of a layer's pyramid, one task per box of whole output chunks (shards of `zarr3`):
to OME-Zarr through tensorstore's zarr / zarr3 drivers, or to a precomputed copy.

Driver-side steps of a Zarr export (no Ray here either): `prepare_store` writes a level's
array metadata before that level's tasks run; `finish_store` writes the group with its NGFF
attributes once every level is written, so a reader never takes a half-written pyramid for a
whole one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import tensorstore as ts

from petavox.tasks.core import objects
from petavox.tasks.core.errors import LayerMismatchError
from petavox.tasks.core.geometry import Box, Chunk, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import (
    StorageContext,
    join_url,
    local_path,
    tensorstore_kvstore,
)
from petavox.tasks.image.ngff import ZarrFormat, object_keys, to_zarr

DRIVER: dict[str, str] = {"ome-zarr": "zarr", "zarr3": "zarr3"}
#: the objects that say what a store holds, and what it is called in messages
KIND_MARKERS: tuple[tuple[str, str], ...] = (
    ("info", "precomputed"),
    ("zarr.json", "Zarr v3"),
    (".zgroup", "Zarr v2"),
    (".zarray", "Zarr v2"),
    ("attributes.json", "N5"),
)
KIND_OF_FORMAT: dict[str, str] = {
    "precomputed": "precomputed",
    "ome-zarr": "Zarr v2",
    "zarr3": "Zarr v3",
}


def store_kind(url: str, context: StorageContext) -> str | None:
    """What the store at `url` is (see `KIND_MARKERS`), or None when it holds none of them."""
    for key, kind in KIND_MARKERS:
        if objects.get(url, key, context) is not None:
            return kind
    return None


def level_spec(url: str, mip: int, fmt: ZarrFormat, context: StorageContext) -> dict[str, Any]:
    """The tensorstore spec of level `mip` of the store at `url` (metadata not included)."""
    kvstore = tensorstore_kvstore(join_url(url, str(mip)), context)
    return {"driver": DRIVER[fmt], "kvstore": kvstore}


def check_level(url: str, mip: int, fmt: ZarrFormat, metadata: dict, context: StorageContext):
    """Refuse (before any work) an existing level whose array differs from the one planned."""
    context.apply()
    spec = {**level_spec(url, mip, fmt, context), "metadata": metadata}
    try:
        ts.open(spec, open=True).result()
    except ValueError as exc:
        if "NOT_FOUND" in str(exc):
            return
        raise LayerMismatchError(
            f"{url}/{mip} holds an array that differs from level {mip} of this export "
            f"({exc}); choose another output or delete it"
        ) from None


def group_document(fmt: ZarrFormat, attributes: dict[str, Any]) -> dict[str, dict]:
    """The group's metadata objects by key: ``.zgroup`` and ``.zattrs`` (v2) or zarr.json."""
    if fmt == "ome-zarr":
        return {".zgroup": {"zarr_format": 2}, ".zattrs": attributes}
    return {"zarr.json": {"zarr_format": 3, "node_type": "group", "attributes": attributes}}


def _current(url: str, keys: list[str], context: StorageContext) -> dict[str, Any]:
    found = {}
    for key in keys:
        data = objects.get(url, key, context)
        found[key] = json.loads(data) if data else None
    return found


def prepare_store(
    url: str,
    mip: int,
    fmt: ZarrFormat,
    metadata: dict,
    final: dict[str, Any],
    context: StorageContext,
) -> list[str]:
    """Before level `mip`'s tasks: the level's array metadata (created, or opened when it is
    there and the same). A group that holds other than the `final` attributes (the pyramid of
    an earlier export) loses its metadata first: until `finish_store` the store has no group,
    so no reader (petavox's `Layer` included) takes half-written levels for a pyramid. A
    group with exactly the final ones stays: a resume recomputes lost chunks of its data."""
    done = group_document(fmt, final)
    found = _current(url, list(done), context)
    context.apply()
    if found != done and any(v is not None for v in found.values()):
        kvstore = ts.KvStore.open(tensorstore_kvstore(url, context)).result()
        for key in done:
            kvstore.delete_range(ts.KvStore.KeyRange(key, key + "\x00")).result()
    spec = {**level_spec(url, mip, fmt, context), "metadata": metadata}
    ts.open(spec, create=True, open=True).result()
    return []


def finish_store(url: str, fmt: ZarrFormat, final: dict[str, Any], context: StorageContext):
    """After the last level: the NGFF attributes, which tell readers the pyramid is there."""
    for key, value in group_document(fmt, final).items():
        objects.put_json(url, key, value, context)


def stored_sizes(url: str, keys: list[str], context: StorageContext) -> dict[str, int]:
    """Stored size of each of `keys` that exists (a chunk equal to the fill value is not
    stored): a stat on file://, a HEAD per object elsewhere."""
    path = local_path(url)
    if path is not None:
        files = {key: os.path.join(path, key) for key in keys}
        return {key: os.stat(f).st_size for key, f in files.items() if os.path.exists(f)}
    sizes = objects.files(url, context).size(keys)
    return {key: int(size) for key, size in sizes.items() if size is not None}


@dataclass(frozen=True, kw_only=True)
class ZarrExportJob:
    """Reads a box of mip `mip` of `source`, writes it to level `mip` of the store at `url`.
    The box covers whole chunks (shards) of the level: `unit`, in x, y, z voxels."""

    source: Layer
    url: str
    fmt: ZarrFormat
    mip: int
    unit: Vec3
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        data = to_zarr(self.source.read(box, mip=self.mip, fill_missing=self.fill_missing))
        context = self.source.context
        context.apply()
        store = ts.open(level_spec(self.url, self.mip, self.fmt, context), open=True).result()
        origin = self.source.bounds(self.mip).start
        local = Box(box.start - origin, box.stop - origin)  # the array's coordinates
        (x0, y0, z0), (x1, y1, z1) = local.start, local.stop
        store[..., z0:z1, y0:y1, x0:x1].write(data).result()
        # tensorstore stores these objects itself; they enter the chunk's ledger record as
        # every write through `objects` does, so a resume finds them lost or changed
        keys = object_keys(self.fmt, self.mip, local, self.unit, self.source.num_channels)
        for key, size in stored_sizes(self.url, keys, context).items():
            objects.note_written(self.url, key, size)
        return {"voxels": box.size}


@dataclass(frozen=True, kw_only=True)
class PrecomputedExportJob:
    """Copies a box of mip `mip` of `source` into `target` (re-chunked or resharded)."""

    source: Layer
    target: Layer
    mip: int
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        data = self.source.read(box, mip=self.mip, fill_missing=self.fill_missing)
        self.target.write(box, data, mip=self.mip)
        return {"voxels": box.size}
