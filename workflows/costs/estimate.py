"""Per step, per stage and in total: tasks, voxels, bytes, objects, requests, memory, core- and
GPU-hours and wall time of a planned run, from its plans (`steps`) and the figures (`figures`).

Seconds of a step = its tasks' core-seconds (each task: the runner's overhead plus its basis
voxels at the figure's throughput per core) run in waves of as many tasks as the cluster has
cores, plus the runner's per-step overhead; the run's first step also waits for the workers to
start. Steps run one after the other, as `petavox run` runs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from petavox.tasks.core.storage import local_path
from petavox.workflows.costs import figures as fig
from petavox.workflows.costs.cluster import Cluster
from petavox.workflows.costs.steps import Context, StepShape, step_shape
from petavox.workflows.ledger import FLUSH_SECONDS, SEGMENT_CHUNKS, SEGMENT_OBJECTS
from petavox.workflows.plan import StagePlan, StageSteps


@dataclass(kw_only=True)
class Totals:
    """What a step, a stage or a run adds up to (`*_estimated`: data-dependent estimates)."""

    tasks: int = 0
    voxels: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    objects: int = 0  # exact: volume chunks and shard files
    objects_estimated: int = 0  # work files and data-dependent products
    gets: int = 0
    puts: int = 0
    lists: int = 0
    stored_bytes: int = 0  # what stays after the run (intermediate/ expires)
    peak_memory: int = 0  # bytes, the largest task's
    core_hours: float = 0.0
    gpu_hours: float = 0.0
    seconds: float = 0.0  # wall time on the cluster

    def add(self, other: Totals) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, max(mine, theirs) if f.name == "peak_memory" else mine + theirs)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(kw_only=True)
class StepEstimate:
    label: str
    step: str  # the ledger name of the step
    shape: StepShape
    figure: fig.Figure | None
    totals: Totals
    notes: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class StageEstimate:
    name: str  # the stage and the layer it makes (or reads)
    steps: list[StepEstimate]
    totals: Totals


def stage_name(steps: StageSteps) -> str:
    """`downsample raw`, `infer boundary`: the stage and its output (else its input) as given."""
    params = steps.params
    layer = params.get("output") or params.get("input")
    return f"{steps.name} {layer}" if layer and "/" not in str(layer) else steps.name


def figure_for(job: str) -> fig.Figure | None:
    return fig.FIGURES_BY_JOB.get(job)


def stage_volume(steps: StageSteps, previous: int) -> int:
    """The voxels of a stage's volume: the largest box grid among its steps, else the last
    stage's (connectome reads tables of the synapses stage's volume)."""
    volumes = [p.grid.bounds.size for p in steps.plans if p.grid.bounds.shape.y > 1]
    return max(volumes, default=previous)


def throughput(figure: fig.Figure, plan: StagePlan) -> float:
    """MVx/s per core for `plan`'s storage: the object-store figure for s3:// and gs://."""
    urls = [*plan.layer_infos, *(o.url for o in plan.outputs)]
    remote = any(local_path(url) is None for url in urls)
    if remote and figure.object_store is not None:
        return figure.object_store
    return figure.mvx_per_core_s


def compute(shape: StepShape, figure: fig.Figure | None, plan: StagePlan, cluster: Cluster):
    """(core-seconds, GPU-seconds, wall seconds) of one step on `cluster`."""
    overhead = shape.tasks * fig.TASK_OVERHEAD_S
    work = 0.0 if figure is None else shape.basis_voxels / 1e6 / throughput(figure, plan)
    gpu = 0.0
    # a model bound to GPU actors when the cluster has GPUs (infer's `device` auto or gpu)
    if figure is not None and figure.gpu_mvx_per_s and cluster.gpus and plan.hooks.bind:
        gpu, work = shape.basis_voxels / 1e6 / figure.gpu_mvx_per_s, 0.0
    core = overhead + work
    waves = math.ceil(shape.tasks / max(1, cluster.cores)) if shape.tasks else 0
    wall = fig.STEP_OVERHEAD_S + (waves * core / shape.tasks if shape.tasks else 0.0)
    if gpu:
        wall += gpu / cluster.gpus
    return core, gpu, wall


def traffic_totals(shape: StepShape) -> Totals:
    """The exact part: volume reads and writes of the step's model."""
    out = Totals(tasks=shape.tasks, voxels=shape.voxels)
    for t in shape.traffic:
        out.gets += t.gets
        out.puts += t.puts
        out.objects += t.objects
        out.bytes_read += t.bytes_read
        out.bytes_written += t.bytes_written
        if t.what == "write" and "/intermediate/" not in t.url:
            out.stored_bytes += t.bytes_written
    return out


