"""Figures of a written layer for the run report: one bounded read, then segment sizes or value
statistics, a thumbnail section and a histogram, as numbers and PNGs.

The read is the layer's finest mip that holds at most `MAX_VOXELS` (the whole volume at mip 0
for a small run, a coarser mip of a pyramid for a big one), or a central crop of the coarsest
mip when none does; the figures say which (`Overview.source`), and they are exact only for a
whole-volume read of mip 0. Sizes are in voxels of mip 0 (a coarser read's counts scaled by
its voxel's volume).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import fastremap
import numpy as np

from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer

MAX_VOXELS = 1 << 24  # 16 M voxels: 64 MiB of uint32 labels at most
THUMBNAIL_SIDE = 512  # pixels of a thumbnail's longer side: at most this, at least half
DOMINANT = 0.5  # a segment holding more of the labelled voxels than this is an error


@dataclass(frozen=True)
class Overview:
    """A bounded read of a layer: the voxels (x, y, z[, c]), the mip, and mip 0 voxels per
    voxel read."""

    data: np.ndarray
    mip: int
    voxel_volume: float
    whole: bool  # the whole volume at `mip` (else a central crop)

    @property
    def exact(self) -> bool:
        return self.mip == 0 and self.whole

    @property
    def source(self) -> str:
        """Where the figures come from, for people."""
        if self.exact:
            return "the whole volume"
        part = "the whole volume" if self.whole else "a central crop"
        return f"{part} at mip {self.mip}"


def overview(layer: Layer, max_voxels: int = MAX_VOXELS) -> Overview:
    """The layer read within `max_voxels` (missing chunks as zeros: a report never fails)."""
    mip = next(
        (m for m in range(layer.num_mips) if layer.bounds(m).shape.prod() <= max_voxels),
        layer.num_mips - 1,
    )
    bounds = layer.bounds(mip)
    box, whole = bounds, True
    if bounds.shape.prod() > max_voxels:
        shrink = (max_voxels / bounds.shape.prod()) ** (1 / 3)
        side = [max(1, int(s * shrink)) for s in bounds.shape]
        start = [b + (s - w) // 2 for b, s, w in zip(bounds.start, bounds.shape, side)]
        box, whole = Box(start, [a + w for a, w in zip(start, side)]), False
    data = layer.read(box, mip, fill_missing=True)
    scale = np.asarray(layer.resolution(mip)) / np.asarray(layer.resolution(0))
    return Overview(data=data, mip=mip, voxel_volume=float(scale.prod()), whole=whole)


def segment_sizes(view: Overview) -> dict[str, Any]:
    """Count, size distribution (mip 0 voxels) and the largest segment's share of the labelled
    voxels, with `dominant` set when it holds more than `DOMINANT` of them."""
    ids, counts = fastremap.unique(view.data, return_counts=True)
    keep = ids != 0
    ids, counts = ids[keep], counts[keep].astype(np.float64) * view.voxel_volume
    labelled = float(counts.sum())
    figures: dict[str, Any] = {
        "segments": int(ids.size),
        "labelled_voxels": round(labelled),
        "labelled_fraction": round(float(np.count_nonzero(view.data)) / view.data.size, 4),
        "source": view.source,
        "exact": view.exact,
    }
    if ids.size:
        top = int(np.argmax(counts))
        figures |= {
            "median_voxels": round(float(np.median(counts))),
            "p90_voxels": round(float(np.percentile(counts, 90))),
            "largest_id": int(ids[top]),
            "largest_share": round(float(counts[top]) / labelled, 4),
        }
    figures["dominant"] = bool(ids.size) and figures["largest_share"] > DOMINANT
    return figures


def value_figures(view: Overview) -> dict[str, Any]:
    """Mean, percentiles and the share of zeros of an image or probability layer (per channel
    pooled), in the layer's own units; `above_half` for data in 0-1 or 0-255 maps."""
    values = view.data.reshape(-1).astype(np.float64)
    top = 255.0 if view.data.dtype == np.uint8 else 1.0
    low, median, high = np.percentile(values, [1, 50, 99])
    figures = {
        "mean": round(float(values.mean()), 4),
        "p1": round(float(low), 4),
        "median": round(float(median), 4),
        "p99": round(float(high), 4),
        "zero_fraction": round(float(np.count_nonzero(values == 0)) / values.size, 4),
        "source": view.source,
    }
    if view.data.dtype == np.uint8 or np.issubdtype(view.data.dtype, np.floating):
        figures["above_half"] = round(float(np.count_nonzero(values >= top / 2)) / values.size, 4)
    return figures


