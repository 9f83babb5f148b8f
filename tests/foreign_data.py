"""Small Zarr v2, Zarr v3 (sharded), N5 and OME-Zarr (NGFF 0.4 and 0.5) volumes for tests.

The OME-Zarr images are written by the `ome-zarr` package, the others by tensorstore; each
writer returns the levels it wrote as z, y, x arrays. The volume: 3 levels, 8 x 8 x 30 nm at
level 0 (x, y halved per level), its corner at 256, 128, 300 nm (voxel 32, 16, 10 of level 0).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorstore as ts

RESOLUTION = (8.0, 8.0, 30.0)  # x, y, z nm at level 0
TRANSLATION_NM = (256.0, 128.0, 300.0)  # x, y, z
OFFSET = (32, 16, 10)  # TRANSLATION_NM / RESOLUTION


def volume(shape_zyx: tuple[int, int, int] = (6, 40, 56), seed: int = 0) -> np.ndarray:
    """A z, y, x uint8 volume with structure (blobs), not only noise."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape_zyx)
    smooth = 100 + 60 * np.sin(x / 5.0) * np.cos(y / 7.0) + 10 * z
    return (smooth + rng.integers(0, 30, shape_zyx)).clip(0, 255).astype(np.uint8)


def pyramid(data: np.ndarray, levels: int = 3) -> list[np.ndarray]:
    """Level k: every 2^k-th voxel in y and x (z kept), as the level's exact content."""
    return [np.ascontiguousarray(data[:, :: 2**k, :: 2**k]) for k in range(levels)]


def ngff_transforms(
    levels: int, unit_scale: float = 1.0, translations: list | None = None
) -> list[list[dict]]:
    """Per level: scale z, y, x and a translation (in the axes' unit): `translations[k]`
    (x, y, z nm) or TRANSLATION_NM at every level."""
    rx, ry, rz = RESOLUTION
    return [
        [
            {
                "type": "scale",
                "scale": [rz * unit_scale, ry * 2**k * unit_scale, rx * 2**k * unit_scale],
            },
            {
                "type": "translation",
                "translation": [
                    v * unit_scale for v in (translations or {}).get(k, TRANSLATION_NM)[::-1]
                ],
            },
        ]
        for k in range(levels)
    ]


def centred_translations(corner_nm=TRANSLATION_NM, levels: int = 3) -> dict[int, tuple]:
    """The centred-downsampling translations (multiscale-spatial-image's): level k's is level
    0's plus half the growth of its voxel, (scale_k - scale_0) / 2, per axis."""
    return {
        k: tuple(t + (r * f - r) / 2 for t, r, f in zip(corner_nm, RESOLUTION, (2**k, 2**k, 1)))
        for k in range(levels)
    }


