"""The two jobs of `montage`: solve each section's tiles (one task per section), render chunks.

Solve reads a section's tiles, matches them, solves their transforms and shading, writes
``sections/<z>.json`` under the work URL and the section's report (``montage/<z>.json`` and
``.png``) in the output layer's folder. Render reads those (once per worker process) and the
tiles that reach each output chunk.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Chunk
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import fetch_file, get, put, put_json
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.montage.flatfield import Shading, estimate_shading, seam_steps
from petavox.tasks.montage.manifest import TileEntry
from petavox.tasks.montage.montage_quality import layout_png, section_report
from petavox.tasks.montage.tile_matches import MatchParams
from petavox.tasks.montage.tile_render import CubicSampler, render_box, tiles_touching
from petavox.tasks.montage.tile_solve import TileSolveParams, montage_tiles
from petavox.tasks.montage.tile_transforms import Lens, TileTransform

REPORT_FOLDER = "montage"


def section_key(z: int) -> str:
    return f"sections/{z}.json"


def read_tile(url: str, context: StorageContext) -> np.ndarray:
    """A tile image (PNG, TIFF, BMP, JPEG: 8-bit grey) as an array indexed [x, y]."""
    from PIL import Image

    data = fetch_file(url, context)
    if data is None:
        raise InputError(f"tile {url} does not exist; fix its path in the tile manifest")
    try:
        image = Image.open(io.BytesIO(data))
        array = np.asarray(image)
    except Exception as error:  # PIL raises many kinds for a file that is not an image
        raise InputError(f"tile {url} is not a readable image ({error})") from error
    if array.ndim != 2 or array.dtype != np.uint8:
        raise InputError(
            f"tile {url} is {image.mode} {array.shape}, not an 8-bit grey image; convert the "
            "tiles to 8-bit greyscale (e.g. with a percentile stretch) and montage again"
        )
    return np.ascontiguousarray(array.T)


@dataclass(frozen=True)
class SolvedSection:
    """What render needs of one section: its tiles, their transforms and shading."""

    urls: list[str]
    transforms: list[TileTransform]
    shading: Shading

    def to_json(self) -> dict[str, Any]:
        lens = self.transforms[0].lens if self.transforms else Lens((0, 0))
        return {
            "tile_shape": list(lens.shape),
            "lens_px": lens.kappa,
            "tiles": [{"url": u, **t.to_json()} for u, t in zip(self.urls, self.transforms)],
            "shading": self.shading.to_json(),
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SolvedSection:
        lens = Lens(tuple(value["tile_shape"]), float(value["lens_px"]))  # type: ignore[arg-type]
        transforms = [TileTransform.from_json(lens, t) for t in value["tiles"]]
        shading = Shading.from_json(lens.shape, value["shading"])
        return cls([t["url"] for t in value["tiles"]], transforms, shading)


def tile_list_key(z: int) -> str:
    return f"tiles/{z}.json"


def write_tile_lists(work_url: str, sections, context: StorageContext) -> None:
    """Each section's tiles (`sections`: z → TileEntry tuple) as its own work file."""
    for z, entries in sections.items():
        rows = [[e.url, e.x, e.y] for e in entries]
        put_json(work_url, tile_list_key(z), rows, context)


def read_tile_list(work_url: str, z: int, context: StorageContext) -> tuple[TileEntry, ...]:
    import json

    data = get(work_url, tile_list_key(z), context)
    rows = json.loads(data) if data is not None else []
    return tuple(TileEntry(z, url, float(x), float(y)) for url, x, y in rows)


@dataclass(frozen=True, kw_only=True)
class SolveSectionJob:
    """Per section (chunk z): match, solve, estimate the shading, report. A section's tiles
    are `tiles/<z>.json` under `work_url`, which the driver writes before dispatch
    (`write_tile_lists`): a task carries and reads its own section's list, not every one."""

    match: MatchParams
    solve: TileSolveParams
    shading_degree: int
    work_url: str
    report_url: str
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        z = chunk.write_box.start[2]
        entries = read_tile_list(self.work_url, z, self.context)
        urls = [e.url for e in entries]
        tiles = [read_tile(u, self.context) for u in urls]
        if tiles and len({t.shape for t in tiles}) > 1:
            shapes = sorted({t.shape for t in tiles})
            raise InputError(
                f"section {z}: tiles of different sizes {shapes}; a section's tiles must share "
                "one size (one camera): crop or pad them to one"
            )
        stage = np.array([(e.x, e.y) for e in entries], np.float64).reshape(-1, 2)
        matches, transforms = montage_tiles(tiles, stage, self.match, self.solve)
        pairs = [(m.first, m.second) for m in matches if len(m.confidence)]
        shading = (
            estimate_shading(tiles, transforms, pairs, self.shading_degree)
            if tiles
            else Shading.none((0, 0), 0)
        )
        solved = SolvedSection(urls, transforms, shading)
        put_json(self.work_url, section_key(z), solved.to_json(), self.context)
        corrected = [shading.correct(t, k) for k, t in enumerate(tiles)]
        seams = seam_steps(corrected, transforms, pairs)
        report = section_report(z, urls, stage, matches, transforms, self.match.max_offset, seams)
        put_json(self.report_url, f"{REPORT_FOLDER}/{z}.json", report, self.context)
        if tiles:
            png = layout_png(report, transforms, f"section {z}: {len(tiles)} tiles")
            put(self.report_url, f"{REPORT_FOLDER}/{z}.png", png, self.context)
        return report["summary"]


def read_section(work_url: str, z: int, context: StorageContext) -> SolvedSection:
    """Section z's solved tiles, as the solve step wrote them under `work_url`."""
    import json

    data = get(work_url, section_key(z), context)
    if data is None:
        raise InputError(f"{work_url}: section {z} was not solved; run the montage again")
    return SolvedSection.from_json(json.loads(data))


_solved = lru_cache(maxsize=64)(read_section)  # once per worker process


@lru_cache(maxsize=32)
def _corrected(url: str, index: int, work_url: str, z: int, context: StorageContext):
    """Tile `index` of section z, shading corrected, as a spline (prefiltered once)."""
    section = _solved(work_url, z, context)
    return CubicSampler(section.shading.correct(read_tile(url, context), index))


@dataclass(frozen=True, kw_only=True)
class RenderSectionsJob:
    """Renders the montaged sections over a chunk's write box into `target` (uint8)."""

    target: Layer
    work_url: str
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        box = chunk.write_box
        start, stop = box.start[:2], box.stop[:2]
        out = np.zeros(tuple(box.shape), np.uint8)
        read = 0
        for k, z in enumerate(range(box.start[2], box.stop[2])):
            section = _solved(self.work_url, z, self.context)
            near = set(tiles_touching(section.transforms, start, stop))
            images = [
                _corrected(u, i, self.work_url, z, self.context) if i in near else None
                for i, u in enumerate(section.urls)
            ]
            read += len(near)
            shape = (box.shape[0], box.shape[1])
            values = render_box(images, section.transforms, start, shape)
            out[:, :, k] = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        self.target.write(box, out)
        return {"tiles_read": read}
