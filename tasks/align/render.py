"""Per-section transforms (affine + mesh) and the warp that renders an aligned box.

An aligned voxel depends only on its section's transform and the raw section, never on the box
being rendered: the read region always covers every pixel the bilinear sampling can touch, and
samples outside the volume are 0. So the rendered layer does not depend on the render chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from petavox.tasks.align.displacement import MeshGrid, SectionAffines, grid_points
from petavox.tasks.core.geometry import Box


@dataclass(frozen=True)
class SectionTransforms:
    """u_z(p) = affine_z(p) + mesh-interpolated nodes[z]; z counts from `first_section`."""

    first_section: int
    affines: SectionAffines
    nodes: np.ndarray  # (sections, mesh.size, 2)
    mesh: MeshGrid

    def field(self, z: int, start: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """u_z at every pixel of an (x, y) box: (X, Y, 2)."""
        k = z - self.first_section
        return self.affines.dense(k, start, shape) + self.mesh.dense(self.nodes[k], start, shape)

    def at(self, z: int, points: np.ndarray) -> np.ndarray:
        k = z - self.first_section
        return self.affines.at(k, points) + self.mesh.interpolate(self.nodes[k], points)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "first_section": np.array(self.first_section),
            "affine_matrices": self.affines.matrices,
            "affine_centre": np.array(self.affines.centre),
            "affine_scale": np.array(self.affines.scale),
            "nodes": self.nodes,
            "mesh_origin": np.array(self.mesh.origin),
            "mesh_spacing": np.array(self.mesh.spacing),
            "mesh_shape": np.array(self.mesh.shape),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> SectionTransforms:
        def scalar(name: str) -> float:  # stored as 1-element arrays
            return float(np.ravel(arrays[name])[0])

        mesh = MeshGrid(
            tuple(arrays["mesh_origin"].tolist()),
            scalar("mesh_spacing"),
            tuple(int(v) for v in arrays["mesh_shape"]),
        )  # type: ignore[arg-type]
        affines = SectionAffines(
            tuple(arrays["affine_centre"].tolist()),  # type: ignore[arg-type]
            scalar("affine_scale"),
            arrays["affine_matrices"],
        )
        return cls(int(scalar("first_section")), affines, arrays["nodes"], mesh)


def box_fields(transforms: SectionTransforms, box: Box) -> np.ndarray:
    """u at every voxel of `box`: (X, Y, Z, 2), computed once for `source_box` and `warp_box`."""
    start, shape = (box.start[0], box.start[1]), (box.shape[0], box.shape[1])
    return np.stack(
        [transforms.field(z, start, shape) for z in range(box.start[2], box.stop[2])], axis=2
    )


def source_box(fields: np.ndarray, box: Box, volume: Box) -> Box:
    """The raw voxels that rendering `box` with `fields` (`box_fields`) samples, in the volume."""
    flat = fields.reshape(-1, 2)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    start = [box.start[a] + math.floor(lo[a]) - 1 for a in range(2)] + [box.start[2]]
    stop = [box.stop[a] + math.ceil(hi[a]) + 2 for a in range(2)] + [box.stop[2]]
    return Box(start, stop).intersection(volume)


def _nearest(section: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Labels at the nearest pixel of each coordinate, 0 outside: no float round trip, so
    64-bit ids survive."""
    ix, iy = (np.floor(c + 0.5).astype(np.int64) for c in coords)
    inside = (ix >= 0) & (ix < section.shape[0]) & (iy >= 0) & (iy < section.shape[1])
    out = np.zeros(ix.shape, section.dtype)
    out[inside] = section[ix[inside], iy[inside]]
    return out


def warp_box(
    fields: np.ndarray, raw: np.ndarray, raw_box: Box, box: Box, labels: bool = False
) -> np.ndarray:
    """Aligned voxels of `box` (x, y, z) from `raw` read at `raw_box`, by `fields`
    (`box_fields`), 0 outside: bilinear for images, nearest pixel for `labels`."""
    from scipy import ndimage

    out = np.zeros(tuple(box.shape), raw.dtype)
    if raw_box.is_empty():
        return out
    nx, ny = box.shape[0], box.shape[1]
    pixels = grid_points(box.start[:2], box.stop[:2]).reshape(nx, ny, 2)
    origin = np.asarray(raw_box.start[:2], np.float64)
    for k, z in enumerate(range(box.start[2], box.stop[2])):
        # (p + u) first, then the read origin: an exact integer shift, so the sampling does not
        # depend on where the read box starts (render-chunk invariance)
        where = (pixels + fields[:, :, k]) - origin
        coords = [where[..., 0], where[..., 1]]
        if labels:
            out[:, :, k] = _nearest(raw[:, :, z - raw_box.start[2]], coords)
            continue
        section = raw[:, :, z - raw_box.start[2]].astype(np.float32)
        values = ndimage.map_coordinates(section, coords, order=1, mode="constant", cval=0.0)
        if np.issubdtype(raw.dtype, np.integer):
            info = np.iinfo(raw.dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        out[:, :, k] = values.astype(raw.dtype)
    return out
