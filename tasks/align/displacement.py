"""Displacement fields on a regular mesh of nodes over a section, interpolated bilinearly.

A section's alignment is a field u(p) (x, y pixels): the aligned image at p is the raw section
at p + u(p). It is stored as an affine field (`SectionAffines`) plus node values on a mesh
(`MeshGrid`); between nodes it is bilinear, beyond the outer nodes it is extrapolated linearly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def grid_points(
    start: tuple[float, float], stop: tuple[float, float], step: float = 1
) -> np.ndarray:
    """(n, 2) x, y positions every `step` pixels in [start, stop), x varying slowest."""
    xs, ys = (np.arange(a, b, step, dtype=np.float64) for a, b in zip(start, stop))
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


@dataclass(frozen=True)
class MeshGrid:
    """Nodes at ``origin + spacing * (i, j)`` for i < nx, j < ny, covering a section."""

    origin: tuple[float, float]
    spacing: float
    shape: tuple[int, int]  # nx, ny

    @classmethod
    def covering(cls, start: tuple[int, int], stop: tuple[int, int], spacing: float) -> MeshGrid:
        nx, ny = (max(2, math.ceil((b - a) / spacing) + 1) for a, b in zip(start, stop))
        return cls((float(start[0]), float(start[1])), float(spacing), (nx, ny))

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def weights(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index (n, 4), weight (n, 4)) of the nodes around each point (n, 2)."""
        f = (np.asarray(points, np.float64) - self.origin) / self.spacing
        cells = []
        fracs = []
        for axis in range(2):
            i0 = np.clip(np.floor(f[:, axis]), 0, self.shape[axis] - 2).astype(np.int64)
            cells.append(i0)
            fracs.append(f[:, axis] - i0)
        (ix, iy), (ax, ay) = cells, fracs
        ny = self.shape[1]
        index = np.stack(
            [ix * ny + iy, (ix + 1) * ny + iy, ix * ny + iy + 1, (ix + 1) * ny + iy + 1], axis=1
        )
        weight = np.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay], axis=1)
        return index, weight

    def interpolate(self, nodes: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Field values (n, 2) at points (n, 2) from node values (nx * ny, 2)."""
        index, weight = self.weights(points)
        return np.einsum("nk,nkc->nc", weight, nodes[index])

    def dense(
        self, nodes: np.ndarray, start: tuple[int, int], shape: tuple[int, int]
    ) -> np.ndarray:
        """The field (X, Y, 2) at every pixel of the box at `start` of `shape` (x, y)."""
        points = grid_points(start, (start[0] + shape[0], start[1] + shape[1]))
        return self.interpolate(nodes, points).reshape(shape[0], shape[1], 2)

    def neighbour_pairs(self) -> np.ndarray:
        """(m, 2) node index pairs of horizontally and vertically adjacent nodes."""
        nx, ny = self.shape
        ids = np.arange(nx * ny).reshape(nx, ny)
        return np.concatenate(
            [
                np.stack([ids[:-1].ravel(), ids[1:].ravel()], axis=1),
                np.stack([ids[:, :-1].ravel(), ids[:, 1:].ravel()], axis=1),
            ]
        )


@dataclass(frozen=True)
class SectionAffines:
    """One affine field per section: u_k(p) = M_k[:, :2] @ (p − centre) / scale + M_k[:, 2].

    Dividing by `scale` (half the section's extent) puts every entry in pixels: a linear entry
    of 1 moves the section's edge by one pixel, so one prior weight suits them all.
    """

    centre: tuple[float, float]
    scale: float
    matrices: np.ndarray  # (sections, 2, 3)

    @classmethod
    def translations(
        cls, centre: tuple[float, float], scale: float, shifts: np.ndarray
    ) -> SectionAffines:
        matrices = np.zeros((len(shifts), 2, 3))
        matrices[:, :, 2] = shifts
        return cls(centre, scale, matrices)

    def normalised(self, points: np.ndarray) -> np.ndarray:
        """(n, 3) rows [x̂, ŷ, 1] of points (n, 2), the affine's design matrix."""
        hat = (np.asarray(points, np.float64) - self.centre) / self.scale
        return np.column_stack([hat, np.ones(len(hat))])

    def at(self, k: int, points: np.ndarray) -> np.ndarray:
        """u_k at points (n, 2)."""
        return self.normalised(points) @ self.matrices[k].T

    def dense(self, k: int, start: tuple[int, int], shape: tuple[int, int]) -> np.ndarray:
        """u_k (X, Y, 2) at every pixel of the box at `start` of `shape` (x, y)."""
        points = grid_points(start, (start[0] + shape[0], start[1] + shape[1]))
        return self.at(k, points).reshape(shape[0], shape[1], 2)
