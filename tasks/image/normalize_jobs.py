"""Contrast normalisation: 16-bit, 32-bit or float EM to uint8 by fixed intensity levels.

Every voxel is mapped by levels (low, high) fixed before the map (for the whole volume, or per
section), then optionally equalised per section (`clahe`), so a voxel's value depends on the
volume's data and the levels, never on the chunk that computes it. Valid voxels map to
1..255; masked ones (blank: at or below `blank`; saturated: at the dtype's maximum) to 0,
which later stages read as missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box, Chunk, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.values import check_values
from petavox.tasks.image.clahe import clahe_section, tile_read_box

LEVELS_KEY = "levels.npy"  # (sections, 2) float64 low, high, in the work folder
SECTION_BOXES = 4  # per axis in x, y: up to 16 sample columns through every section
SECTION_SIDE = 64  # pixels per side of a sample column
MIN_SAMPLE = 64  # valid voxels a section's sample needs for levels of its own


@dataclass(frozen=True, kw_only=True)
class Masking:
    """Which voxels are not data: at or below `blank`, or at or above `saturated` (None: no
    saturation mask, as for floats)."""

    blank: float = 0.0
    saturated: float | None = None

    @classmethod
    def for_dtype(cls, dtype: np.dtype, blank: float, mask_saturated: bool) -> Masking:
        top = np.iinfo(dtype).max if np.issubdtype(dtype, np.integer) else None
        return cls(blank=blank, saturated=float(top) if mask_saturated and top else None)

    def valid(self, data: np.ndarray) -> np.ndarray:
        ok = data > self.blank
        if self.saturated is not None:
            ok &= data < self.saturated
        return ok


def levels_of(values: np.ndarray, masking: Masking, low: float, high: float) -> tuple | None:
    """The `low` and `high` percentiles of the valid values (None: fewer than MIN_SAMPLE)."""
    kept = values[masking.valid(values)]
    if kept.size < MIN_SAMPLE:
        return None
    lo, hi = np.percentile(kept.astype(np.float64), [low, high])
    return float(lo), float(max(hi, lo + 1e-6))


def to_uint8(data: np.ndarray, valid: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Valid voxels rescaled from low..high to 1..255 (per z section: `low`, `high` broadcast
    over the last axis); the others 0."""
    scale = 254.0 / (high - low)
    out = np.clip(np.round((data.astype(np.float64) - low) * scale) + 1, 1, 255).astype(np.uint8)
    out[~valid] = 0
    return out


def section_sample_boxes(bounds: Box) -> list[Box]:
    """Columns through every section at an even grid of x, y positions (the whole section
    when it is smaller than the sample): the same boxes whatever the chunking."""
    shape = bounds.shape
    starts = []
    for axis in (0, 1):
        size, width = shape[axis], min(SECTION_SIDE, shape[axis])
        if size <= SECTION_BOXES * SECTION_SIDE:
            starts.append([(bounds.start[axis], size)])
            continue
        centres = (np.arange(SECTION_BOXES) + 0.5) * size / SECTION_BOXES
        first = np.clip(np.round(centres - width / 2).astype(int), 0, size - width)
        starts.append([(bounds.start[axis] + int(f), width) for f in first])
    return [
        Box((x, y, bounds.start.z), (x + wx, y + wy, bounds.stop.z))
        for (y, wy) in starts[1]
        for (x, wx) in starts[0]
    ]


@dataclass(frozen=True, kw_only=True)
class SectionLevelsJob:
    """Levels of each section of a z slab from its sample columns, stored as one small array
    (rows: sections; NaN where the sample holds too few valid voxels)."""

    source: Layer
    masking: Masking
    percentiles: tuple[float, float]
    work_url: str
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        columns = [
            self.source.read(b, fill_missing=self.fill_missing) for b in section_sample_boxes(box)
        ]
        rows = np.full((box.shape.z, 2), np.nan)
        for z in range(box.shape.z):
            values = np.concatenate([c[:, :, z].ravel() for c in columns])
            found = levels_of(values, self.masking, *self.percentiles)
            if found is not None:
                rows[z] = found
        objects.put_array(self.work_url, f"sections/{box.start.z}.npy", rows, self.source.context)
        return {"sections": box.shape.z}


def gather_levels(work_url: str, starts: list[int], context) -> None:
    """The slabs' levels as one array; a section without levels of its own takes those of the
    nearest sections that have some (interpolated)."""
    rows = np.concatenate(
        [objects.get_array(work_url, f"sections/{z}.npy", context) for z in sorted(starts)]
    )
    ok = ~np.isnan(rows[:, 0])
    if not ok.any():
        raise InputError(
            "normalize: no section holds data the masks leave (every sampled voxel is blank or "
            "saturated); check the layer, or lower `blank` / set mask_saturated: false"
        )
    z = np.arange(len(rows))
    for k in (0, 1):
        rows[:, k] = np.interp(z, z[ok], rows[ok, k])
    objects.put_array(work_url, LEVELS_KEY, rows, context)


@dataclass(frozen=True, kw_only=True)
class NormalizeJob:
    """Maps a chunk to uint8 by `levels` (one (low, high), or read per section from
    `levels_url`), then CLAHE per section when `clahe_tile` is set."""

    source: Layer
    target: Layer
    masking: Masking
    levels: tuple[float, float] | None = None  # global mode; None: per section from levels_url
    levels_url: str | None = None  # section mode: the work folder of the levels
    clahe_tile: int = 0
    clahe_clip: float = 0.01
    fill_missing: bool = False
    _cache: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def with_levels(self, levels: tuple[float, float]) -> NormalizeJob:
        return replace(self, levels=levels)

    def section_levels(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """low, high of the box's sections, shaped to broadcast over x, y, z."""
        if self.levels is not None:
            return np.float64(self.levels[0]), np.float64(self.levels[1])
        if "rows" not in self._cache:
            url = self.levels_url or ""
            self._cache["rows"] = objects.get_array(url, LEVELS_KEY, self.source.context)
        first = box.start.z - self.source.bounds(0).start.z
        rows = self._cache["rows"][first : first + box.shape.z]
        return rows[:, 0], rows[:, 1]

    def run(self, chunk: Chunk) -> dict:
        write = chunk.write_box
        volume = self.source.bounds(0)
        read = tile_read_box(write, volume, self.clahe_tile) if self.clahe_tile else write
        data = self.source.read(read, fill_missing=self.fill_missing)
        check_values(data, self.source.url, read, "normalize")
        valid = self.masking.valid(data)
        out = to_uint8(data, valid, *self.section_levels(read))
        if self.clahe_tile:
            at = write.start - read.start
            window = (slice(at.x, at.x + write.shape.x), slice(at.y, at.y + write.shape.y))
            out = np.stack(
                [
                    clahe_section(
                        out[:, :, z], valid[:, :, z], self.clahe_tile, self.clahe_clip, window
                    )
                    for z in range(out.shape[2])
                ],
                axis=2,
            )
        self.target.write(write, np.asfortranarray(out))
        return {"voxels": write.size}


def levels_grid_shape(bounds: Box, sections_per_task: int) -> Vec3:
    """Slabs of whole sections: the levels step's task shape."""
    return Vec3(bounds.shape.x, bounds.shape.y, min(bounds.shape.z, sections_per_task))
