"""Plan `mesh`: fragments per chunk (forge), then one manifest per segment (legacy format)."""

from __future__ import annotations

import re

from petavox.tasks.errors import InputError, LayerMismatchError
from petavox.tasks.geometry import ChunkGrid, index_grid
from petavox.tasks.layers import Layer
from petavox.tasks.mesh_jobs import LEGACY_INFO, ManifestJob, MeshForgeJob, id_prefixes
from petavox.tasks.meshing import Simplification
from petavox.tasks.storage import join_url
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import MeshParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.sizing import task_shape

VERSION = 1
BYTES_PER_VOXEL = 24  # uint64 labels, zmesh's working copy and its marching-cubes tables


def plan_mesh(params: MeshParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    source = catalog.layer(url)
    if source.layer_type != "segmentation" or source.num_channels != 1:
        raise LayerMismatchError(f"{url} is not a one-channel segmentation layer; mesh takes "
                                 "the output of segment (or any labels layer)")  # fmt: skip
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", params.mesh_dir) or params.mesh_dir in (".", ".."):
        raise InputError(f"mesh_dir {params.mesh_dir!r} must be a plain folder name, like 'mesh'")
    info = {**source.info, "mesh": params.mesh_dir}
    catalog.declare(url, info)
    layer = Layer(url, info, catalog.context)
    mesh_url = join_url(url, params.mesh_dir)
    bounds = source.bounds(0)
    chunk_shape = task_shape(
        params.chunk_shape, source.chunk_size(0), bounds.shape, BYTES_PER_VOXEL,
        name="mesh chunk_shape", step_name="storage chunk",
    )  # fmt: skip
    spec = {**params.hashed_fields(), "input": url, "task_shape": list(chunk_shape)}
    forge_id = identity("mesh-forge", VERSION, spec)
    forge = StagePlan(
        label=f"mesh {params.input}: fragments",
        stage="mesh-forge", identity=forge_id, spec=spec,
        grid=ChunkGrid(bounds, chunk_shape, 0, origin=bounds.start),
        job=MeshForgeJob(layer, mesh_url,
                         Simplification(params.reduction_factor, params.max_error),
                         params.fill_missing),
        resources=params.resources, layer_infos={url: info, mesh_url: LEGACY_INFO},
    )  # fmt: skip
    prefixes = tuple(id_prefixes(params.manifest_digits))
    follow = {"forge": forge_id, "digits": params.manifest_digits}
    manifests = StagePlan(
        label=f"mesh {params.input}: manifests",
        stage="mesh-manifest", identity=identity("mesh-manifest", VERSION, follow), spec=follow,
        grid=index_grid(len(prefixes)), job=ManifestJob(mesh_url, prefixes, catalog.context),
        resources=params.resources,
    )  # fmt: skip
    return [forge, manifests]
