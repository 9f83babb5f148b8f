"""Stage `morphology`: per chunk, each segment's parts scattered by segment shard; per shard, one
Parquet partition of the table (size, surface, shape, image, skeleton and synapse features)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.objects import get
from petavox.tasks.core.shard_buckets import ShardBuckets
from petavox.tasks.core.storage import join_url
from petavox.tasks.morphology.morphology_jobs import MorphologyChunkJob, MorphologyShardJob
from petavox.tasks.morphology.table_reads import table_sharding
from petavox.workflows.catalog import Catalog, part_key
from petavox.workflows.layer_checks import check_free_folder, check_segmentation
from petavox.workflows.params import PositiveTriple, StageParams
from petavox.workflows.plan import Output, StagePlan, identity
from petavox.workflows.sizing import default_shard_bits, layer_grid
from petavox.workflows.stage import Positional, Stage

VERSION = 1
#: the layer's info key naming its tables: {table_dir: {"shard_bits": k, "image": bool, ...}}
TABLES_KEY = "morphology"
#: what a table was measured with, as declared there (what `classify` checks a model against)
TABLE_INPUTS = ("image", "connectome", "skeletons")
BYTES_PER_VOXEL = 64  # uint64 labels, the image, the cell corners' copies and the coordinates


class MorphologyParams(StageParams):
    """Segmentation [+ image, skeletons, connectome] → a table of every segment's morphology."""

    stage: Literal["morphology"] = "morphology"
    input: str = Field("segmentation", description="segmentation layer: name or URL")
    image: str | None = Field(
        None,
        description="image layer on the same voxels (integer, e.g. aligned): name or URL; adds "
        "each segment's intensity and texture",
    )
    connectome: str | None = Field(
        None,
        description="the connectome's folder (a synapses output after connectome): name or URL; "
        "adds each segment's synapses in and out",
    )
    skeletons: bool = Field(
        True, description="add the skeleton features when the layer has skeletons"
    )
    table_dir: str = Field("morphology", description="folder in the layer for the table")
    shard_bits: int | None = Field(
        None,
        ge=0,
        le=20,
        description="2^shard_bits merge tasks, each writing the table's partition of its share "
        "of the ids; default: about one per 8 chunk tasks",
    )
    chunk_shape: PositiveTriple | None = Field(
        None, description="voxels per task, a multiple of the storage chunk (default: ~8 M)"
    )
    fill_missing: bool = Field(False, description="treat missing input chunks as zeros")


def image_layer(params: MorphologyParams, seg: Layer, catalog: Catalog) -> Layer | None:
    """The image whose intensities the table summarizes, checked against the segmentation."""
    if params.image is None:
        return None
    url = catalog.url(params.image)
    image = catalog.layer(url)
    if image.layer_type != "image" or image.num_channels != 1:
        raise LayerMismatchError(
            f"{url} is not a one-channel image layer; morphology --image "
            "takes the EM image the segmentation was made from"
        )
    if not np.issubdtype(np.dtype(image.dtype), np.integer):
        raise LayerMismatchError(
            f"{url} holds {image.dtype}; morphology sums integer intensities: give the uint8 "
            "image (e.g. aligned), not a probability map"
        )
    if image.bounds(0) != seg.bounds(0) or image.resolution(0) != seg.resolution(0):
        raise LayerMismatchError(
            f"{url} covers {image.bounds(0)} at {image.resolution(0)} nm but {seg.url} covers "
            f"{seg.bounds(0)} at {seg.resolution(0)} nm; morphology needs the image on the "
            "segmentation's voxels (same bounds and resolution at mip 0)"
        )
    return image


def connectome_url(params: MorphologyParams, catalog: Catalog) -> str | None:
    """The connectome's folder, refused unless it holds (or this run writes) a connectome."""
    if params.connectome is None:
        return None
    url = catalog.url(params.connectome)
    catalog.note_part(url, "connectome")
    written = catalog.reads[part_key(url, "connectome")] != "unknown"
    if not written and get(url, "annotations/info", catalog.context) is None:
        raise InputError(
            f"{url} holds no connectome; run petavox connectome on that synapses output "
            "first (or in the same run), or leave --connectome out"
        )
    return url


def joins_skeletons(params: MorphologyParams, seg: Layer, catalog: Catalog) -> bool:
    """Whether the table gets the skeletons' features (their writer enters the lineage)."""
    if params.skeletons and "skeletons" in seg.info:
        catalog.note_part(seg.url, "skeletons")
        return True
    return False


def declare_table(folder: str, spec: dict, seg: Layer, catalog: Catalog) -> dict:
    """The layer's info naming the table in `folder` (shard bits, what it was measured with),
    declared for the stages planned after this one (`classify` reads it)."""
    declared = {"shard_bits": spec["shard_bits"], **{k: bool(spec[k]) for k in TABLE_INPUTS}}
    info = {**seg.info, TABLES_KEY: {**seg.info.get(TABLES_KEY, {}), folder: declared}}
    catalog.declare(seg.url, info)
    return info


def plan_morphology(params: MorphologyParams, catalog: Catalog) -> list[StagePlan]:
    url = catalog.url(params.input)
    seg = catalog.layer(url)
    check_segmentation(url, seg, "morphology measures the segments of a segmentation")
    check_free_folder(url, seg, "table_dir", params.table_dir, "morphology")
    image = image_layer(params, seg, catalog)
    connectome = connectome_url(params, catalog)
    skeletons = joins_skeletons(params, seg, catalog)
    grid = layer_grid(seg, params.chunk_shape, BYTES_PER_VOXEL, name="morphology chunk_shape")
    shard_bits = default_shard_bits(params.shard_bits, grid)
    spec = {
        **params.hashed_fields(),
        "input": url,
        "image": image.url if image else None,
        "connectome": connectome,
        "skeletons": skeletons,
        "task_shape": list(grid.chunk_shape),
        "shard_bits": shard_bits,
        "lineage": catalog.reads_token(),  # keys the work folder: new inputs, new parts
    }
    chunks_id = identity("morphology-chunks", VERSION, spec)
    info = declare_table(params.table_dir, spec, seg, catalog)
    buckets = ShardBuckets(
        work_url=join_url(catalog.root, "intermediate", "morphology", chunks_id),
        sharding=table_sharding(shard_bits),
        context=catalog.context,
        suffix=".npz",
    )
    chunks = StagePlan(
        label=f"morphology {params.input}: parts",
        stage="morphology-chunks",
        version=VERSION,
        spec=spec,
        grid=grid,
        job=MorphologyChunkJob(
            source=seg, image=image, buckets=buckets, fill_missing=params.fill_missing
        ),
        resources=params.resources,
        work=(buckets.work_url,),
    )
    merge = StagePlan(
        label=f"morphology {params.input}: table",
        stage="morphology-shards",
        version=VERSION,
        spec={"chunks": chunks_id, "table_dir": params.table_dir},
        grid=buckets.grid(),
        job=MorphologyShardJob(
            buckets=buckets,
            table_url=join_url(url, params.table_dir),
            resolution=seg.resolution(0),
            has_image=image is not None,
            skeletons=seg if skeletons else None,
            connectome_url=connectome,
        ),
        resources=params.resources,
        final_infos={url: info},
        outputs=(Output(url, params.table_dir),),
        work=(buckets.work_url,),
    )
    return [chunks, merge]


STAGE = Stage(
    name="morphology",
    order=105,
    params=MorphologyParams,
    planner=plan_morphology,
    positionals=(
        Positional(
            field="input",
            metavar="SEG_URL",
            help="segmentation layer to measure (the table goes into its folder)",
        ),
    ),
)
