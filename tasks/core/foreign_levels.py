"""Where a Zarr/N5/OME-Zarr volume's resolution levels sit on petavox's voxel grid.

`n5_levels` lists the datasets ``s0``, ``s1``, ... of an N5 multiscale group (the
n5-viewer / BigDataViewer / saalfeldlab layout); `transforms` turns each level's NGFF-style
``scale`` and ``translation`` transformations into x, y, z nanometres; `scales` makes the
precomputed-style scales petavox reads, each with an integer voxel offset (the corner of its
first voxel, as a precomputed ``voxel_offset``). The offset rules (README "Formats"):

- a translation within `TOLERANCE` voxel of a whole number of voxels is that number;
- else, for a coarser level k, the centred-downsampling translation (translation_0 +
  (scale_k - scale_0) / 2, as multiscale-spatial-image and others write it) is the corner
  offset the matching precomputed mip would have: level 0's, scaled down and floored;
- else the level is off the grid: refused when it is mip 0 of the layer, and when a coarser
  one is read (`read_box` raises the message kept in the layer's info), never rounded;
- ``#offset=X,Y,Z`` (voxels of the level read) overrides the translations.
"""

from __future__ import annotations

import json
import math
from typing import Any

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext

TOLERANCE = 1e-3  # voxels: a translation this close to whole voxels is on the grid
MAX_N5_LEVELS = 32  # datasets s0, s1, ... looked for in an N5 group without a level count
# nanometres per unit: NGFF's UDUNITS-2 names and N5's abbreviations; no unit counts as nm
UNITS = {
    "angstrom": 0.1,
    "picometer": 1e-3,
    "nanometer": 1.0,
    "micrometer": 1e3,
    "millimeter": 1e6,
    "centimeter": 1e7,
    "meter": 1e9,
    "pm": 1e-3,
    "nm": 1.0,
    "um": 1e3,
    "µm": 1e3,
    "μm": 1e3,
    "mm": 1e6,
    "cm": 1e7,
    "m": 1e9,
}


class VolumeFormatError(InputError, ValueError):
    """A volume that cannot be read as asked: names the URL, the problem and the fix."""


def n5_resolution(attrs: dict[str, Any]) -> list[float] | None:
    """An N5 node's voxel size in nm (its dimensions' order), from ``resolution`` + ``units``
    or n5-viewer's ``pixelResolution`` {dimensions, unit}; None when it gives none."""
    pixel = attrs.get("pixelResolution")
    if isinstance(pixel, dict) and pixel.get("dimensions"):
        values, units = pixel["dimensions"], [pixel.get("unit")] * len(pixel["dimensions"])
    elif attrs.get("resolution"):
        values = attrs["resolution"]
        units = attrs.get("units") or [None] * len(values)
    else:
        return None
    return [float(v) * UNITS.get(u or "nm", 1.0) for v, u in zip(values, units)]


def _n5_get(store: str, key: str, context: StorageContext) -> dict | None:
    try:
        raw = objects.get(store, key, context)
        return None if raw is None else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise VolumeFormatError(f"cannot read {store}/{key}: {exc}") from None


def n5_levels(url: str, attrs: dict, store: str, context: StorageContext) -> tuple[list, list]:
    """The levels of the N5 multiscale group at `store` (datasets s0, s1, ...: as many as
    the group's ``downsamplingFactors`` / ``scales`` list, else until one is missing), each
    with its voxel size in nm (base resolution × the level's downsampling factors), and the
    axes; a `VolumeFormatError` when there is no ``s0`` dataset."""
    factors = attrs.get("downsamplingFactors") or attrs.get("scales") or []
    count = len(factors) or MAX_N5_LEVELS
    found = []
    for k in range(count):
        dataset = _n5_get(store, f"s{k}/attributes.json", context)
        if dataset is None or "dimensions" not in dataset:
            break
        found.append(dataset)
    if not found:
        raise VolumeFormatError(
            f"{url} is an N5 group without datasets s0, s1, ... (a multiscale group) or "
            "OME-Zarr multiscales metadata; give the URL of a dataset inside it"
        )
    base = n5_resolution(attrs) or n5_resolution(found[0])
    dims0 = found[0]["dimensions"]
    levels = []
    for k, dataset in enumerate(found):
        factor = dataset.get("downsamplingFactors") or (factors[k] if k < len(factors) else None)
        if factor is None:  # derived from the sizes (a dimension is halved, rounded up)
            factor = [max(1, round(a / b)) for a, b in zip(dims0, dataset["dimensions"])]
        res = [(b if base else 1.0) * float(f) for b, f in zip(base or factor, factor)]
        levels.append({"path": f"s{k}", "transforms": [{"type": "scale", "scale": res}]})
    return levels, list(attrs.get("axes") or found[0].get("axes") or [])


