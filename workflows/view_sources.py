"""Neuroglancer data sources for the Zarr v2/v3, N5 and OME-Zarr layers `petavox view` shows.

Neuroglancer reads these formats itself (``zarr2://``, ``zarr3://`` or ``n5://`` before an
http(s), ``gs://`` or ``s3://`` URL; an OME-Zarr group with all its levels). Each source is
given an explicit coordinate transform made from petavox's own reading of the volume (the
info `foreign_volumes.foreign_info` makes): the array's x, y and z axes at petavox's voxel
size, translated to its voxel offset, so the layer is drawn where the stages read it, beside
the precomputed layers made from it; ``#axes=``, ``#resolution=`` and ``#offset=`` are thus
shown as petavox reads them. Other axes (c, t) become local dimensions (``c'``, ``t'``) placed
at ``#channel=`` / ``#t=`` (channel 0 without ``#channel=``: Neuroglancer shows one channel at
a time).

Which array Neuroglancer opens: an OME-Zarr group (every level) when no ``#level=`` is given
and its level 0 has no translation; otherwise the array of the level read (one level).
Neuroglancer places OME-Zarr voxels by their centres, half a voxel below petavox's corner
convention; the transform adds that half voxel back. A translated group is not opened as a
group because Neuroglancer versions disagree on where a replaced transform leaves its
translation (the package's client and the public viewer would differ). An N5 multiscale
group is opened at the dataset of the level read.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Any

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.foreign_volumes import FOREIGN, fetch_metadata, group_attributes
from petavox.tasks.core.storage import StorageContext, join_url, scheme_of

SCHEMES = {"zarr": "zarr2", "zarr3": "zarr3", "n5": "n5"}  # petavox's format: Neuroglancer's


@dataclass(frozen=True)
class ForeignView:
    """How Neuroglancer opens a Zarr/N5/OME-Zarr layer (see the module docstring)."""

    scheme: str  # zarr2 | zarr3 | n5
    store: str  # the volume's storage URL, as given (no prefix, no options)
    path: str  # below `store`: "" (the volume itself) or the array of the level read
    axes: str  # the opened array's axes, in its order (a subset of t, c, z, y, x)
    inputs: tuple[str, ...]  # Neuroglancer's names of those axes (see `input_names`)
    translation: tuple[float, ...]  # per axis of `axes`, in its voxels (petavox's offset)
    local_position: tuple[float, ...]  # Neuroglancer's position in each non-spatial axis


def input_names(src: dict, path: str, context: StorageContext) -> tuple[str, ...]:
    """The names Neuroglancer gives the axes of what it opens (its transform's input
    dimensions): an OME-Zarr group's axis names (a channel axis gets a ``'``), a Zarr v3
    array's ``dimension_names``, a Zarr v2 array's ``_ARRAY_DIMENSIONS``, an N5 dataset's
    ``axes``; ``d0``, ``d1``, ... for those without."""
    meta = fetch_metadata(join_url(src["store"], path) if path else src["store"], context)
    fmt, count = src["format"], len(src["axes"])
    if not path:
        for ms in group_attributes(fmt, meta).get("multiscales") or []:
            return tuple(
                a["name"] + ("'" if a.get("type") == "channel" else "") for a in ms["axes"]
            )
    if fmt == "zarr3":
        names = meta.get("zarr.json", {}).get("dimension_names")
    elif fmt == "zarr":
        names = (meta.get(".zattrs") or {}).get("_ARRAY_DIMENSIONS")
    else:
        names = meta.get("attributes.json", {}).get("axes")
    names = names if isinstance(names, list) and len(names) == count else [None] * count
    return tuple(name or f"d{i}" for i, name in enumerate(names))


def foreign_view(url: str, info: dict[str, Any], context: StorageContext) -> ForeignView:
    """The `ForeignView` of the foreign layer `url` whose info petavox made; an InputError
    when Neuroglancer cannot show it as petavox reads it."""
    src = info[FOREIGN]
    axes = src["axes"]
    if not set("xyz") <= set(axes):
        raise InputError(
            f"petavox view shows volumes with x, y and z axes; {url} has the axes {axes!r} "
            "(name them with #axes=, or ingest it first)"
        )
    group = src["arrays"][0] != "" and not src.get("level") and src["format"] != "n5"
    group = group and not any(src.get("translation") or ())
    shift = 0.5 if group else 0.0  # Neuroglancer's OME-Zarr voxel centres (see above)
    offset = info["scales"][0]["voxel_offset"]
    chosen = {"t": src.get("t") or 0, "c": src.get("channel") or 0}
    translation = tuple((offset["xyz".index(a)] if a in "xyz" else 0) + shift for a in axes)
    path = "" if group else src["arrays"][0]
    return ForeignView(
        scheme=SCHEMES[src["format"]],
        store=src["store"],
        path=path,
        axes=axes,
        inputs=input_names(src, path, context),
        translation=translation,
        local_position=tuple(chosen[a] + 0.5 for a in axes if a not in "xyz"),
    )


def browser_url(url: str, context: StorageContext) -> str:
    """How the browser reaches a cloud URL: ``s3://`` with a custom endpoint (MinIO etc.)
    path-style from the endpoint, anything else as it is."""
    if scheme_of(url) == "s3" and context.s3_endpoint:
        parsed = urllib.parse.urlparse(url)
        return f"{context.s3_endpoint.rstrip('/')}/{parsed.netloc}{parsed.path}"
    return url


def source_url(view: ForeignView, served: str | None, context: StorageContext) -> str:
    """Neuroglancer's URL of the opened array or group: `served` (the file server's URL of a
    local volume's folder), else the storage URL as the browser reaches it (`browser_url`)."""
    base = served if served is not None else browser_url(view.store, context)
    return f"{view.scheme}://{join_url(base, view.path) if view.path else base}"


def foreign_source(
    view: ForeignView, resolution: tuple[float, float, float], url: str
) -> dict[str, Any]:
    """The layer's ``source``: `url` with the transform placing the array's voxels (see the
    module docstring); `resolution` is petavox's mip-0 voxel size (nm)."""
    outputs = [a for a in "xyz"] + [f"{a}'" for a in view.axes if a not in "xyz"]
    dims: dict[str, list] = {a: [r / 1e9, "m"] for a, r in zip("xyz", resolution)}
    dims.update({name: [1, ""] for name in outputs[3:]})
    # the input axes at the output's scales: the matrix is then in voxels, whatever units and
    # voxel sizes Neuroglancer finds in the metadata
    inputs = {n: dims[a if a in "xyz" else f"{a}'"] for n, a in zip(view.inputs, view.axes)}
    rows = []
    for name in outputs:
        column = view.axes.index(name[0])
        row = [0.0] * (len(view.axes) + 1)
        row[column], row[-1] = 1.0, float(view.translation[column])
        rows.append(row)
    transform = {"outputDimensions": dims, "inputDimensions": inputs, "matrix": rows}
    return {"url": url, "transform": transform}
