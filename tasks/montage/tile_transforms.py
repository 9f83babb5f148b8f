"""Where a tile's pixels land in its section: a shared lens model, an affine and a mesh per tile.

Tile pixel p (x, y; pixel centres at integers) lands at

    F(p) = A · L(p) + b + m(p),   L(p) = p + κ · |r̂|² · (p − c),   r̂ = (p − c) / R

where c is the tile's centre, R the distance from the centre to a corner (so κ is the radial
lens displacement at a tile corner, in pixels: positive is barrel-like outward), A and b the
tile's affine and m the bilinear interpolation of the tile's elastic mesh nodes. Every tile of
a section shares κ (one lens, one scan); A, b and the nodes are the tile's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from petavox.tasks.align.displacement import MeshGrid

INVERSE_ROUNDS = 8  # Newton steps with the affine's Jacobian: the lens and mesh are small


@dataclass(frozen=True)
class Lens:
    """The radial distortion shared by a section's tiles (see the module docstring)."""

    shape: tuple[int, int]  # tile width, height (x, y)
    kappa: float = 0.0

    @property
    def centre(self) -> np.ndarray:
        return (np.asarray(self.shape, np.float64) - 1) / 2

    @property
    def radius(self) -> float:
        return max(float(np.hypot(*self.centre)), 1.0)

    def apply(self, points: np.ndarray) -> np.ndarray:
        d = np.asarray(points, np.float64) - self.centre
        r2 = (d * d).sum(axis=1, keepdims=True) / self.radius**2
        return np.asarray(points, np.float64) + self.kappa * r2 * d / self.radius


@dataclass(frozen=True)
class TileTransform:
    """One tile's map from its pixels to section coordinates (module docstring)."""

    lens: Lens
    matrix: np.ndarray = field(default_factory=lambda: np.eye(2))  # A (2, 2)
    offset: np.ndarray = field(default_factory=lambda: np.zeros(2))  # b (2,)
    mesh: MeshGrid | None = None
    nodes: np.ndarray | None = None  # (mesh.size, 2)

    def affine_part(self, points: np.ndarray) -> np.ndarray:
        return self.lens.apply(points) @ np.asarray(self.matrix).T + self.offset

    def forward(self, points: np.ndarray) -> np.ndarray:
        """Section coordinates (n, 2) of tile pixels `points` (n, 2)."""
        out = self.affine_part(points)
        if self.mesh is not None and self.nodes is not None:
            out = out + self.mesh.interpolate(self.nodes, points)
        return out

    def inverse(self, targets: np.ndarray) -> np.ndarray:
        """Tile pixels (n, 2) that land on section coordinates `targets` (n, 2)."""
        targets = np.asarray(targets, np.float64)
        inv = np.linalg.inv(np.asarray(self.matrix))
        points = (targets - self.offset) @ inv.T
        for _ in range(INVERSE_ROUNDS):
            points = points - (self.forward(points) - targets) @ inv.T
        return points

    def landing(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`forward` of the tile pixels at coordinate arrays x, y (any one shape): the same up
        to rounding, but elementwise (no (n, 2) reductions, no (n, 4) node gathers), for the
        render's million pixels a box. Beyond one mesh cell outside the tile the mesh term is
        held at its value there instead of extrapolated."""
        from scipy import ndimage

        (cx, cy), radius = self.lens.centre, self.lens.radius
        dx, dy = x - cx, y - cy
        bend = self.lens.kappa * ((dx * dx + dy * dy) / radius**2) / radius
        lx, ly = x + bend * dx, y + bend * dy
        (a, b), (c, d) = np.asarray(self.matrix)
        ox, oy = a * lx + b * ly + self.offset[0], c * lx + d * ly + self.offset[1]
        if self.mesh is None or self.nodes is None:
            return ox, oy
        # one node more on every side, extrapolated linearly as `MeshGrid.interpolate` does
        # beyond its outer nodes (map_coordinates' own modes clamp or reflect instead)
        nodes = np.asarray(self.nodes).reshape(*self.mesh.shape, 2)
        grid = np.pad(nodes, ((1, 1), (1, 1), (0, 0)), mode="reflect", reflect_type="odd")
        at = [(v - o) / self.mesh.spacing + 1 for v, o in zip((x, y), self.mesh.origin)]
        for out, k in ((ox, 0), (oy, 1)):
            out += ndimage.map_coordinates(grid[:, :, k], at, order=1, mode="nearest")
        return ox, oy

    def footprint(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) corners of the section box the tile covers."""
        placed = self.forward(edge_points(self.lens.shape, (16, 16)))
        return placed.min(axis=0), placed.max(axis=0)

    def to_json(self) -> dict:
        out = {
            "matrix": np.asarray(self.matrix).tolist(),
            "offset": np.asarray(self.offset).tolist(),
        }
        if self.mesh is not None and self.nodes is not None:
            out["mesh"] = {
                "origin": list(self.mesh.origin),
                "spacing": self.mesh.spacing,
                "shape": list(self.mesh.shape),
                "nodes": np.asarray(self.nodes).tolist(),
            }
        return out

    @classmethod
    def from_json(cls, lens: Lens, value: dict) -> TileTransform:
        mesh = nodes = None
        if "mesh" in value:
            m = value["mesh"]
            mesh = MeshGrid(tuple(m["origin"]), float(m["spacing"]), tuple(m["shape"]))
            nodes = np.asarray(m["nodes"], np.float64).reshape(-1, 2)
        return cls(
            lens,
            np.asarray(value["matrix"], np.float64),
            np.asarray(value["offset"], np.float64),
            mesh,
            nodes,
        )


def edge_points(shape: tuple[int, int], counts: tuple[int, int]) -> np.ndarray:
    """Points (n, 2) along the edge of a tile of `shape` (x, y): `counts` evenly spaced along
    each side in x and in y, corners included."""
    w, h = (float(s - 1) for s in shape)
    xs, ys = (np.linspace(0, s, n) for s, n in zip((w, h), counts))
    return np.concatenate(
        [np.column_stack([xs, np.full_like(xs, y)]) for y in (0.0, h)]
        + [np.column_stack([np.full_like(ys, x), ys]) for x in (0.0, w)]
    )


def tile_mesh(shape: tuple[int, int], spacing: float) -> MeshGrid:
    """Mesh nodes over a tile of `shape` (x, y), at most `spacing` apart, ends included."""
    steps = [max(1, math.ceil((s - 1) / spacing)) for s in shape]
    spacing = max((s - 1) / n for s, n in zip(shape, steps))
    return MeshGrid((0.0, 0.0), float(spacing), (steps[0] + 1, steps[1] + 1))