def transforms(levels: list[dict], names: str, axes: list) -> list[tuple[list, list]]:
    """Each level's x, y, z voxel size (nm) and translation (nm) from its NGFF transforms."""
    units = {n: (a.get("unit") if isinstance(a, dict) else None) for n, a in zip(names, axes)}
    out = []
    for level in levels:
        scale, shift = [1.0] * len(names), [0.0] * len(names)
        for t in level["transforms"]:
            if t.get("type") == "scale":
                scale = [s * float(k) for s, k in zip(scale, t["scale"])]
                shift = [s * float(k) for s, k in zip(shift, t["scale"])]
            elif t.get("type") == "translation":
                shift = [s + float(k) for s, k in zip(shift, t["translation"])]
        nm = [UNITS.get(units.get(a) or "nanometer", 1.0) for a in "xyz"]
        pick = [names.index(a) if a in names else None for a in "xyz"]
        res = [scale[i] * u if i is not None else 1.0 for i, u in zip(pick, nm)]
        off = [shift[i] * u if i is not None else 0.0 for i, u in zip(pick, nm)]
        out.append((res, off))
    return out


def _whole(value: float) -> int | None:
    return round(value) if abs(value - round(value)) <= TOLERANCE else None


def _axis_offset(url: str, grid: list[tuple[list, list]], k: int, axis: int) -> int | str:
    """Level k's voxel offset on `axis` by the rules above; the refusal's text if off grid."""
    (res, off), (res0, off0) = grid[k], grid[0]
    r, t = res[axis], off[axis]
    whole = _whole(t / r)
    if whole is not None:
        return whole
    base, centred = _whole(off0[axis] / res0[axis]), off0[axis] + (r - res0[axis]) / 2
    if k > 0 and base is not None and abs(t - centred) / r <= TOLERANCE:
        return math.floor(base * res0[axis] / r + TOLERANCE)
    voxels = t / r
    name = "xyz"[axis]
    return (
        f"{url}: level {k} is off petavox's voxel grid: its translation on {name} is {t:g} nm, "
        f"{voxels:.4g} voxels of {r:g} nm ({voxels - math.floor(voxels):.3g} of a voxel past "
        f"a whole one), and not the centred-downsampling translation {centred:g} nm either; "
        "petavox layers start on a whole voxel, so give the voxel offset of the level read "
        f"with #offset=X,Y,Z (voxels of that level, e.g. #offset={_suggest(grid[k])})"
    )


def _suggest(level: tuple[list, list]) -> str:
    return ",".join(str(math.floor(t / r + 0.5)) for r, t in zip(*level))


def scales(
    url: str, stores: list[dict], names: str, grid: list, fixed: list | None, given: list | None
) -> tuple[list[dict], list[str | None]]:
    """The precomputed-style scales of the levels read (`stores`: path, shape, chunks; the
    last len(stores) entries of `grid`, each level's (resolution, translation) in nm), and
    each one's refusal (None: on the grid). `fixed`: #resolution= (nm, x, y, z); `given`:
    #offset= (voxels of mip 0). A coarser level off the grid gets mip 0's offset scaled down;
    mip 0 off the grid is a `VolumeFormatError`."""
    first = len(grid) - len(stores)
    if fixed:
        grid = [([r * k for r, k in zip(fixed, res)], off) for res, off in grid]
    out, refusals = [], []
    for mip, store in enumerate(stores):
        k = first + mip
        res, base = grid[k][0], grid[first][0]
        if given is not None:
            found: list = [
                math.floor(g * base[a] / res[a] + TOLERANCE) for a, g in enumerate(given)
            ]
        else:
            found = [_axis_offset(url, grid, k, axis) for axis in range(3)]
        refusal = next((f for f in found if isinstance(f, str)), None)
        if refusal is not None and mip == 0:
            raise VolumeFormatError(refusal)
        if refusal is not None:
            start = out[0]["voxel_offset"]
            found = [math.floor(s * base[a] / res[a] + TOLERANCE) for a, s in enumerate(start)]
        out.append(
            {
                "key": store["path"] or "0",
                "size": _xyz(store["shape"], names, 1),
                "voxel_offset": found,
                "resolution": res,
                "chunk_sizes": [_xyz(store["chunks"], names, 1)],
                "encoding": "raw",
            }
        )
        refusals.append(refusal)
    return out, refusals


def _xyz(values: Any, names: str, default: int) -> list[int]:
    return [int(values[names.index(a)]) if a in names else default for a in "xyz"]