def write_ome_zarr(
    path: Path,
    data: np.ndarray,
    version: str = "0.4",
    channels: int = 0,
    labels: bool = False,
    translations: dict[int, tuple] | None = None,
) -> list[np.ndarray]:
    """An OME-Zarr image by the `ome-zarr` package: NGFF 0.4 on Zarr v2 (units nm) or 0.5 on
    Zarr v3 (units µm); `channels` > 0 adds a c axis (channel k holds data + k);
    `translations`: {level: (x, y, z) nm} (default TRANSLATION_NM at every level)."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_multiscale

    fmt = FormatV04() if version == "0.4" else FormatV05()
    unit, unit_scale = ("nanometer", 1.0) if version == "0.4" else ("micrometer", 1e-3)
    levels = pyramid(data)
    axes = [{"name": a, "type": "space", "unit": unit} for a in "zyx"]
    transforms = ngff_transforms(len(levels), unit_scale, translations)
    arrays = levels
    if channels:
        axes = [{"name": "c", "type": "channel"}, *axes]
        arrays = [np.stack([lv + k for k in range(channels)]) for lv in levels]
        transforms = [
            [{"type": t["type"], t["type"]: [1.0, *t[t["type"]]]} for t in level]
            for level in transforms
        ]
    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    chunks = (1, 4, 16, 16) if channels else (4, 16, 16)
    write_multiscale(
        arrays,
        group,
        fmt=fmt,
        axes=axes,
        coordinate_transformations=transforms,
        storage_options={"chunks": chunks},
    )
    if labels:
        attrs = {"image-label": {"version": version}}
        if version == "0.5":
            group.attrs["ome"] = {**group.attrs["ome"], **attrs}
        else:
            group.attrs.update(attrs)
    return arrays


def write_zarr2(path: Path, data: np.ndarray) -> None:
    """A plain Zarr v2 array (z, y, x), blosc-compressed."""
    spec = {
        "driver": "zarr",
        "kvstore": {"driver": "file", "path": str(path) + "/"},
        "metadata": {"shape": list(data.shape), "chunks": [4, 16, 16], "dtype": data.dtype.str},
        "create": True,
        "delete_existing": True,
    }
    ts.open(spec).result().write(data).result()


def write_zarr3_sharded(path: Path, data: np.ndarray) -> None:
    """A Zarr v3 array (z, y, x, named) in shards of 4 x 32 x 32 holding 2 x 16 x 16 chunks."""
    inner = {
        "name": "sharding_indexed",
        "configuration": {
            "chunk_shape": [2, 16, 16],
            "codecs": [{"name": "bytes"}, {"name": "gzip", "configuration": {"level": 1}}],
            "index_codecs": [
                {"name": "bytes", "configuration": {"endian": "little"}},
                {"name": "crc32c"},
            ],
        },
    }
    spec = {
        "driver": "zarr3",
        "kvstore": {"driver": "file", "path": str(path) + "/"},
        "metadata": {
            "shape": list(data.shape),
            "data_type": data.dtype.name,
            "dimension_names": ["z", "y", "x"],
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [4, 32, 32]}},
            "codecs": [inner],
        },
        "create": True,
        "delete_existing": True,
    }
    ts.open(spec).result().write(data).result()


def write_n5(path: Path, data: np.ndarray) -> None:
    """An N5 dataset: dimensions x, y, z (N5 lists them fastest first), gzip blocks."""
    spec = {
        "driver": "n5",
        "kvstore": {"driver": "file", "path": str(path) + "/"},
        "metadata": {
            "dimensions": list(data.shape[::-1]),
            "blockSize": [16, 16, 4],
            "dataType": data.dtype.name,
            "compression": {"type": "gzip"},
        },
        "create": True,
        "delete_existing": True,
    }
    ts.open(spec).result().write(data.transpose()).result()


def write_n5_multiscale(
    path: Path, data: np.ndarray, group_factors: bool = True, unit: str = "nm"
) -> list[np.ndarray]:
    """An N5 multiscale group (n5-viewer / BigDataViewer layout): datasets s0, s1, s2 of
    `pyramid(data)`, each with its ``downsamplingFactors``; the group's ``pixelResolution``
    (RESOLUTION in `unit`: nm or um) and, with `group_factors`, ``scales`` (else the levels
    are found by looking for s0, s1, ...). The levels as z, y, x arrays."""
    import json

    per_nm = {"nm": 1.0, "um": 1e-3}[unit]
    levels = pyramid(data)
    path.mkdir(parents=True, exist_ok=True)
    factors = [[2**k, 2**k, 1] for k in range(len(levels))]
    group = {
        "n5": "2.5.1",
        "pixelResolution": {"dimensions": [r * per_nm for r in RESOLUTION], "unit": unit},
    }
    if group_factors:
        group["scales"] = factors
    (path / "attributes.json").write_text(json.dumps(group))
    for k, level in enumerate(levels):
        write_n5(path / f"s{k}", level)
        attrs_path = path / f"s{k}" / "attributes.json"
        attrs = json.loads(attrs_path.read_text())
        attrs_path.write_text(json.dumps({**attrs, "downsamplingFactors": factors[k]}))
    return levels
