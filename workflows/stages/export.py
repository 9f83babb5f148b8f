"""Stage `export`: a layer with its whole pyramid to OME-Zarr (NGFF 0.4, Zarr v2), Zarr v3
(NGFF 0.5, sharded) or a precomputed copy; one step per level, one task per box of whole
output chunks (shards)."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from pydantic import Field

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.geometry import ChunkGrid, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import local_path
from petavox.tasks.image.export_jobs import (
    KIND_OF_FORMAT,
    PrecomputedExportJob,
    ZarrExportJob,
    check_level,
    finish_store,
    prepare_store,
    store_kind,
)
from petavox.tasks.image.ngff import (
    NGFF_VERSION,
    ZarrFormat,
    array_metadata,
    grow_shard,
    ome_attributes,
)
from petavox.workflows.catalog import Catalog
from petavox.workflows.params import PositiveTriple, Sharding, StageParams, layer_sharding
from petavox.workflows.plan import DriverHooks, Output, StagePlan
from petavox.workflows.provenance import current_writer
from petavox.workflows.sizing import task_shape
from petavox.workflows.stage import Positional, Stage

VERSION = 1


class ExportParams(StageParams):
    """A layer and its pyramid to OME-Zarr (Zarr v2 or v3) or a precomputed copy."""

    stage: Literal["export"] = "export"
    input: str = Field(description="image or segmentation layer to export (name or URL)")
    output: str = Field(description="the store to write (e.g. …/seg.ome.zarr), name or URL")
    format: Literal["ome-zarr", "zarr3", "precomputed"] = Field(
        "ome-zarr",
        description="ome-zarr: NGFF 0.4 on Zarr v2; zarr3: NGFF 0.5 on sharded Zarr v3; "
        "precomputed: a Neuroglancer precomputed copy",
    )
    storage_chunk: PositiveTriple | None = Field(
        None, description="chunk shape of every level, X,Y,Z (default: the layer's)"
    )
    sharding: Sharding = Field(
        None,
        description="zarr3: none, auto (shards of up to 64 MiB) or N chunks per shard; "
        "precomputed: none, auto or N; default: auto for zarr3, as the layer for precomputed",
    )
    chunk_shape: PositiveTriple | None = Field(
        None,
        description="voxels per task at each level, a multiple of the output's chunk (shard) "
        "shape (default: ~64 M voxels)",
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")


def check_input(layer: Layer) -> None:
    kind = layer.info.get("@type", "neuroglancer_multiscale_volume")
    if kind != "neuroglancer_multiscale_volume" or layer.info.get("type") not in (
        "image",
        "segmentation",
    ):
        raise InputError(
            f"{layer.url} is not an image or segmentation layer ({kind}, type "
            f"{layer.info.get('type')}); export writes volumes only: give an image or "
            "segmentation layer"
        )


def check_output(url: str, fmt: str, catalog: Catalog) -> None:
    """Refuse a store of another kind at `url`, or a Zarr store petavox did not write."""
    found = store_kind(url, catalog.context)
    wanted = KIND_OF_FORMAT[fmt]
    if found is not None and found != wanted:
        raise InputError(
            f"{url} already holds a {found} store; export --format {fmt} writes {wanted}. "
            "Choose another output, or delete it first"
        )
    if (
        found is not None
        and fmt != "precomputed"
        and current_writer(url, "", catalog.context) is None
    ):
        raise InputError(
            f"{url} holds a {found} store that petavox export did not write; choose another "
            "output, or delete it first"
        )


def level_task(
    requested: tuple[int, int, int] | None, unit: Vec3, extent: Vec3, width: int, name: str
) -> Vec3:
    """Task shape of one level: `requested` (a task that spans an axis need not be a multiple
    of the unit along it) or the default, in multiples of `unit`."""
    if requested is not None:
        whole = extent.ceildiv(unit) * unit
        spans = zip(requested, extent, whole)
        requested = tuple(w if r >= e else r for r, e, w in spans)  # type: ignore[assignment]
    return task_shape(
        requested, unit, extent, width, name="export chunk_shape", step_name=name, writes=name
    )


def zarr_levels(params: ExportParams, source: Layer) -> list[tuple[dict, Vec3]]:
    """Each level's array metadata and write unit (its chunk, or its shard for `zarr3`)."""
    fmt: ZarrFormat = params.format  # type: ignore[assignment]
    sharding = params.sharding
    if fmt == "ome-zarr" and sharding not in (None, "none"):
        raise InputError("Zarr v2 (--format ome-zarr) has no shards; use --format zarr3")
    width = source.dtype.itemsize * source.num_channels
    levels = []
    for mip in range(source.num_mips):
        extent = source.bounds(mip).shape
        chunk = Vec3.of(params.storage_chunk or source.chunk_size(mip))
        chunk = Vec3(*(min(c, e) for c, e in zip(chunk, extent)))
        shard = None
        if fmt == "zarr3" and sharding != "none":
            count = None if sharding in (None, "auto") else sharding.chunks_per_shard  # type: ignore[union-attr]
            shard = grow_shard(chunk, extent, width, count)
        unit = shard if shard is not None else chunk
        levels.append((array_metadata(source, mip, fmt, chunk, shard), unit))
    return levels


