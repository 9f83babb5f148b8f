"""Plan `connectome`: [segment volumes,] shuffle the chunk tables by segment shard, write each
shard's outputs, write the annotation layer's spatial index (its info last)."""

from __future__ import annotations

from petavox.tasks.core.geometry import index_grid
from petavox.tasks.core.shards import sharding_spec
from petavox.tasks.core.storage import join_url
from petavox.tasks.synapse.connectome_jobs import (
    ShardJob,
    ShuffleJob,
    SpatialJob,
    VolumeCountJob,
    check_found,
    load_grid,
    write_annotation_info,
)
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import ConnectomeParams
from petavox.workflows.ledger import identity
from petavox.workflows.runner import StagePlan
from petavox.workflows.stages.labels import check_segmentation
from petavox.workflows.stages.sizing import layer_grid

VERSION = 1
BYTES_PER_VOXEL = 24  # uint64 labels, np.unique's sorted copy and its counts


def plan_connectome(params: ConnectomeParams, catalog: Catalog) -> list[StagePlan]:
    synapses = catalog.url(params.input)
    output = catalog.url(params.output or params.input)
    annotations = join_url(output, "annotations")
    context = catalog.context
    sharding = sharding_spec(params.shard_bits, params.minishard_bits, "gzip")
    shards = 2**params.shard_bits
    spec = {**params.hashed_fields(), "input": synapses, "output": output}
    if params.segmentation:
        spec["segmentation"] = catalog.url(params.segmentation)
    ident = identity("connectome", VERSION, spec)
    work = join_url(catalog.root, "intermediate", "connectome", ident)
    plans = []
    if params.segmentation:
        url = catalog.url(params.segmentation)
        source = catalog.layer(url)
        check_segmentation(url, source, "connectome counts segment volumes in one")
        grid = layer_grid(source, None, BYTES_PER_VOXEL, name="connectome volume task")
        plans.append(
            StagePlan(
                label=f"connectome {params.input}: segment volumes",
                stage="connectome-volumes",
                identity=identity("connectome-volumes", VERSION, spec),
                spec=spec,
                grid=grid,
                job=VolumeCountJob(source, work, sharding, params.fill_missing),
                resources=params.resources,
            )
        )
    plans.append(
        StagePlan(
            label=f"connectome {params.input}: shuffle",
            stage="connectome-shuffle",
            identity=identity("connectome-shuffle", VERSION, spec),
            spec=spec,
            grid=index_grid(params.readers),
            job=ShuffleJob(synapses, work, sharding, params.readers, context),
            resources=params.resources,
            finalize=lambda: check_found(synapses, context),
        )
    )
    plans.append(
        StagePlan(
            label=f"connectome {params.input}: shards",
            stage="connectome-shards",
            identity=identity("connectome-shards", VERSION, spec),
            spec=spec,
            grid=index_grid(shards),
            job=ShardJob(
                work,
                output,
                sharding,
                params.readers,
                shards,
                params.spatial_cell,
                bool(params.segmentation),
                context,
            ),
            resources=params.resources,
        )
    )

    def finalize() -> None:
        grid = load_grid(work, params.readers, params.spatial_cell, context)
        write_annotation_info(work, annotations, grid, sharding, shards, context)

    plans.append(
        StagePlan(
            label=f"connectome {params.input}: spatial index",
            stage="connectome-spatial",
            identity=identity("connectome-spatial", VERSION, spec),
            spec=spec,
            grid=index_grid(shards),
            job=SpatialJob(work, annotations, context),
            resources=params.resources,
            finalize=finalize,
        )
    )
    return plans
