"""Volumes petavox reads but does not write: Zarr v2, Zarr v3 (sharded too), N5, OME-Zarr.

`foreign_info` turns a volume's metadata into a precomputed-style info (one scale per
multiscale level, x/y/z order, `data_type`, `num_channels`, `type`) with a `FOREIGN` key saying
where the voxels really are; `Layer.read` hands such layers to `read_box`, which reads them with
tensorstore's zarr / zarr3 / n5 drivers and transposes to x, y, z, channel. Kernels never see
the format. URL forms (see README "Formats"): ``zarr://``, ``zarr2://``, ``zarr3://``, ``n5://``
before a storage URL or path, the format detected from the metadata without one, and options
after ``#``: ``level``, ``channel``, ``t``, ``type``, ``axes``, ``resolution``, ``offset``.
Where the levels sit on the voxel grid (translations, N5 multiscale groups): `foreign_levels`.

The NGFF multiscales metadata is a few JSON keys, read here by hand: the `ome-zarr` package's
reader needs dask and fsspec stores, which know neither petavox's S3 endpoint nor its context.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.errors import LayerMismatchError, LayerNotFoundError
from petavox.tasks.core.foreign_levels import (
    VolumeFormatError,
    n5_levels,
    n5_resolution,
    scales,
    transforms,
)
from petavox.tasks.core.geometry import Box
from petavox.tasks.core.storage import (
    StorageContext,
    is_plain_url,
    join_url,
    scheme_of,
    split_volume_url,
    tensorstore_kvstore,
)

FOREIGN = "petavox_foreign"  # info key: where a non-precomputed layer's voxels live
DRIVERS = {"zarr": "zarr", "zarr2": "zarr", "zarr3": "zarr3", "n5": "n5"}
OPTIONS = ("level", "channel", "t", "type", "axes", "resolution", "offset")
METADATA = ("zarr.json", ".zarray", ".zgroup", ".zattrs", "attributes.json")
LAYER_DTYPES = ("uint8", "uint16", "uint32", "uint64", "float32")  # as precomputed layers hold
__all__ = ["VolumeFormatError", "foreign_info", "read_box"]


def check_writable(url: str, info: dict | None = None) -> None:
    """A `LayerMismatchError` unless petavox may write a precomputed layer at `url`."""
    fmt = split_volume_url(url)[0]
    if info is not None and FOREIGN in info:
        fmt = info[FOREIGN]["format"]
    if is_plain_url(url) and fmt in (None, "precomputed"):
        return
    what = "over http(s), which is read only" if fmt in (None, "precomputed") else f"a {fmt} volume"
    raise LayerMismatchError(
        f"cannot write to {url}: it is {what}, and petavox writes precomputed layers to file://, "
        "s3:// or gs://; give such an output (`petavox export` writes OME-Zarr / Zarr v3)"
    )


def info_object(url: str, context: StorageContext) -> bytes | None:
    """The bytes of a precomputed layer's info (None: none, or the URL names another format)."""
    fmt, store, fragment = split_volume_url(url)
    if fmt not in (None, "precomputed") or fragment:
        return None
    try:
        return objects.get(store, "info", context)
    except OSError as exc:  # requests' ConnectionError is one (http(s) and object stores)
        if not scheme_of(store).startswith("http"):
            raise
        raise LayerNotFoundError(f"cannot read {url}: {exc}; check the URL") from None


