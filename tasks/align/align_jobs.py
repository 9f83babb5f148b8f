"""The three jobs of `align`: estimate flows per section (and tile), solve once, render chunks.

Estimate writes ``flows/<z>-<back>-<tile id>.npz`` (section z against z − back) under the work
URL; solve reads them all and writes ``transforms.npz``; render reads that (once per worker
process) and the raw voxels each output chunk samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from petavox.tasks.align.drift import keep_content_motion
from petavox.tasks.align.flow import FlowParams, PairFlow, estimate_pair
from petavox.tasks.align.quality import alignment_report
from petavox.tasks.align.render import SectionTransforms, box_fields, source_box, warp_box
from petavox.tasks.align.report_plot import report_png
from petavox.tasks.align.solve import Pair, SolveParams, solve_motion
from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get_arrays, list_keys, put, put_arrays, put_json
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.core.values import check_values

TRANSFORMS = "transforms.npz"
REPORT_JSON, REPORT_PNG = "alignment/report.json", "alignment/report.png"


def flow_key(z: int, back: int, tile: str) -> str:
    return f"flows/{z}-{back}-{tile}.npz"


@dataclass(frozen=True, kw_only=True)
class EstimateJob:
    """Per section z (and xy tile): flows of z against z − 1 (and z − 2 when bridging)."""

    source: Layer
    params: FlowParams
    margin: int  # read this much around the tile: the largest expected shift
    backs: tuple[int, ...]
    work_url: str
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        tile = chunk.write_box
        volume = self.source.bounds(0)
        z = tile.start[2]
        region = Box(
            (tile.start[0] - self.margin, tile.start[1] - self.margin, z),
            (tile.stop[0] + self.margin, tile.stop[1] + self.margin, z + 1),
        ).intersection(volume)
        moving = self._section(region, z)
        found = 0
        for back in self.backs:
            if z - back < volume.start[2]:
                continue
            flow = estimate_pair(self._section(region, z - back), moving, self.params)
            points = flow.points + np.array(region.start[:2], np.float64)
            inside = np.all((points >= tile.start[:2]) & (points < tile.stop[:2]), axis=1)
            kept = PairFlow(
                points=points[inside],
                displacement=flow.displacement[inside],
                confidence=flow.confidence[inside],
            )
            put_arrays(
                self.work_url, flow_key(z, back, chunk.id), kept.as_arrays(), self.source.context
            )
            found += int((kept.confidence > 0).sum())
        return {"patches": found}

    def _section(self, region: Box, z: int) -> np.ndarray:
        box = Box((region.start[0], region.start[1], z), (region.stop[0], region.stop[1], z + 1))
        data = self.source.read(box, fill_missing=self.fill_missing)
        check_values(data, self.source.url, box, "align")
        return data[:, :, 0]


def load_pairs(work_url: str, first: int, context: StorageContext) -> list[Pair]:
    """Every stored flow, tiles of one section pair joined into one `Pair`."""
    grouped: dict[tuple[int, int], list[dict]] = {}
    for key in list_keys(work_url, "flows/", context):
        z, back, _ = key.removeprefix("flows/").split("-", 2)
        z, back = int(z), int(back)
        grouped.setdefault((z, back), []).append(get_arrays(work_url, key, context))
    pairs = []
    for (z, back), parts in sorted(grouped.items()):
        flow = PairFlow(
            **{
                name: np.concatenate([p[name] for p in parts])
                for name in ("points", "displacement", "confidence")
            }
        )
        pairs.append(Pair(moving=z - first, reference=z - back - first, flow=flow))
    return pairs


@dataclass(frozen=True, kw_only=True)
class SolveJob:
    """The global step: all flows → one transform per section (one chunk, one task), and the
    quality report (`quality`) under `report_url` (the aligned layer's folder)."""

    volume: Box
    params: SolveParams
    work_url: str
    context: StorageContext
    report_url: str | None = None

    def run(self, chunk: Chunk) -> dict:
        first, sections = self.volume.start[2], self.volume.shape[2]
        pairs = load_pairs(self.work_url, first, self.context)
        xy = self.volume.start[:2], self.volume.stop[:2]
        affines, nodes, mesh = solve_motion(pairs, sections, *xy, self.params)
        solved = SectionTransforms(first, affines, nodes, mesh)
        kept_affines, kept_nodes, window = keep_content_motion(
            affines, nodes, self.params.drift_window
        )
        transforms = SectionTransforms(first, kept_affines, kept_nodes, mesh)
        put_arrays(self.work_url, TRANSFORMS, transforms.to_arrays(), self.context)
        report = alignment_report(pairs, solved, transforms, self.volume, self.params, window)
        if self.report_url is not None:
            put_json(self.report_url, REPORT_JSON, report, self.context)
            title = f"{self.report_url}: {sections} sections"
            png = report_png(report["per_section"], title)
            put(self.report_url, REPORT_PNG, png, self.context)
        return {"sections": sections, "pairs": len(pairs), "summary": report["summary"]}


def read_transforms(work_url: str, context: StorageContext) -> SectionTransforms:
    """The solved per-section transforms of an `align` run's work folder."""
    return SectionTransforms.from_arrays(get_arrays(work_url, TRANSFORMS, context))


@lru_cache(maxsize=4)
def _transforms(work_url: str, context: StorageContext) -> SectionTransforms:
    """`read_transforms`, once per worker process (render tasks all need the same)."""
    return read_transforms(work_url, context)


@dataclass(frozen=True, kw_only=True)
class RenderJob:
    source: Layer
    target: Layer
    work_url: str
    fill_missing: bool = False

    def run(self, chunk: Chunk) -> dict:
        transforms = _transforms(self.work_url, self.target.context)
        box = chunk.write_box
        fields = box_fields(transforms, box)
        read = source_box(fields, box, self.source.bounds(0))
        raw = self.source.read(read, fill_missing=self.fill_missing)
        check_values(raw, self.source.url, read, "align")
        labels = self.source.layer_type == "segmentation"
        self.target.write(box, warp_box(fields, raw, read, box, labels))
        return {"read_voxels": read.size}


def section_grid(volume: Box, tile: tuple[int, int] | None) -> ChunkGrid:
    """One chunk per section (and xy tile)."""
    shape = (tile[0], tile[1], 1) if tile else (volume.shape[0], volume.shape[1], 1)
    return ChunkGrid(volume, shape, 0, origin=volume.start)