def zarr_plans(params: ExportParams, source: Layer, url: str, catalog: Catalog) -> list[StagePlan]:
    fmt: ZarrFormat = params.format  # type: ignore[assignment]
    levels = zarr_levels(params, source)
    record = {
        "stage": "export",
        "input": source.url,
        "input_writer": catalog.reads.get(source.url, ""),
        "parameters": params.hashed_fields(),
        "ngff": NGFF_VERSION[fmt],
    }
    name = source.url.rstrip("/").rpartition("/")[2]
    final = {**ome_attributes(source, fmt, name), "petavox": record}
    width = source.dtype.itemsize * source.num_channels
    plans = []
    for mip, (metadata, unit) in enumerate(levels):
        check_level(url, mip, fmt, metadata, catalog.context)
        shape = level_task(params.chunk_shape, unit, source.bounds(mip).shape, width, "chunks")
        before = partial(prepare_store, url, mip, fmt, metadata, final, catalog.context)
        finish = partial(finish_store, url, fmt, final, catalog.context)
        job = ZarrExportJob(
            source=source, url=url, fmt=fmt, mip=mip, unit=unit, fill_missing=params.fill_missing
        )
        plans.append(
            StagePlan(
                **level_plan(params, source, url, mip, shape, metadata),
                job=job,
                hooks=DriverHooks(before=before),
                # the NGFF attributes once every level is written (levels run in order)
                global_step=finish if mip == source.num_mips - 1 else None,
            )
        )
    return plans


def level_plan(
    params: ExportParams, source: Layer, url: str, mip: int, shape: Vec3, layout: Any
) -> dict[str, Any]:
    """The fields of level `mip`'s plan that every format shares."""
    bounds = source.bounds(mip)
    spec = {
        **params.hashed_fields(),
        "input": source.url,
        "output": url,
        "mip": mip,
        "layout": layout,  # the level as written: its chunks, shards, codecs
        "task_shape": list(shape),  # chunk ids are only comparable on the same grid
    }
    return {
        "label": f"export {params.input} mip {mip} → {params.output} ({params.format})",
        "stage": "export",
        "version": VERSION,
        "spec": spec,
        "grid": ChunkGrid(bounds, shape, 0, origin=bounds.start),
        "resources": params.resources,
        "outputs": (Output(url),),
    }


def copy_info(params: ExportParams, source: Layer, url: str, found: dict | None) -> dict:
    """The info of the precomputed copy: the layer's scales, re-chunked or resharded as asked."""
    scales = []
    for mip in range(source.num_mips):
        scale = source.scale(mip)
        choice = layer_sharding(params.sharding)
        if choice == "default":
            choice = "auto" if "sharding" in scale else "none"
        spec = LayerSpec(
            layer_type=source.layer_type,  # type: ignore[arg-type]
            dtype=source.dtype.name,
            size=source.bounds(mip).shape,
            resolution=source.resolution(mip),
            chunk_size=Vec3.of(params.storage_chunk or source.chunk_size(mip)),
            voxel_offset=source.bounds(mip).start,
            encoding=scale["encoding"],
            num_channels=source.num_channels,
            sharding=choice,
            compress_shards=local_path(url) is None,
        )
        info = spec.to_info()
        scales.append({**info["scales"][0], "key": scale["key"]})
    info = {**info, "scales": scales}
    if found is None:
        return info
    same = all(found.get(k) == info[k] for k in ("type", "data_type", "num_channels", "scales"))
    if not same:
        raise LayerMismatchError(
            f"a different layer already exists at {url} (its scales, type or dtype differ "
            "from this copy's); choose another output or delete it"
        )
    return found


def precomputed_plans(
    params: ExportParams, source: Layer, url: str, catalog: Catalog
) -> list[StagePlan]:
    info = copy_info(params, source, url, catalog.info(url))
    catalog.declare(url, info)
    target = Layer(url, info, catalog.context)
    width = source.dtype.itemsize * source.num_channels
    plans = []
    for mip in range(source.num_mips):
        sharding = target.sharding(mip)
        if sharding is not None:
            sharding.check_writable(f"{url} scale {target.scale(mip)['key']}")
        unit = target.write_unit(mip)
        what = "shards" if sharding is not None else "storage chunks"
        shape = level_task(params.chunk_shape, unit, source.bounds(mip).shape, width, what)
        fields = level_plan(params, source, url, mip, shape, target.scale(mip))
        job = PrecomputedExportJob(
            source=source, target=target, mip=mip, fill_missing=params.fill_missing
        )
        plans.append(StagePlan(**fields, job=job, layer_infos={url: info}))
    return plans


def plan_export(params: ExportParams, catalog: Catalog) -> list[StagePlan]:
    source = catalog.layer(catalog.url(params.input))
    check_input(source)
    url = catalog.url(params.output)
    if url == source.url:
        raise InputError(f"export: the output {url} is its input; give the output another URL")
    check_output(url, params.format, catalog)
    if params.format == "precomputed":
        return precomputed_plans(params, source, url, catalog)
    return zarr_plans(params, source, url, catalog)


STAGE = Stage(
    name="export",
    order=110,
    params=ExportParams,
    planner=plan_export,
    positionals=(
        Positional(field="input", metavar="LAYER_URL", help="image or segmentation layer"),
        Positional(field="output", metavar="DEST", help="store to write (…/name.ome.zarr)"),
    ),
)