def middle_section(view: Overview) -> np.ndarray:
    """The read's middle z section as (y, x[, c]), strided to `THUMBNAIL_SIDE` at most."""
    section = view.data[:, :, view.data.shape[2] // 2]
    step = max(1, math.ceil(max(section.shape[:2]) / THUMBNAIL_SIDE))
    return np.swapaxes(section[::step, ::step], 0, 1)


def segment_colours(labels: np.ndarray) -> np.ndarray:
    """A colour per id (the same id always the same colour), black for 0: (..., 3) uint8."""
    mixed = (labels.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFF)
    rgb = np.stack([(mixed >> np.uint64(s)) & np.uint64(255) for s in (16, 8, 0)], axis=-1)
    rgb = (64 + rgb.astype(np.uint16) * 3 // 4).astype(np.uint8)  # no near-black segments
    rgb[labels == 0] = 0
    return rgb


def grey_levels(section: np.ndarray) -> np.ndarray:
    """An image section as uint8: uint8 as it is, 0-1 floats × 255, others stretched between
    their 1st and 99th percentiles."""
    if section.dtype == np.uint8:
        return section
    values = section.astype(np.float64)
    if np.issubdtype(section.dtype, np.floating) and values.min() >= 0 and values.max() <= 1:
        low, high = 0.0, 1.0
    else:
        low, high = np.percentile(values, [1, 99])
        high = max(high, low + 1e-9)
    return (np.clip((values - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def thumbnail_png(view: Overview, layer_type: str) -> bytes:
    """The middle section as a PNG: segments in colours, images in grey (3 channels as RGB)."""
    from PIL import Image

    section = middle_section(view)
    if layer_type == "segmentation":
        pixels = segment_colours(section)
    else:
        pixels = grey_levels(section)
        if pixels.ndim == 3:  # channels: the first three as RGB, one as grey
            pixels = pixels[..., :3] if pixels.shape[2] >= 3 else pixels[..., 0]
    image = Image.fromarray(np.ascontiguousarray(pixels))
    grow = THUMBNAIL_SIDE // 2 // max(image.size)
    if grow > 1:  # a small section, enlarged in whole pixels (no blur)
        image = image.resize((image.width * grow, image.height * grow), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def histogram_png(view: Overview, layer_type: str, title: str) -> bytes:
    """Segment sizes (log-binned) or the value histogram (log counts), as a PNG."""
    if layer_type == "segmentation":
        ids, counts = fastremap.unique(view.data, return_counts=True)
        sizes = counts[ids != 0] * view.voxel_volume
        low = max(float(sizes.min()), 1.0) if sizes.size else 1.0
        high = max(float(sizes.max()), 2 * low) if sizes.size else 10.0
        heights, edges = np.histogram(sizes, bins=np.geomspace(low, high, 31))
        return bar_chart_png(heights, edges, title, "segment size (voxels)", log_x=True)
    heights, edges = np.histogram(view.data.reshape(-1), bins=64)
    return bar_chart_png(heights, edges, title, "value (voxels: log scale)", log_y=True)


def bar_chart_png(
    heights: np.ndarray,
    edges: np.ndarray,
    title: str,
    label: str,
    *,
    log_x: bool = False,
    log_y: bool = False,
) -> bytes:
    """A histogram drawn with PIL: bars, a few x ticks, the tallest bar's count, a title.
    (matplotlib would take ~0.3 s a figure; a report draws one per layer.)"""
    from PIL import Image, ImageDraw, ImageFont

    width, height, left, bottom, top = 440, 264, 14, 44, 40
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(12)
    plot_w, plot_h = width - 2 * left, height - top - bottom
    scaled = np.log1p(heights) if log_y else heights.astype(np.float64)
    tallest = max(float(scaled.max()), 1e-9)
    where = np.log10(edges) if log_x else edges.astype(np.float64)
    span = max(float(where[-1] - where[0]), 1e-9)

    def x_of(value: float) -> float:
        return left + (value - where[0]) / span * plot_w

    for k, bar in enumerate(scaled):
        if bar > 0:
            y = top + plot_h * (1 - bar / tallest)
            draw.rectangle([x_of(where[k]), y, x_of(where[k + 1]) - 1, top + plot_h], "#1f77b4")
    draw.line([left, top + plot_h, left + plot_w, top + plot_h], "black")
    ticks = range(int(np.ceil(where[0])), int(np.floor(where[-1])) + 1) if log_x else None
    for tick in ticks if ticks is not None else np.linspace(where[0], where[-1], 5):
        x = x_of(float(tick))
        draw.line([x, top + plot_h, x, top + plot_h + 4], "black")
        text = f"{10.0**tick:g}" if log_x else f"{tick:.3g}"
        draw.text((x, top + plot_h + 6), text, "black", font, anchor="ma")
    draw.text((width / 2, height - 4), label, "black", font, anchor="md")
    draw.text((left, top - 4), f"max {int(heights.max()):,} per bar", "dimgray", font, anchor="ld")
    draw.text((width / 2, 4), title, "black", font, anchor="ma")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
