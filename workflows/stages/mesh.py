"""Plan `mesh`: meshes per chunk (forge), then per segment: legacy manifests, or sharded
multi-resolution meshes (one merge task per shard)."""

from __future__ import annotations

import math

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import ChunkGrid, index_grid
from petavox.tasks.core.layers import Layer
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
from petavox.workflows.config import MeshParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.labels import check_folder_name, check_segmentation, declare_folder
from petavox.workflows.stages.sizing import layer_grid

VERSION = 1
BYTES_PER_VOXEL = 24  # uint64 labels, zmesh's working copy and its marching-cubes tables


def plan_mesh(params: MeshParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    source = catalog.layer(url)
    check_segmentation(url, source, "mesh takes the output of segment (or any labels layer)")
    check_folder_name("mesh_dir", params.mesh_dir, "mesh")
    info, layer, mesh_url = declare_folder(catalog, url, source, "mesh", params.mesh_dir)
    grid = layer_grid(source, params.chunk_shape, BYTES_PER_VOXEL, name="mesh chunk_shape")
    simplification = Simplification(params.reduction_factor, params.max_error)
    if params.format == "sharded":
        return sharded_plans(params, catalog, layer, mesh_url, grid, info, simplification)
    spec = {**format_fields(params), "input": url, "task_shape": list(grid.chunk_shape)}
    forge_id = identity("mesh-forge", VERSION, spec)
    forge = StagePlan(
        label=f"mesh {params.input}: fragments",
        stage="mesh-forge",
        identity=forge_id,
        spec=spec,
        grid=grid,
        job=MeshForgeJob(layer, mesh_url, simplification, params.fill_missing),
        resources=params.resources,
        layer_infos={url: info, mesh_url: LEGACY_INFO},
    )
    digits = params.manifest_digits or manifest_digits(len(grid))
    prefixes = tuple(id_prefixes(digits))
    follow = {"forge": forge_id, "digits": digits}
    manifests = StagePlan(
        label=f"mesh {params.input}: manifests",
        stage="mesh-manifest",
        identity=identity("mesh-manifest", VERSION, follow),
        spec=follow,
        grid=index_grid(len(prefixes)),
        job=ManifestJob(mesh_url, prefixes, catalog.context),
        resources=params.resources,
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
    shard_bits = params.shard_bits
    if shard_bits is None:  # a merge task per ~8 chunk tasks
        shard_bits = max(0, math.ceil(math.log2(len(grid))) - 3)
    sharding = sharding_spec(shard_bits, params.minishard_bits, "raw")
    url, resolution = layer.url, layer.resolution(0)
    merge_only = {"lods", "vertex_quantization_bits"}  # the forge's pieces do not depend on them
    spec = {k: v for k, v in format_fields(params).items() if k not in merge_only}
    spec.update(input=url, task_shape=list(grid.chunk_shape), shard_bits=shard_bits)
    forge_id = identity("mesh-forge", VERSION, spec)
    work = join_url(catalog.root, "intermediate", "mesh", forge_id)
    forge = StagePlan(
        label=f"mesh {params.input}: pieces by shard",
        stage="mesh-forge",
        identity=forge_id,
        spec=spec,
        grid=grid,
        job=ShardedForgeJob(layer, work, simplification, sharding, params.fill_missing),
        resources=params.resources,
        layer_infos={
            url: info,
            mesh_url: mesh_info(resolution, params.vertex_quantization_bits, sharding),
        },
    )
    octree = Octree(tuple(s + 0.5 for s in grid.bounds.start), tuple(grid.chunk_shape))
    follow = {"forge": forge_id, "lods": params.lods, "bits": params.vertex_quantization_bits}
    merge = StagePlan(
        label=f"mesh {params.input}: shards",
        stage="mesh-shards",
        identity=identity("mesh-shards", VERSION, follow),
        spec=follow,
        grid=index_grid(2**shard_bits),
        job=ShardMergeJob(
            work,
            mesh_url,
            sharding,
            octree,
            params.lods,
            params.vertex_quantization_bits,
            resolution,
            catalog.context,
        ),
        resources=params.resources,
    )
    return [forge, merge]
