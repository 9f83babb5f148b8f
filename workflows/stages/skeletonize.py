"""Plan `skeletonize`: pieces per chunk (kimimaro), then one skeleton per segment per bucket."""

from __future__ import annotations

import math

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import index_grid
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.shards import sharding_spec
from petavox.tasks.core.storage import join_url
from petavox.tasks.skeleton.skeleton_jobs import SkeletonizeChunkJob, SkeletonMergeJob
from petavox.tasks.skeleton.skeletons import Cleanup, Teasar, skeleton_info
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import SkeletonizeParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.labels import check_folder_name, check_segmentation, declare_folder
from petavox.workflows.stages.sizing import layer_grid

VERSION = 2
BYTES_PER_VOXEL = 32  # uint64 labels, kimimaro's components, distance fields and path fields


def check_input(url: str, source: Layer, params: SkeletonizeParams) -> None:
    check_segmentation(url, source, "skeletonize takes the output of segment (or any labels layer)")
    folder = params.skeleton_dir
    check_folder_name("skeleton_dir", folder, "skeletons")
    taken = {
        "info",
        "ledger",
        "intermediate",
        source.info.get("mesh"),
        *(s.get("key") for s in source.info["scales"]),
    }
    if folder in taken:
        raise InputError(
            f"skeleton_dir {folder!r} is taken in {url} (by a scale, the meshes, "
            "the info or a run's ledger); choose another name"
        )


def plan_skeletonize(params: SkeletonizeParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    source = catalog.layer(url)
    check_input(url, source, params)
    info, layer, skeleton_url = declare_folder(
        catalog, url, source, "skeletons", params.skeleton_dir
    )
    grid = layer_grid(source, params.chunk_shape, BYTES_PER_VOXEL, name="skeletonize chunk_shape")
    shard_bits = params.shard_bits
    if shard_bits is None:  # a merge task per ~8 chunk tasks
        shard_bits = max(0, math.ceil(math.log2(len(grid))) - 3)
    sharding = sharding_spec(shard_bits, params.minishard_bits, "gzip")
    spec = {
        **params.hashed_fields(),
        "input": url,
        "task_shape": list(grid.chunk_shape),
        "shard_bits": shard_bits,
    }
    chunks_id = identity("skeletonize-chunks", VERSION, spec)
    work = join_url(catalog.root, "intermediate", "skeletonize", chunks_id)
    teasar = Teasar(
        params.teasar_scale, params.teasar_const, params.dust_threshold, params.fix_branching
    )
    chunks = StagePlan(
        label=f"skeletonize {params.input}: pieces",
        stage="skeletonize-chunks",
        identity=chunks_id,
        spec=spec,
        grid=grid,
        job=SkeletonizeChunkJob(layer, work, teasar, sharding, params.fill_missing),
        resources=params.resources,
        layer_infos={url: info, skeleton_url: skeleton_info(sharding if params.sharded else None)},
    )
    follow = {"chunks": chunks_id}
    merge = StagePlan(
        label=f"skeletonize {params.input}: merge",
        stage="skeletonize-merge",
        identity=identity("skeletonize-merge", VERSION, follow),
        spec=follow,
        grid=index_grid(2**shard_bits),
        job=SkeletonMergeJob(
            work,
            skeleton_url,
            sharding,
            params.sharded,
            Cleanup(params.tick_threshold, params.min_cable),
            catalog.context,
        ),
        resources=params.resources,
    )
    return [chunks, merge]
