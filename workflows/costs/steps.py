"""What one plan step reads and writes, from its grid, its job's layers and their infos alone.

Each kind of step (named by its job's class) has a model here: which layers its tasks read and
over which boxes, which volume scales they write, and which voxels its throughput figure is per
(`Basis`). Volume writes are exact: every task writes whole storage chunks (or whole shards) of
its write box, so the objects written are the chunks (shard files) of each written scale inside
the grid's boxes. Reads count the chunks each task's read box touches (petavox fetches a chunk
by its key; a sharded scale's shard whole when a task covers it, else its indexes and chunks).
Work files and data-dependent products (meshes, skeletons, tables) are estimated in
`estimate` from per-task and per-voxel figures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer
from petavox.workflows.costs.boxes import BoxSet, patch_reads, resampled_patch_reads
from petavox.workflows.costs.storage import Traffic, stored_ratio, voxel_bytes
from petavox.workflows.plan import StagePlan

#: which voxels a throughput figure divides: the tasks' write boxes, their read boxes (halo
#: included), the voxels the model predicts (infer's patches), or the stage's whole volume
#: (steps whose tasks are shards, id prefixes or octree levels, not boxes of voxels)
Basis = Literal["write", "read", "patch", "volume"]
#: GETs of one partly read shard: its shard index, a minishard index, then the chunks' ranges
PARTIAL_SHARD_GETS = 3


@dataclass(frozen=True, kw_only=True)
class StepShape:
    """The plan-derived quantities of one step, before any figure is applied."""

    job: str  # the job's class name: what its figures are keyed by
    tasks: int
    voxels: int  # voxels of the volume its tasks read or write (0: none)
    basis: Basis
    basis_voxels: int
    largest_read: int  # voxels of the largest read box (memory)
    input_bytes_per_voxel: int  # of the layers read, together
    traffic: tuple[Traffic, ...] = ()
    modelled: bool = True  # False: a job petavox has no model for (tasks and voxels only)
    notes: tuple[str, ...] = field(default=())


def layer_reads(layer: Layer, boxes: BoxSet, inner: BoxSet, repeat: int = 1) -> Traffic:
    """GETs and bytes of reading `boxes` of `layer`'s mip 0 (`inner`: the part each task is
    aligned to, its write box; a sharded scale's shards inside it are fetched whole)."""
    bounds, chunk = layer.bounds(0), layer.chunk_size(0)
    per_voxel = voxel_bytes(layer) * stored_ratio(layer)
    sharding = layer.sharding(0)
    if sharding is None:
        gets = boxes.cells(chunk, bounds)
        fetched = boxes.cell_voxels(chunk, bounds)
    else:
        whole = inner.cells(sharding.shape, bounds)
        partial = max(0, boxes.cells(sharding.shape, bounds) - whole)
        gets = whole + PARTIAL_SHARD_GETS * partial
        halo = max(0, boxes.cell_voxels(chunk, bounds) - inner.cell_voxels(chunk, bounds))
        fetched = inner.cell_voxels(sharding.shape, bounds) + halo
    return Traffic(
        url=layer.url,
        what="read",
        gets=gets * repeat,
        bytes_read=round(fetched * per_voxel) * repeat,
    )


def volume_write(layer: Layer, mip: int, boxes: BoxSet) -> Traffic:
    """The objects of scale `mip` that tasks writing `boxes` (at that mip) write: exact."""
    bounds = layer.bounds(mip)
    objects = boxes.cells(layer.write_unit(mip), bounds)
    stored = round(boxes.voxels() * voxel_bytes(layer) * stored_ratio(layer, mip))
    return Traffic(
        url=layer.url,
        what="write",
        key=layer.scale(mip)["key"],
        objects=objects,
        puts=objects,
        bytes_written=stored,
    )


def job_key(plan: StagePlan) -> str:
    """What a step's figures are keyed by: its job's class, and a variant where one job does
    two kinds of work (`[sharded]` skeletons: a file per merge task, not per segment; `[mode]`
    downsampling of labels; `[labels]`: an ingest encoding compressed_segmentation)."""
    job = plan.job
    name = type(job).__name__
    target = getattr(job, "target", None)
    if getattr(job, "sharded", False):
        return f"{name}[sharded]"
    if getattr(job, "method", None) == "mode":
        return f"{name}[mode]"
    if name == "IngestJob" and target.scale(0)["encoding"] == "compressed_segmentation":  # type: ignore[union-attr]
        return f"{name}[labels]"
    return name


