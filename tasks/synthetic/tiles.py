"""Tiles cut from a whole section the way a microscope images it, with the truth kept.

A grid of overlapping tiles; each tile is the section seen through its own small rotation and
scale (centred over the section's tiles: a rotation or scale of the whole section is invisible
from its tiles, so every montage is defined only up to it), the lens's radial distortion shared
by all tiles, the scan's brightness shading (vignetting towards the corners and a gradient
along x, the scan direction) and fresh noise. The stage positions given to the montage are the
true positions plus a stage error. `placement_residuals` scores a montage's tile transforms
against the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.montage.tile_transforms import Lens, TileTransform


@dataclass(frozen=True, kw_only=True)
class TileDamage:
    """How the tiles are cut and spoiled (defaults: the montage acceptance's documented set)."""

    grid: tuple[int, int] = (3, 3)  # columns, rows
    overlap: float = 0.2  # fraction of a tile's side shared with its neighbour
    stage_error: float = 20.0  # stage positions off by up to this (px, uniform in x and y)
    rotation_deg: float = 1.0  # each tile rotated by up to this
    scale: float = 0.005  # and scaled by up to this fraction
    lens_px: float = 1.5  # radial lens displacement at a tile corner (px, outward)
    vignetting: float = 0.2  # brightness lost at the tile corners (fraction)
    scan_gradient: float = 0.1  # brightness change across a tile along x (fraction)
    noise: float = 2.0  # grey-level standard deviation of each tile's own noise
    margin: int = 4  # pixels of the section kept clear of tiles (rotation, lens)
    centred_stage: bool = False  # stage errors sum to 0 over a section: its frame is the truth's
    seed: int = 0


@dataclass(frozen=True)
class TileCut:
    """The tiles ((w, h) arrays indexed [x, y]), the true map of each tile's pixels into the
    section, the stage positions (n, 2) of their first pixel, and the shading applied."""

    tiles: list[np.ndarray]
    truth: list[TileTransform]
    stage: np.ndarray
    shading: np.ndarray
    grid: tuple[int, int]


def tile_shape(section: tuple[int, int], damage: TileDamage) -> tuple[int, int]:
    """The largest tile (w, h) for which the grid with its overlap fits the section."""
    out = []
    for side, n in zip(section, damage.grid):
        out.append(int((side - 2 * damage.margin) / (n - (n - 1) * damage.overlap)))
    return out[0], out[1]


def shading(shape: tuple[int, int], damage: TileDamage) -> np.ndarray:
    """The multiplicative brightness of each tile pixel (w, h): vignetting × scan gradient."""
    lens = Lens(shape)
    xs, ys = (np.arange(s, dtype=np.float64) for s in shape)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    d2 = ((gx - lens.centre[0]) ** 2 + (gy - lens.centre[1]) ** 2) / lens.radius**2
    along = gx / max(shape[0] - 1, 1) - 0.5
    return (1 - damage.vignetting * d2) * (1 + damage.scan_gradient * along)


def _true_transforms(
    section: tuple[int, int], shape: tuple[int, int], damage: TileDamage, rng
) -> list[TileTransform]:
    n = damage.grid[0] * damage.grid[1]
    angles = np.deg2rad(rng.uniform(-damage.rotation_deg, damage.rotation_deg, n))
    scales = rng.uniform(-damage.scale, damage.scale, n)
    angles, scales = angles - angles.mean(), scales - scales.mean()
    lens = Lens(shape, damage.lens_px)
    step = [shape[a] * (1 - damage.overlap) for a in range(2)]
    out = []
    for k in range(n):
        col, row = k % damage.grid[0], k // damage.grid[0]
        origin = np.array([damage.margin + col * step[0], damage.margin + row * step[1]])
        c, s = np.cos(angles[k]), np.sin(angles[k])
        matrix = (1 + scales[k]) * np.array([[c, -s], [s, c]])
        out.append(TileTransform(lens, matrix, lens.centre + origin - matrix @ lens.centre))
    return out


def cut_tiles(section: np.ndarray, damage: TileDamage = TileDamage()) -> TileCut:
    """Tiles of `section` (2-D, indexed [x, y]) by `damage`, row by row."""
    from scipy import ndimage

    rng = np.random.default_rng(damage.seed)
    shape = tile_shape(section.shape, damage)
    truth = _true_transforms(section.shape, shape, damage, rng)
    shade = shading(shape, damage)
    image = section.astype(np.float32)
    xs, ys = (np.arange(s, dtype=np.float64) for s in shape)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    pixels = np.column_stack([gx.ravel(), gy.ravel()])
    tiles = []
    for transform in truth:
        where = transform.forward(pixels)
        values = ndimage.map_coordinates(image, [where[:, 0], where[:, 1]], order=3, mode="nearest")
        values = values.reshape(shape) * shade + rng.normal(0, damage.noise, shape)
        tiles.append(np.clip(np.rint(values), 0, 255).astype(np.uint8))
    errors = rng.uniform(-damage.stage_error, damage.stage_error, (len(truth), 2))
    if damage.centred_stage:
        errors -= errors.mean(axis=0)
    stage = np.array([t.forward(np.zeros((1, 2)))[0] for t in truth]) + errors
    return TileCut(tiles, truth, stage, shade, damage.grid)


def placement_residuals(
    found: list[TileTransform], truth: list[TileTransform], step: int = 4
) -> np.ndarray:
    """Per sampled tile pixel (every `step` px of every tile), the distance (px) between where
    the montage put it and where it truly is, after removing only the mean offset."""
    diffs = []
    for f, t in zip(found, truth):
        xs, ys = (np.arange(0, s, step, dtype=np.float64) for s in t.lens.shape)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        pixels = np.column_stack([gx.ravel(), gy.ravel()])
        diffs.append(f.forward(pixels) - t.forward(pixels))
    d = np.concatenate(diffs)
    return np.linalg.norm(d - d.mean(axis=0), axis=1)


def mosaic_section(stack: np.ndarray, side: int) -> np.ndarray:
    """A section `side` px square built of distinct sections of `stack` ([x, y, z], square
    sections), each turned by a further quarter: real content for tiles larger than the
    stack's own sections."""
    block, sections = stack.shape[0], stack.shape[2]
    n = -(-side // block)
    rows = [
        np.concatenate([np.rot90(stack[:, :, (i * n + j) % sections], i + j) for j in range(n)], 1)
        for i in range(n)
    ]
    return np.ascontiguousarray(np.concatenate(rows, 0)[:side, :side])


def write_tiles(folder: str, cuts: dict[int, TileCut]) -> str:
    """PNG tiles of each section's cut under `folder` and their manifest (petavox CSV, stage
    positions in px); returns the manifest's path."""
    import csv
    import os

    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    manifest = os.path.join(folder, "tiles.csv")
    with open(manifest, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["section", "file", "x", "y"])
        for z, cut in sorted(cuts.items()):
            for k, (tile, (x, y)) in enumerate(zip(cut.tiles, cut.stage)):
                name = f"s{z:04d}_t{k:02d}.png"
                Image.fromarray(np.ascontiguousarray(tile.T)).save(os.path.join(folder, name))
                out.writerow([z, name, f"{x:.2f}", f"{y:.2f}"])
    return manifest
