"""Stage `connectome`: [segment volumes,] shuffle the chunk tables by segment shard, write each
shard's outputs, write the annotation layer's spatial index (its info last)."""

from __future__ import annotations

from functools import partial
from typing import Any, Literal

from pydantic import Field

from petavox.tasks.core.geometry import ChunkGrid, index_grid
from petavox.tasks.core.shards import sharding_spec
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.synapse.connectome_jobs import (
    ShardJob,
    ShuffleJob,
    SpatialJob,
    VolumeCountJob,
    check_found,
    load_grid,
    work_buckets,
    write_annotation_info,
)
from petavox.tasks.synapse.outputs import summarize
from petavox.workflows.catalog import Catalog
from petavox.workflows.layer_checks import check_segmentation
from petavox.workflows.params import StageParams
from petavox.workflows.plan import ChunkJob, Output, StagePlan, identity
from petavox.workflows.sizing import layer_grid
from petavox.workflows.stage import Positional, Stage

VERSION = 1
BYTES_PER_VOXEL = 24  # uint64 labels, np.unique's sorted copy and its counts


class ConnectomeParams(StageParams):
    """Synapse tables → the connectome: table, edges, segment statistics, annotation layer."""

    stage: Literal["connectome"] = "connectome"
    input: str = Field(
        "synapses", description="synapses output (folder with chunks/*.parquet): name or URL"
    )
    output: str | None = Field(None, description="folder for the connectome (default: input)")
    segmentation: str | None = Field(
        None, description="segmentation layer: name or URL; adds each segment's volume (voxels)"
    )
    shard_bits: int = Field(
        4,
        ge=0,
        le=16,
        description="2^shard_bits shards of segment ids, a task each (aim for ≤ ~10^6 synapses "
        "per shard); also the annotation indexes' shard files",
    )
    minishard_bits: int = Field(6, ge=0, le=16, description="minishards per shard, log2")
    readers: int = Field(16, ge=1, description="tasks that read the chunk tables, a share each")
    spatial_cell: float = Field(
        4096.0, gt=0, description="finest spatial-index cell of the annotation layer (nm)"
    )
    fill_missing: bool = Field(False, description="treat missing segmentation chunks as zeros")


def plan_connectome(params: ConnectomeParams, catalog: Catalog) -> list[StagePlan]:
    synapses = catalog.url(params.input)
    output = catalog.url(params.output or params.input)
    context = catalog.context
    sharding = sharding_spec(params.shard_bits, params.minishard_bits, "gzip")
    shards = 2**params.shard_bits
    spec = {**params.hashed_fields(), "input": synapses, "output": output}
    if params.segmentation:
        spec["segmentation"] = catalog.url(params.segmentation)
        catalog.layer(spec["segmentation"])
    catalog.note_read(synapses, catalog.lineage(synapses))
    spec["lineage"] = catalog.reads_token()  # keys the work folder: new synapses, new shuffle
    ident = identity("connectome", VERSION, spec)
    work = join_url(catalog.root, "intermediate", "connectome", ident)

    def step(name: str, what: str, grid: ChunkGrid, job: ChunkJob, **hooks: Any) -> StagePlan:
        """A step of the stage: all share the spec (and each gets its own identity by name)."""
        return StagePlan(
            label=f"connectome {params.input}: {what}",
            stage=f"connectome-{name}",
            version=VERSION,
            spec=spec,
            grid=grid,
            job=job,
            resources=params.resources,
            outputs=(Output(output, "connectome"),),
            work=(work,),
            **hooks,
        )

    plans = []
    if params.segmentation:
        volumes = volume_job(params, spec["segmentation"], work, sharding, catalog)
        grid = layer_grid(volumes.source, None, BYTES_PER_VOXEL, name="connectome volume task")
        plans.append(step("volumes", "segment volumes", grid, volumes))
    shuffle = ShuffleJob(
        synapses_url=synapses,
        work_url=work,
        sharding=sharding,
        readers=params.readers,
        context=context,
    )
    found = partial(check_found, synapses, context)
    plans.append(step("shuffle", "shuffle", index_grid(params.readers), shuffle, global_step=found))
    shard_job = ShardJob(
        work_url=work,
        output_url=output,
        sharding=sharding,
        readers=params.readers,
        spatial_tasks=shards,
        finest=params.spatial_cell,
        volumes=bool(params.segmentation),
        context=context,
    )
    plans.append(step("shards", "shards", index_grid(shards), shard_job))
    annotations = join_url(output, "annotations")
    spatial = SpatialJob(work_url=work, annotations_url=annotations, context=context)
    info = partial(write_info, params, work, annotations, sharding, context)
    plans.append(step("spatial", "spatial index", index_grid(shards), spatial, global_step=info))
    return plans


def volume_job(
    params: ConnectomeParams, url: str, work: str, sharding: dict, catalog: Catalog
) -> VolumeCountJob:
    """Voxels per segment of the segmentation, scattered by the segments' shards."""
    source = catalog.layer(url)
    check_segmentation(url, source, "connectome counts segment volumes in one")
    return VolumeCountJob(
        source=source,
        buckets=work_buckets(work, sharding, catalog.context, "volume"),
        fill_missing=params.fill_missing,
    )


def write_info(
    params: ConnectomeParams,
    work: str,
    annotations: str,
    sharding: dict,
    context: StorageContext,
) -> None:
    """The annotation layer's info, once every spatial cell is written."""
    grid = load_grid(work, params.readers, params.spatial_cell, context)
    write_annotation_info(work, annotations, grid, sharding, 2**params.shard_bits, context)


def print_summary(root: str, context: StorageContext) -> None:
    """What `petavox connectome` prints after the stage: totals and the strongest edges."""
    summary = summarize(root, context=context)
    print(f"synapses: {summary['synapses']} ({summary['connections']} with both partners)")
    print(f"neurons with synapses: {summary['segments']}")
    print(f"edges: {summary['edges']}")
    print("strongest connections (pre -> post: synapses, total cleft voxels):")
    for pre, post, count, size in summary["strongest"]:
        print(f"  {pre} -> {post}: {count}, {size}")


STAGE = Stage(
    name="connectome",
    order=100,
    params=ConnectomeParams,
    planner=plan_connectome,
    positionals=(
        Positional(
            field="input",
            metavar="OUTPUT_URL",
            help="synapses output (chunks/*.parquet); the connectome is written beside them and "
            "summarized",
        ),
    ),
    summary=print_summary,
)