@dataclass(frozen=True)
class Context:
    """What a step's model may need beyond its plan: the voxels of its stage's volume."""

    volume: int


Model = Callable[[StagePlan, Context], StepShape]


def _shape(
    plan: StagePlan,
    basis: Basis,
    *,
    reads: list[tuple[Layer, BoxSet]] = (),  # type: ignore[assignment]
    writes: list[Traffic] = (),  # type: ignore[assignment]
    repeat: int = 1,
    basis_voxels: int | None = None,
) -> StepShape:
    """A step whose tasks are boxes of the volume: they read `reads`, write `writes`."""
    boxes = BoxSet.writes(plan.grid)
    traffic = [layer_reads(layer, read, boxes, repeat) for layer, read in reads]
    largest = max((read.largest() * repeat for _, read in reads), default=boxes.largest())
    sizes = {"write": boxes.voxels(), "read": max((r.voxels() for _, r in reads), default=0)}
    return StepShape(
        job=job_key(plan),
        tasks=len(plan.grid),
        voxels=boxes.voxels(),
        basis=basis,
        basis_voxels=sizes.get(basis, 0) if basis_voxels is None else basis_voxels,
        largest_read=largest,
        input_bytes_per_voxel=sum(voxel_bytes(layer) for layer, _ in reads),
        traffic=(*traffic, *writes),
    )


def _no_volume(plan: StagePlan, context: Context) -> StepShape:
    """Tasks that read and write work files or products only (shards, prefixes, levels)."""
    return StepShape(
        job=job_key(plan),
        tasks=len(plan.grid),
        voxels=0,
        basis="volume",
        basis_voxels=context.volume,
        largest_read=0,
        input_bytes_per_voxel=0,
    )


def _ingest(plan: StagePlan, _: Context) -> StepShape:
    job, boxes = plan.job, BoxSet.writes(plan.grid)
    source = Traffic(
        url=str(job.source.location),  # type: ignore[attr-defined]
        what="read",
        bytes_read=boxes.voxels() * job.source.dtype.itemsize,  # type: ignore[attr-defined]
    )
    write = volume_write(job.target, 0, boxes)  # type: ignore[attr-defined]
    shape = _shape(plan, "write", writes=[source, write])
    return replace(shape, input_bytes_per_voxel=job.source.dtype.itemsize)  # type: ignore[attr-defined]


def _downsample(plan: StagePlan, _: Context) -> StepShape:
    job, boxes = plan.job, BoxSet.writes(plan.grid)
    target, factor = job.target, Vec3.of(job.factor)  # type: ignore[attr-defined]
    first = 0 if target.url != job.source.url else 1  # type: ignore[attr-defined]
    writes = [
        volume_write(target, mip, boxes.scale_down(factor**mip))
        for mip in range(first, job.mips + 1)  # type: ignore[attr-defined]
    ]
    return _shape(plan, "write", reads=[(job.source, boxes)], writes=writes)  # type: ignore[attr-defined]


def _estimate(plan: StagePlan, _: Context) -> StepShape:
    """Each section (tile) grown by the margin, read once for itself and once per section back."""
    job, boxes = plan.job, BoxSet.writes(plan.grid)
    margin = Vec3(job.margin, job.margin, 0)  # type: ignore[attr-defined]
    reads = boxes.grow(margin, margin, job.source.bounds(0))  # type: ignore[attr-defined]
    repeat = 1 + len(job.backs)  # type: ignore[attr-defined]
    return _shape(plan, "write", reads=[(job.source, reads)], repeat=repeat)  # type: ignore[attr-defined]


def _copying(plan: StagePlan, _: Context) -> StepShape:
    """Reads its source over each write box, writes the target's mip 0 (render, relabel)."""
    job, boxes = plan.job, BoxSet.writes(plan.grid)
    write = volume_write(job.target, 0, boxes)  # type: ignore[attr-defined]
    return _shape(plan, "write", reads=[(job.source, boxes)], writes=[write])  # type: ignore[attr-defined]


