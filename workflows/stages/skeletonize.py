"""Stage `skeletonize`: pieces per chunk (kimimaro), then one skeleton per segment per bucket."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from petavox.tasks.core.layers import Layer
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.core.shards import sharding_spec
from petavox.tasks.core.storage import join_url
from petavox.tasks.skeleton.skeleton_jobs import SkeletonizeChunkJob, SkeletonMergeJob
from petavox.tasks.skeleton.skeletons import Cleanup, Teasar, skeleton_info
from petavox.workflows.catalog import Catalog
from petavox.workflows.layer_checks import check_free_folder, check_segmentation, declare_folder
from petavox.workflows.params import PositiveTriple, StageParams
from petavox.workflows.plan import Output, StagePlan, identity
from petavox.workflows.sizing import default_shard_bits, layer_grid
from petavox.workflows.stage import Positional, Stage

VERSION = 2
BYTES_PER_VOXEL = 32  # uint64 labels, kimimaro's components, distance fields and path fields


class SkeletonizeParams(StageParams):
    """Segmentation → a skeleton per segment (kimimaro's TEASAR per chunk, merged across chunks)."""

    stage: Literal["skeletonize"] = "skeletonize"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    skeleton_dir: str = Field("skeletons", description="folder in the layer for the skeletons")
    teasar_scale: float = Field(
        1.5, gt=0, description="invalidation radius = scale × distance to boundary + const"
    )
    teasar_const: float = Field(300.0, ge=0, description="the const of that radius (nm)")
    dust_threshold: int = Field(
        1000, ge=0, description="a segment's pieces within one task with fewer voxels are skipped"
    )
    fix_branching: bool = Field(True, description="branch points where paths part (slower)")
    tick_threshold: float = Field(
        3000.0, ge=0, description="side branches shorter than this (nm) are removed (0: none)"
    )
    min_cable: float = Field(
        0.0,
        ge=0,
        description="components shorter than this (nm) are dropped, except a segment's longest",
    )
    sharded: bool = Field(False, description="write sharded skeletons (one file per shard)")
    shard_bits: int | None = Field(
        None,
        ge=0,
        le=20,
        description="2^shard_bits merge tasks, each writing its share of the ids (one shard "
        "file when sharded); default: about one per 8 chunk tasks",
    )
    minishard_bits: int = Field(6, ge=0, le=16, description="sharded: minishards per shard, log2")
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~8 M)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")


def check_input(url: str, source: Layer, params: SkeletonizeParams) -> None:
    check_segmentation(url, source, "skeletonize takes the output of segment (or any labels layer)")
    check_free_folder(url, source, "skeleton_dir", params.skeleton_dir, "skeletons")


def plan_skeletonize(params: SkeletonizeParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    source = catalog.layer(url)
    check_input(url, source, params)
    info, layer, skeleton_url = declare_folder(
        catalog, url, source, "skeletons", params.skeleton_dir
    )
    grid = layer_grid(source, params.chunk_shape, BYTES_PER_VOXEL, name="skeletonize chunk_shape")
    shard_bits = default_shard_bits(params.shard_bits, grid)
    sharding = sharding_spec(shard_bits, params.minishard_bits, "gzip")
    spec = {
        **params.hashed_fields(),
        "input": url,
        "task_shape": list(grid.chunk_shape),
        "shard_bits": shard_bits,
        "lineage": catalog.reads_token(),  # keys the work folder: a new input, new pieces
    }
    chunks_id = identity("skeletonize-chunks", VERSION, spec)
    buckets = ShardBuckets(
        work_url=join_url(catalog.root, "intermediate", "skeletonize", chunks_id),
        sharding=sharding,
        context=catalog.context,
        suffix=".npz",
    )
    teasar = Teasar(
        scale=params.teasar_scale,
        const=params.teasar_const,
        dust_threshold=params.dust_threshold,
        fix_branching=params.fix_branching,
    )
    chunks = StagePlan(
        label=f"skeletonize {params.input}: pieces",
        stage="skeletonize-chunks",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=SkeletonizeChunkJob(
            source=layer, buckets=buckets, params=teasar, fill_missing=params.fill_missing
        ),
        resources=params.resources,
        layer_infos={skeleton_url: skeleton_info(sharding if params.sharded else None)},
        work=(buckets.work_url,),
    )
    cleanup = Cleanup(tick_threshold=params.tick_threshold, min_cable=params.min_cable)
    merge = StagePlan(
        label=f"skeletonize {params.input}: merge",
        stage="skeletonize-merge",
        version=VERSION,
        spec={"chunks": chunks_id},
        grid=buckets.grid(),
        job=SkeletonMergeJob(
            buckets=buckets, skeleton_url=skeleton_url, sharded=params.sharded, cleanup=cleanup
        ),
        resources=params.resources,
        final_infos={url: info},
        outputs=(Output(url, params.skeleton_dir),),
        work=(buckets.work_url,),
    )
    return [chunks, merge]


STAGE = Stage(
    name="skeletonize",
    order=80,
    params=SkeletonizeParams,
    planner=plan_skeletonize,
    positionals=(
        Positional(
            field="input",
            metavar="SEG_URL",
            help="segmentation layer to skeletonize (skeletons go into its folder)",
        ),
    ),
)
