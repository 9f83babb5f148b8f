"""Stage `montage`: each section's tiles (from a tile manifest) → one seamless section image.

Steps: solve (one task per section: match, solve, shading, report) → render (chunks of the
montaged layer) → pyramid. The layer covers the tiles' stage positions grown by `margin`, in
stage pixels; the render identity derives from the solve's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid, Vec3
from petavox.tasks.core.layers import LayerSpec
from petavox.tasks.core.storage import join_url, local_path
from petavox.tasks.montage.manifest import TileEntry, read_manifest
from petavox.tasks.montage.montage_jobs import (
    REPORT_FOLDER,
    RenderSectionsJob,
    SolveSectionJob,
    read_tile,
    write_tile_lists,
)
from petavox.tasks.montage.tile_matches import MatchParams
from petavox.tasks.montage.tile_solve import TileSolveParams
from petavox.workflows.catalog import Catalog
from petavox.workflows.fingerprint import fingerprint
from petavox.workflows.params import PositiveTriple, Resolution, VolumeWriterParams, layer_sharding
from petavox.workflows.plan import DriverHooks, JobBinding, Output, StagePlan, identity
from petavox.workflows.sizing import writing_task_shape
from petavox.workflows.stage import Positional, Stage
from petavox.workflows.stages.downsample import DownsampleParams, downsample_plan

VERSION = 1
BYTES_PER_VOXEL = 12  # render: pixel coordinates (float64 pairs are per row), sums, output


class MontageParams(VolumeWriterParams):
    """Tiles of serial sections (a tile manifest) → one montaged image layer."""

    stage: Literal["montage"] = "montage"
    input: str = Field(
        description="tile manifest: petavox CSV/JSON, Fiji TileConfiguration.txt or Zeiss "
        "MultiSEM full_image_coordinates.txt (see README 'Tiles and montage')"
    )
    output: str = Field("raw", description="layer name under the run output, or a URL")
    resolution: Resolution = Field(description="pixel size and section thickness in nm, X,Y,Z")
    max_offset: float = Field(
        50.0, gt=0, description="largest error of a tile's stage position against a neighbour (px)"
    )
    patch: int = Field(32, ge=8, description="side of a seam patch along the seam (px)")
    min_overlap: int = Field(8, ge=4, description="narrowest overlap worth matching (px)")
    max_rotation_deg: float = Field(
        1.0, ge=0, le=10, description="largest rotation of a tile against the stage's axes (°)"
    )
    lens: bool = Field(True, description="solve one radial lens coefficient per section")
    mesh_spacing: float = Field(
        32.0, ge=0, description="px between a tile's elastic mesh nodes (0: affine only)"
    )
    stiffness: float = Field(1.0, gt=0, description="springs between neighbouring mesh nodes")
    flat_field: bool = Field(True, description="estimate and divide out the tiles' shading")
    margin: int = Field(
        64, ge=0, description="px added around the tiles' stage positions to form the layer"
    )
    frame: tuple[tuple[int, int], tuple[int, int]] | None = Field(
        None,
        description="the layer's box in stage pixels, [[x0,y0],[x1,y1]] (default: the stage "
        "footprints grown by margin)",
    )
    storage_chunk: PositiveTriple = Field((64, 64, 64), description="chunk size of the layer")

    @field_validator("frame")
    @classmethod
    def _frame(cls, value):
        if value is not None and any(b <= a for a, b in zip(*value)):
            raise ValueError(f"frame {value} is empty: each stop must exceed its start")
        return value

    chunk_shape: PositiveTriple | None = Field(
        None, description="render: voxels per task, a multiple of storage_chunk"
    )
    mips: int = Field(2, ge=0, le=12, description="pyramid levels (factor 2,2,1) to add")


def by_section(entries: list[TileEntry]) -> dict[int, tuple[TileEntry, ...]]:
    out: dict[int, list[TileEntry]] = {}
    for e in entries:
        out.setdefault(e.section, []).append(e)
    return {z: tuple(v) for z, v in sorted(out.items())}


def check_tiles(entries: list[TileEntry], catalog: Catalog) -> tuple[int, int]:
    """The tile size (x, y), read from the first tile; every local tile must exist."""
    missing = [e.url for e in entries if (p := local_path(e.url)) and not Path(p).is_file()]
    if missing:
        raise InputError(
            f"{len(missing)} tile file(s) of the manifest do not exist, e.g. {missing[0]}; fix "
            "the paths (relative paths are from the manifest's folder)"
        )
    shape = read_tile(entries[0].url, catalog.context).shape
    return shape[0], shape[1]


def layer_bounds(
    entries: list[TileEntry], shape: tuple[int, int], margin: int, chunk: tuple[int, ...]
) -> Box:
    """The tiles' stage footprints grown by `margin`, starting on the storage-chunk grid (so
    a chunk of the layer is a chunk of stage coordinates, and the pyramid's halvings are of
    whole voxels)."""
    xy = np.array([(e.x, e.y) for e in entries])
    step = np.array(chunk[:2])
    lo = (np.floor((xy.min(axis=0) - margin) / step) * step).astype(int)
    hi = np.ceil(xy.max(axis=0) + np.array(shape) + margin).astype(int)
    sections = [e.section for e in entries]
    return Box((lo[0], lo[1], min(sections)), (hi[0], hi[1], max(sections) + 1))


def _note_inputs(path: Path, entries: list[TileEntry], catalog: Catalog) -> str:
    """The manifest's and local tiles' fingerprint, noted as what the stage reads."""
    parts = [fingerprint(path)]
    parts += [fingerprint(Path(p)) for e in entries if (p := local_path(e.url))]
    token = "files:" + identity("montage-inputs", 1, {"files": parts})
    catalog.note_read(f"file://{path}", token)
    return token


def manifest_path(name: str) -> Path:
    """The manifest's local path (a path or a file:// URL): it is read on the driver."""
    path = local_path(name) if "://" in name else name
    if path is None:
        raise InputError(
            f"tile manifest {name}: copy it to a local file (the tiles it lists may be remote)"
        )
    if not Path(path).is_file():
        raise InputError(f"tile manifest {path} does not exist")
    return Path(path).resolve()