def _options(url: str, fragment: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for part in filter(None, fragment.split("&")):
        key, eq, value = part.partition("=")
        if key not in OPTIONS or not eq or not value:
            raise VolumeFormatError(
                f"{url}: unknown option {part!r} after '#'; use key=value pairs joined by '&' "
                f"with keys {', '.join(OPTIONS)} (e.g. #level=1&channel=0)"
            )
        options[key] = value
    return options


def _int_option(url: str, options: dict[str, str], key: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options[key])
    except ValueError:
        raise VolumeFormatError(
            f"{url}: #{key}= needs a whole number, not {options[key]!r}"
        ) from None


def _vector_option(url: str, options: dict[str, str], key: str) -> list | None:
    """#resolution= (three positive nm) or #offset= (three whole voxels), x,y,z; None: not
    given."""
    if key not in options:
        return None
    text, whole = options[key], key == "offset"
    try:
        values = [int(v) if whole else float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or (not whole and not all(math.isfinite(v) and v > 0 for v in values)):
        what = "three whole numbers (voxels of the level read)" if whole else "three sizes > 0 (nm)"
        raise VolumeFormatError(f"{url}: #{key}= needs {what}, x,y,z; not {text!r}")
    return values


def fetch_metadata(store: str, context: StorageContext) -> dict[str, Any]:
    """The metadata files found at `store`, parsed."""
    try:
        found = objects.get_many(store, METADATA, context)
    except (OSError, ConnectionError) as exc:  # requests' ConnectionError is an OSError
        raise VolumeFormatError(f"cannot read {store}: {exc}; check the URL") from None
    meta: dict[str, Any] = {}
    for key, raw in found.items():
        if raw is None:
            continue
        try:
            meta[key] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise VolumeFormatError(f"{store}/{key} is not valid JSON ({exc})") from None
    return meta


def detect(meta: dict[str, Any]) -> str | None:
    """The format the metadata files say (None: none of them is there)."""
    if "zarr.json" in meta:
        return "zarr3"
    if ".zarray" in meta or ".zgroup" in meta:
        return "zarr"
    if "attributes.json" in meta:
        return "n5"
    return None


def group_attributes(fmt: str, meta: dict[str, Any]) -> dict[str, Any]:
    if fmt == "zarr3":
        attrs = meta["zarr.json"].get("attributes") or {}
        return attrs.get("ome", attrs)  # NGFF 0.5 keeps its keys under "ome"
    if fmt == "n5":
        return meta["attributes.json"]
    return meta.get(".zattrs") or {}


def _is_array(fmt: str, meta: dict[str, Any]) -> bool:
    if fmt == "zarr3":
        return meta["zarr.json"].get("node_type") == "array"
    if fmt == "n5":
        return "dimensions" in meta["attributes.json"]
    return ".zarray" in meta


def open_array(fmt: str, store: str, path: str, context: StorageContext) -> Any:
    """The tensorstore of the array at `path` under `store` (opened, not read)."""
    import tensorstore as ts  # heavy import, only where a foreign volume is opened

    context.apply()
    spec = {"driver": DRIVERS[fmt], "kvstore": tensorstore_kvstore(join_url(store, path), context)}
    try:
        return ts.open(spec, read=True).result()
    except ValueError as exc:
        raise VolumeFormatError(
            f"cannot open the {fmt} array {join_url(store, path)}: {exc}"
        ) from None


def _axis_names(url: str, axes: list, ndim: int) -> str:
    names = "".join((a["name"] if isinstance(a, dict) else str(a)).lower() for a in axes)
    if len(names) != ndim or any(n not in "tczyx" for n in names) or len(set(names)) < ndim:
        raise VolumeFormatError(
            f"{url}: axes {names!r} do not fit a {ndim}-D array; petavox reads the axes t, c, z, "
            "y, x (each at most once); name them with #axes= (e.g. #axes=czyx)"
        )
    return names


def _levels(
    url: str, fmt: str, meta: dict, store: str, context: StorageContext
) -> tuple[list[dict], list, str]:
    """Each level's array path and NGFF transforms, the axes metadata, and the layer type."""
    attrs = group_attributes(fmt, meta)
    if attrs.get("multiscales"):
        ms = attrs["multiscales"][0]
        top = ms.get("coordinateTransformations", [])
        levels = [
            {"path": d["path"], "transforms": d.get("coordinateTransformations", []) + top}
            for d in ms["datasets"]
        ]
        kind = "segmentation" if "image-label" in attrs else "image"
        return levels, ms.get("axes") or [], kind
    if fmt == "n5" and not _is_array(fmt, meta):  # an N5 multiscale group: s0, s1, ...
        levels, axes = n5_levels(url, attrs, store, context)
        return levels, axes or list("xyz"), "image"
    if not _is_array(fmt, meta):
        raise VolumeFormatError(
            f"{url} is a {fmt} group without OME-Zarr multiscales metadata; give the URL of an "
            "array inside it (or of an OME-Zarr image)"
        )
    axes = attrs.get("axes") if fmt == "n5" else meta.get("zarr.json", {}).get("dimension_names")
    if fmt == "n5" and not axes:
        axes = list("xyz")  # N5 lists dimensions fastest first (x, y, z)
    scale = n5_resolution(attrs) if fmt == "n5" else None
    given = [{"type": "scale", "scale": scale}] if scale else []
    return [{"path": "", "transforms": given}], list(axes or []), "image"


def _choice(url: str, options: dict, key: str, size: int, what: str) -> int | None:
    index = _int_option(url, options, key)
    if index is not None and not 0 <= index < size:
        raise VolumeFormatError(f"{url}: has {what} 0..{size - 1}, not #{key}={index}")
    return index


def _check_dtype(url: str, dtype: np.dtype, kind: str, strict: bool) -> None:
    allowed = ("uint8", "uint16", "uint32", "uint64") if kind == "segmentation" else LAYER_DTYPES
    if dtype.kind not in "biuf" or (strict and dtype.name not in allowed):
        raise VolumeFormatError(
            f"{url} holds {dtype.name}, which a petavox {kind} layer cannot: it reads "
            f"{', '.join(allowed)}; convert it with `petavox ingest {url} DST --dtype ...`"
            if dtype.kind in "biuf"
            else f"{url} holds {dtype}; petavox reads integer and float volumes only"
        )


def _open_levels(
    url: str, fmt: str, store: str, meta: dict, options: dict, context: StorageContext
) -> tuple[list[dict], list, dict, Any, str, str]:
    """The levels read (#level= and coarser): their scales, refusals (see `scales`), where they
    are (their array paths, the level read, level 0's x, y, z translation in nm); the first
    array; the axis names; the layer type."""
    levels, axes, kind = _levels(url, fmt, meta, store, context)
    level = _choice(url, options, "level", len(levels), "levels") or 0
    arrays = [open_array(fmt, store, lv["path"], context) for lv in levels[level:]]
    stores = [
        {"path": lv["path"], "shape": a.shape, "chunks": a.chunk_layout.read_chunk.shape}
        for lv, a in zip(levels[level:], arrays)
    ]
    ndim = len(stores[0]["shape"])
    given = options.get("axes") or axes or "tczyx"[-ndim:]  # default: the last of t,c,z,y,x
    names = _axis_names(url, list(given), ndim)
    grid = transforms(levels, names, axes)
    fixed, offset = (_vector_option(url, options, k) for k in ("resolution", "offset"))
    found, refusals = scales(url, stores, names, grid, fixed, offset)
    where = {"arrays": [s["path"] for s in stores], "level": level, "translation": grid[0][1]}
    return found, refusals, where, arrays[0], names, kind


def foreign_info(url: str, context: StorageContext, strict: bool = True) -> dict | None:
    """The precomputed-style info of the Zarr/N5/OME-Zarr volume at `url` (None: no metadata
    there). `strict`: only the dtypes precomputed layers hold (an ingest source reads others)."""
    fmt, store, fragment = split_volume_url(url)
    options = _options(url, fragment)
    meta = fetch_metadata(store, context)
    found = detect(meta)
    if fmt is None or fmt == "precomputed":
        fmt = found
    if found is None or fmt is None:
        return None
    fmt = "zarr" if fmt == "zarr2" else fmt
    if DRIVERS[fmt] != DRIVERS[found]:
        raise VolumeFormatError(f"{url} holds {found} metadata, not {fmt}; use {found}://")
    opened = _open_levels(url, fmt, store, meta, options, context)
    levels, refusals, where, array, names, kind = opened
    shape0 = array.shape
    nt, nc = (shape0[names.index(a)] if a in names else 1 for a in "tc")
    t = _choice(url, options, "t", nt, "time points")
    if nt > 1 and t is None:
        raise VolumeFormatError(
            f"{url} has {nt} time points; petavox reads one 3-D volume: choose it with #t=N"
        )
    channel = _choice(url, options, "channel", nc, "channels")
    kind = options.get("type", kind)
    if kind not in ("image", "segmentation"):
        raise VolumeFormatError(f"{url}: #type= is image or segmentation, not {kind!r}")
    dtype = np.dtype(array.dtype.numpy_dtype)
    _check_dtype(url, dtype, kind, strict)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    source = {"format": fmt, "store": store, **where, "axes": names}
    if any(refusals):
        source["misplaced"] = refusals
    return {
        "@type": "neuroglancer_multiscale_volume",
        "type": kind,
        "data_type": dtype.name,
        "num_channels": 1 if channel is not None else nc,
        "scales": levels,
        FOREIGN: {**source, "channel": channel, "t": t, "metadata": digest},
    }


def read_box(layer: Any, box: Box, mip: int) -> np.ndarray:
    """Voxels of `box` of a foreign `layer` as x, y, z, channel; zeros outside its bounds."""
    src = layer.info[FOREIGN]
    refusal = (src.get("misplaced") or [None] * (mip + 1))[mip]
    if refusal:  # this level's translation is off the voxel grid (see `foreign_levels`)
        raise VolumeFormatError(refusal)
    key = ("foreign", mip)
    if key not in layer._clients:
        layer._clients[key] = open_array(
            src["format"], src["store"], src["arrays"][mip], layer.context
        )
    out = np.zeros((*box.shape, layer.num_channels), layer.dtype, order="F")
    bounds = layer.bounds(mip)
    inner = box.intersection(bounds)
    if inner.is_empty():
        return out
    names, index, kept = src["axes"], [], ""
    for a in names:
        if a in "xyz":
            i = "xyz".index(a)
            start = inner.start[i] - bounds.start[i]
            index.append(slice(start, start + inner.shape[i]))
            kept += a
        elif a == "t":
            index.append(src["t"] or 0)
        elif src["channel"] is not None:
            index.append(src["channel"])
        else:
            index.append(slice(None))
            kept += a
    block = np.asarray(layer._clients[key][tuple(index)].read().result())
    for a in "xyzc":
        if a not in kept:
            block, kept = block[..., np.newaxis], kept + a
    block = block.transpose([kept.index(a) for a in "xyzc"])
    out[tuple(slice(a - o, b - o) for a, b, o in zip(inner.start, inner.stop, box.start))] = block
    return out
