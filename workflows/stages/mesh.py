"""Stage `mesh`: meshes per chunk (forge), then per segment: legacy manifests, or sharded
multi-resolution meshes (one merge task per shard)."""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import ChunkGrid, index_grid
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.core.shards import sharding_spec
from petavox.tasks.core.storage import join_url
from petavox.tasks.mesh.mesh_jobs import (
    LEGACY_INFO,
    ManifestJob,
    MeshForgeJob,
    ShardedForgeJob,
    ShardMergeJob,
    id_prefixes,
)
from petavox.tasks.mesh.multires import Octree, mesh_info
from petavox.tasks.mesh.surfaces import Simplification
from petavox.workflows.catalog import Catalog
from petavox.workflows.layer_checks import check_folder_name, check_segmentation, declare_folder
from petavox.workflows.params import PositiveTriple, StageParams
from petavox.workflows.plan import Output, StagePlan, identity
from petavox.workflows.sizing import default_shard_bits, layer_grid
from petavox.workflows.stage import Positional, Stage

VERSION = 1
BYTES_PER_VOXEL = 24  # uint64 labels, zmesh's working copy and its marching-cubes tables


class MeshParams(StageParams):
    """Segmentation → a surface mesh per segment (marching cubes + simplification, zmesh)."""

    stage: Literal["mesh"] = "mesh"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    mesh_dir: str = Field("mesh", description="folder in the layer for the meshes")
    reduction_factor: int = Field(
        100, ge=0, description="simplify to about 1/this of the triangles (0: no simplification)"
    )
    max_error: float = Field(40.0, gt=0, description="nm a simplified vertex may move")
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~64 M)"
    )
    manifest_digits: int | None = Field(
        None,
        ge=1,
        le=6,
        description="legacy: manifest tasks split the ids by this many digits "
        "(default: about one manifest task per 10 mesh tasks, 1 to 5 digits)",
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")
    format: Literal["legacy", "sharded"] = Field(
        "legacy",
        description="legacy: a file per segment and chunk; sharded: multi-resolution "
        "(neuroglancer_multilod_draco), one file per shard (for millions of segments)",
    )
    lods: int = Field(
        3, ge=1, le=8, description="sharded: levels of detail, each ~1/4 of the finer's triangles"
    )
    shard_bits: int | None = Field(
        None,
        ge=0,
        le=20,
        description="sharded: 2^shard_bits shard files, a merge task each; "
        "default: about one per 8 chunk tasks",
    )
    minishard_bits: int = Field(6, ge=0, le=16, description="sharded: minishards per shard, log2")
    vertex_quantization_bits: Literal[10, 16] = Field(
        16, description="sharded: bits per vertex coordinate within an octree node"
    )

    #: the options of one format only
    SHARDED_ONLY: ClassVar[frozenset[str]] = frozenset(
        {"lods", "shard_bits", "minishard_bits", "vertex_quantization_bits"}
    )
    LEGACY_ONLY: ClassVar[frozenset[str]] = frozenset({"manifest_digits"})


def plan_mesh(params: MeshParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    source = catalog.layer(url)
    check_segmentation(url, source, "mesh takes the output of segment (or any labels layer)")
    check_folder_name("mesh_dir", params.mesh_dir, "mesh")
    info, layer, mesh_url = declare_folder(catalog, url, source, "mesh", params.mesh_dir)
    grid = layer_grid(source, params.chunk_shape, BYTES_PER_VOXEL, name="mesh chunk_shape")
    simplification = Simplification(
        reduction_factor=params.reduction_factor, max_error=params.max_error
    )
    if params.format == "sharded":
        return sharded_plans(params, catalog, layer, mesh_url, grid, info, simplification)
    spec = {**format_fields(params), "input": url, "task_shape": list(grid.chunk_shape)}
    forge = StagePlan(
        label=f"mesh {params.input}: fragments",
        stage="mesh-forge",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=MeshForgeJob(
            source=layer, mesh_url=mesh_url, params=simplification, fill_missing=params.fill_missing
        ),
        resources=params.resources,
        layer_infos={mesh_url: LEGACY_INFO},
        outputs=(Output(url, params.mesh_dir),),
    )
    digits = params.manifest_digits or manifest_digits(len(grid))
    prefixes = tuple(id_prefixes(digits))
    manifests = StagePlan(
        label=f"mesh {params.input}: manifests",
        stage="mesh-manifest",
        version=VERSION,
        spec={"forge": forge.identity, "digits": digits},
        grid=index_grid(len(prefixes)),
        job=ManifestJob(mesh_url=mesh_url, prefixes=prefixes, context=catalog.context),
        resources=params.resources,
        final_infos={url: info},
        outputs=(Output(url, params.mesh_dir),),
    )
    return [forge, manifests]


def format_fields(params: MeshParams) -> dict:
    """The hashed fields that matter to `params.format` (a legacy run's identity does not change
    with the sharded options); an option of the other format is an error."""
    if params.format == "legacy":
        other, unused = params.SHARDED_ONLY, params.SHARDED_ONLY | {"format"}
    else:
        other = unused = params.LEGACY_ONLY
    if given := sorted(other & params.model_fields_set):
        raise InputError(
            f"mesh: {', '.join(given)} is not an option of format: {params.format}"
            f" (legacy: {', '.join(sorted(params.LEGACY_ONLY))}; sharded: "
            f"{', '.join(sorted(params.SHARDED_ONLY))})"
        )
    return {k: v for k, v in params.hashed_fields().items() if k not in unused}


def manifest_digits(chunks: int) -> int:
    """Leading digits that split the ids among about one manifest task per 10 mesh tasks (a
    digit gives 9 tasks, two 99, ...): few tasks for a small volume, many for a big one."""
    return min(5, max(1, round(math.log10(max(chunks, 1))) - 1))


def sharded_plans(
    params: MeshParams,
    catalog: Catalog,
    layer: Layer,
    mesh_url: str,
    grid: ChunkGrid,
    info: dict,
    simplification: Simplification,
) -> list[StagePlan]:
    """Forge into per-shard intermediate files, then one merge task per shard. LOD 0 octree
    nodes are the forge's chunks: their meshes meet on the planes half a voxel above the chunk
    faces (the forge reads one voxel more on its high faces), so the octree grid runs through
    ``bounds.start + 0.5``, and LOD 0 needs no cut but on the volume's faces."""
    shard_bits = default_shard_bits(params.shard_bits, grid)
    sharding = sharding_spec(shard_bits, params.minishard_bits, "raw")
    url, resolution, bits = layer.url, layer.resolution(0), params.vertex_quantization_bits
    merge_only = {"lods", "vertex_quantization_bits"}  # the forge's pieces do not depend on them
    spec = {k: v for k, v in format_fields(params).items() if k not in merge_only}
    spec.update(input=url, task_shape=list(grid.chunk_shape), shard_bits=shard_bits)
    spec.update(lineage=catalog.reads_token())  # keys the work folder: new input, new pieces
    forge_id = identity("mesh-forge", VERSION, spec)
    buckets = ShardBuckets(
        work_url=join_url(catalog.root, "intermediate", "mesh", forge_id),
        sharding=sharding,
        context=catalog.context,
    )
    forge = StagePlan(
        label=f"mesh {params.input}: pieces by shard",
        stage="mesh-forge",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=ShardedForgeJob(
            source=layer, buckets=buckets, params=simplification, fill_missing=params.fill_missing
        ),
        resources=params.resources,
        layer_infos={mesh_url: mesh_info(resolution, bits, sharding)},
        work=(buckets.work_url,),
    )
    merge = ShardMergeJob(
        buckets=buckets,
        mesh_url=mesh_url,
        octree=Octree(tuple(s + 0.5 for s in grid.bounds.start), tuple(grid.chunk_shape)),
        lods=params.lods,
        bits=bits,
        resolution=resolution,
    )
    shards = StagePlan(
        label=f"mesh {params.input}: shards",
        stage="mesh-shards",
        version=VERSION,
        spec={"forge": forge_id, "lods": params.lods, "bits": bits},
        grid=buckets.grid(),
        job=merge,
        resources=params.resources,
        final_infos={url: info},
        outputs=(Output(url, params.mesh_dir),),
        work=(buckets.work_url,),
    )
    return [forge, shards]


STAGE = Stage(
    name="mesh",
    order=70,
    params=MeshParams,
    planner=plan_mesh,
    positionals=(
        Positional(
            field="input",
            metavar="SEG_URL",
            help="segmentation layer to mesh (meshes go into its folder)",
        ),
    ),
)