def plan_montage(params: MontageParams, catalog: Catalog) -> list[StagePlan]:
    path = manifest_path(params.input)
    entries = read_manifest(path, pixel_size_nm=params.resolution[0])
    shape = check_tiles(entries, catalog)
    inputs = _note_inputs(path, entries, catalog)
    bounds = layer_bounds(entries, shape, params.margin, params.storage_chunk)
    if params.frame is not None:
        (x0, y0), (x1, y1) = params.frame
        bounds = Box((x0, y0, bounds.start[2]), (x1, y1, bounds.stop[2]))
    url = catalog.url(params.output)
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=bounds.shape,
        resolution=params.resolution,
        chunk_size=Vec3.of(params.storage_chunk),
        voxel_offset=bounds.start,
        encoding="raw",
        sharding=layer_sharding(params.sharding),
    )
    target = catalog.plan_layer(url, spec)
    solve_spec = {**params.hashed_fields(), "output": url, "inputs": inputs}
    solve = solve_plan(params, path, entries, bounds, solve_spec, catalog, url)
    work = solve.work[0]
    chunk_shape = writing_task_shape(
        params.chunk_shape, target, bounds.shape, BYTES_PER_VOXEL, name="montage chunk_shape"
    )
    render = StagePlan(
        label=f"montage → {params.output}: render",
        stage="montage-render",
        version=VERSION,
        spec={"solve": solve.identity, "task_shape": list(chunk_shape)},
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
        job=RenderSectionsJob(target=target, work_url=work, context=catalog.context),
        resources=params.resources,
        layer_infos={url: target.info},
        outputs=(Output(url),),
        work=(work,),
    )
    plans = [solve, render]
    if params.mips:
        plans.append(
            downsample_plan(DownsampleParams(input=params.output, mips=params.mips), catalog)
        )
    return plans