def data_dependent(shape: StepShape, figure: fig.Figure, totals: Totals) -> None:
    """Add the figure's work files and products (estimates) to `totals`."""
    mvx = shape.basis_voxels / 1e6
    work = round(figure.work_per_task * shape.tasks)
    products = round(figure.product_per_task * shape.tasks + figure.product_per_mvx * mvx)
    work_bytes = round(figure.work_bytes_per_voxel * shape.basis_voxels)
    product_bytes = round(figure.product_bytes_per_voxel * shape.basis_voxels)
    totals.objects_estimated += work + products
    totals.puts += work + products
    totals.bytes_written += work_bytes + product_bytes
    totals.stored_bytes += product_bytes
    totals.lists += round(figure.lists_per_task * shape.tasks)


def ledger_puts(plan: StagePlan, objects: int, seconds: float) -> int:
    """The step's ledger writes: each segment (`SEGMENT_CHUNKS` finished chunks, or
    `SEGMENT_OBJECTS` objects, whichever fills first) once it is full or the step ends, the open
    one again every `FLUSH_SECONDS` while the step runs; its params; its global step's marker."""
    if not plan.use_ledger:
        return 0
    tasks = len(plan.grid)
    segments = max(1, -(-tasks // SEGMENT_CHUNKS), -(-objects // SEGMENT_OBJECTS))
    return segments + int(seconds // FLUSH_SECONDS) + 1 + (plan.global_step is not None)


def memory(shape: StepShape, figure: fig.Figure | None) -> int:
    if figure is None:
        return 0
    if shape.largest_read and shape.input_bytes_per_voxel:
        return round(shape.largest_read * shape.input_bytes_per_voxel * figure.memory_factor)
    return figure.task_memory


def estimate_step(
    plan: StagePlan, context: Context, cluster: Cluster, carried: Totals
) -> StepEstimate:
    """One step; `carried`: the work files earlier steps of its stage wrote, read back here."""
    shape = step_shape(plan, context)
    figure = figure_for(shape.job)
    totals = traffic_totals(shape)
    notes = list(shape.notes)
    if figure is None:
        notes.append(f"no figure for {shape.job}: seconds are the runner's overhead only")
    else:
        data_dependent(shape, figure, totals)
    totals.gets += carried.objects_estimated
    totals.bytes_read += carried.bytes_written
    core, gpu, wall = compute(shape, figure, plan, cluster)
    # the infos written before and after, the ledger's writes; the ledger listed once
    totals.puts += len(plan.layer_infos) + len(plan.final_infos)
    totals.puts += ledger_puts(plan, totals.objects + totals.objects_estimated, wall)
    totals.lists += 1
    totals.core_hours, totals.gpu_hours, totals.seconds = core / 3600, gpu / 3600, wall
    totals.peak_memory = memory(shape, figure)
    return StepEstimate(
        label=plan.label, step=plan.stage, shape=shape, figure=figure, totals=totals, notes=notes
    )


def work_of(step: StepEstimate) -> Totals:
    """The work files a step wrote (read back by the next step of its stage)."""
    f = step.figure
    if f is None:
        return Totals()
    return Totals(
        objects_estimated=round(f.work_per_task * step.shape.tasks),
        bytes_written=round(f.work_bytes_per_voxel * step.shape.basis_voxels),
    )


def estimate_stages(stages: list[StageSteps], cluster: Cluster) -> list[StageEstimate]:
    """Every stage's steps estimated in run order; the run's first step pays the cold start."""
    out: list[StageEstimate] = []
    volume = 0
    for steps in stages:
        volume = stage_volume(steps, volume)
        estimates, carried, totals = [], Totals(), Totals()
        for plan in steps.plans:
            step = estimate_step(plan, Context(volume=volume), cluster, carried)
            if not out and not estimates:
                step.totals.seconds += fig.COLD_START_S
                step.notes.append(f"includes {fig.COLD_START_S:g} s of worker start-up")
            carried = work_of(step)
            estimates.append(step)
            totals.add(step.totals)
        out.append(StageEstimate(name=stage_name(steps), steps=estimates, totals=totals))
    return out


def run_totals(stages: list[StageEstimate]) -> Totals:
    total = Totals()
    for stage in stages:
        total.add(stage.totals)
    return total