def _infer(plan: StagePlan, _: Context) -> StepShape:
    job, writes = plan.job, BoxSet.writes(plan.grid)
    grid, resampling = job.patches, job.resampling  # type: ignore[attr-defined]
    if resampling is None:
        reads, predicted = patch_reads(writes, grid.bounds, grid.patch, grid.overlap)
    else:  # the patches sit on the model's grid
        reads, predicted = resampled_patch_reads(
            writes, plan.grid.bounds, resampling.scale, grid.bounds, grid.patch, grid.overlap
        )
    write = volume_write(job.target, 0, writes)  # type: ignore[attr-defined]
    return _shape(
        plan,
        "patch",
        reads=[(job.source, reads)],
        writes=[write],
        basis_voxels=predicted,  # type: ignore[attr-defined]
    )


def _segment(plan: StagePlan, _: Context) -> StepShape:
    job = plan.job
    write = volume_write(job.target, 0, BoxSet.writes(plan.grid))  # type: ignore[attr-defined]
    return _shape(plan, "read", reads=[(job.source, BoxSet.reads(plan.grid))], writes=[write])  # type: ignore[attr-defined]


def _montage_solve(plan: StagePlan, _: Context) -> StepShape:
    """A section per task: its tiles (8-bit, about the section's area: not a layer, their
    reads are not counted) held whole; reports and the solved section written."""
    shape = _shape(plan, "write")
    return replace(shape, input_bytes_per_voxel=1, notes=("tile reads not counted",))


def _montage_render(plan: StagePlan, _: Context) -> StepShape:
    """Writes the montaged layer's mip 0 over its write boxes from the tiles reaching them."""
    boxes = BoxSet.writes(plan.grid)
    write = volume_write(plan.job.target, 0, boxes)  # type: ignore[attr-defined]
    shape = _shape(plan, "write", writes=[write])
    return replace(shape, notes=("tile reads not counted",))


def _reading(*names: str, high: int = 0, halo: bool = False) -> Model:
    """A step that reads the layers `names` of its job (those it has: an optional one may be
    None) over its write boxes (grown by `high` voxels on the high faces, or by the grid's
    halo) and writes no volume."""

    def model(plan: StagePlan, _: Context) -> StepShape:
        boxes = BoxSet.writes(plan.grid)
        if halo:
            boxes = BoxSet.reads(plan.grid)
        elif high:
            boxes = boxes.grow(Vec3(0, 0, 0), Vec3(high, high, high), plan.grid.bounds)
        found = (getattr(plan.job, name) for name in names)
        layers = [layer for layer in found if layer is not None]
        return _shape(plan, "write", reads=[(layer, boxes) for layer in layers])

    return model


MODELS: dict[str, Model] = {
    "IngestJob": _ingest,
    "DownsampleJob": _downsample,
    "EstimateJob": _estimate,
    "SolveJob": _no_volume,
    "RenderJob": _copying,
    "InferJob": _infer,
    "SegmentJob": _segment,
    "MatchJob": _reading("layer"),
    "ResolveJob": _no_volume,
    "RelabelJob": _copying,
    "ContactJob": _reading("fragments", "source", high=1),
    "MergeJob": _no_volume,
    "MeshForgeJob": _reading("source", high=1),
    "ShardedForgeJob": _reading("source", high=1),
    "ManifestJob": _no_volume,
    "ShardMergeJob": _no_volume,
    "SkeletonizeChunkJob": _reading("source", high=1),
    "SkeletonMergeJob": _no_volume,
    "SynapseJob": _reading("raw", "segmentation", halo=True),
    "VolumeCountJob": _reading("source"),
    "ShuffleJob": _no_volume,
    "ShardJob": _no_volume,
    "SpatialJob": _no_volume,
    "ContingencyJob": _reading("seg", "gt"),
    "MorphologyChunkJob": _reading("source", "image", high=1),
    "MorphologyShardJob": _no_volume,
    "TrainJob": _no_volume,  # classify: tables and a model, no volume
    "PredictJob": _no_volume,
    "PropertiesJob": _no_volume,
    "SolveSectionJob": _montage_solve,
    "RenderSectionsJob": _montage_render,
}


def step_shape(plan: StagePlan, context: Context) -> StepShape:
    """The model of `plan`'s job, or tasks and write voxels only for a job without one."""
    model = MODELS.get(type(plan.job).__name__)
    if model is not None:
        return model(plan, context)
    shape = _shape(plan, "write")
    return replace(shape, modelled=False, notes=("no cost model for this job: tasks only",))