def solve_plan(
    params: MontageParams,
    path: Path,
    entries: list[TileEntry],
    bounds: Box,
    spec: dict,
    catalog: Catalog,
    url: str,
) -> StagePlan:
    """One task per section: match, solve, shading and the section's report (in `url`)."""
    work = join_url(
        catalog.root, "intermediate", "montage", identity("montage-solve", VERSION, spec)
    )
    return StagePlan(
        label=f"montage {path.name}: match and solve each section's tiles",
        stage="montage-solve",
        version=VERSION,
        spec=spec,
        grid=ChunkGrid(bounds, (bounds.shape[0], bounds.shape[1], 1), 0, origin=bounds.start),
        job=SolveSectionJob(
            match=MatchParams(
                max_offset=params.max_offset,
                patch=params.patch,
                min_overlap=params.min_overlap,
                max_rotation_deg=params.max_rotation_deg,
            ),
            solve=TileSolveParams(
                lens=params.lens, mesh_spacing=params.mesh_spacing, stiffness=params.stiffness
            ),
            shading_degree=3 if params.flat_field else 0,
            work_url=work,
            report_url=url,
            context=catalog.context,
        ),
        resources=params.resources,
        hooks=replace(_summary_hooks(url), bind=_writing_tile_lists(by_section(entries))),
        outputs=(Output(url),),  # the reports, in the layer's folder
        report=join_url(url, REPORT_FOLDER),
        work=(work,),
    )


def _writing_tile_lists(sections: dict[int, tuple[TileEntry, ...]]) -> JobBinding:
    """On the driver before dispatch: each section's tile list written as its own work file
    for the solve's tasks (Ray unpickles a task's job whole: with every section's list in it,
    the work would grow with sections × tiles)."""

    @contextmanager
    def bind(job: SolveSectionJob) -> Iterator[SolveSectionJob]:
        write_tile_lists(job.work_url, sections, job.context)
        yield job

    return bind


def _summary_hooks(url: str) -> DriverHooks:
    """Flagged tiles as each section finishes; a summary of every section at the end."""
    from tqdm import tqdm

    seen: list[dict] = []

    def on_result(chunk: Chunk, summary: dict) -> None:
        seen.append(summary)
        for tile, flags in summary["flagged"].items():
            tqdm.write(f"  section {summary['section']}, tile {tile}: {', '.join(flags)}")

    def on_done() -> dict:
        residuals = [s["residual_px"] for s in seen if s["residual_px"] is not None]
        flagged = Counter(f for s in seen for flags in s["flagged"].values() for f in flags)
        done = {
            "sections": len(seen),
            "tiles": sum(s["tiles"] for s in seen),
            "residual_median_px": round(float(np.median(residuals)), 3) if residuals else None,
            "residual_max_px": max(residuals, default=None),
            "flagged_tiles": dict(flagged),
            "visible_seams": sum(s["visible_seams"] for s in seen),
        }
        tqdm.write(
            f"montage of {done['sections']} sections ({done['tiles']} tiles): match residual "
            f"median {done['residual_median_px']} px (worst section {done['residual_max_px']}), "
            f"seams brighter on one side than the noise: {done['visible_seams']}; "
            f"flagged tiles: {dict(flagged) or 'none'}; report: {join_url(url, REPORT_FOLDER)}/"
        )
        return done

    return DriverHooks(on_result=on_result, on_done=on_done)


STAGE = Stage(
    name="montage",
    order=15,
    params=MontageParams,
    planner=plan_montage,
    positionals=(
        Positional(
            field="input", metavar="MANIFEST", help="tile manifest (CSV, JSON, Fiji, MultiSEM)"
        ),
        Positional(field="output", metavar="OUTPUT_URL", help="montaged image layer URL to write"),
    ),
)
