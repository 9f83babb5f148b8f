"""The measured side of `bench_plan.py`: runs on file:// whose per-step seconds, objects and task
memory are compared with what `petavox plan` predicts for their configs.

Two kinds of run: the demo's config (every stage; `workflows/demo.py`, its synthetic volume and
misalignment) and a synthetic EM-like stack ingested and given a pyramid. Each step's measured
figures come from its `StageReport` (seconds, as the run printed them) and its ledger records
(every object its tasks wrote, with sizes, and each task's seconds inside the job).
"""

from __future__ import annotations

import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

import common
import numpy as np

from petavox.tasks.core.storage import local_path
from petavox.workflows.config import RunConfig
from petavox.workflows.plan import StagePlan, StageSteps


def demo_run_config(folder: Path, size: int, seed: int, workers: int) -> RunConfig:
    """The demo's config on its synthetic volume (written as .npy stacks under `folder`)."""
    from petavox.tasks.synthetic.misalignment import random_misalignment
    from petavox.workflows.demo import (
        MAX_SHIFT,
        WARP,
        demo_config,
        demo_shape,
        demo_volume,
        write_stacks,
    )

    folder.mkdir(parents=True, exist_ok=True)
    volume = demo_volume(size, seed)
    known = random_misalignment(demo_shape(size)[2], MAX_SHIFT, WARP, seed=seed)
    stacks = write_stacks(volume, known, folder)
    output = common.file_url(folder / "out")
    return demo_config(output, stacks, {"ray": {"workers": workers}})


def write_stack(path: Path, shape: tuple[int, int, int]) -> Path:
    """An EM-like uint8 stack of `shape` (x, y, z) as a .npy (z, y, x), written in slabs so the
    whole volume need not fit in memory twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape[::-1])
    step = 64
    for z0 in range(0, shape[2], step):
        slab = common.em_like((shape[0], shape[1], min(step, shape[2] - z0)), seed=z0)
        data[z0 : z0 + slab.shape[2]] = slab.transpose(2, 1, 0)
    data.flush()
    del data
    return path


def synthetic_run_config(
    output: Path, stack: Path, mips: int, workers: int, sharding: str | None = None
) -> RunConfig:
    """Ingest of `stack` with 64³ storage chunks and the default task shape, then `mips` mips of
    (2, 2, 1) in place; `sharding` as the ingest's (None: the default)."""
    from petavox.workflows.config import parse_config

    ingest = {"stage": "ingest", "input": str(stack), "resolution": [8, 8, 40]}
    if sharding is not None:
        ingest["sharding"] = sharding
    downsample = {"stage": "downsample", "input": "raw", "mips": mips}
    return parse_config(
        {
            "output": common.file_url(output),
            "stages": [ingest, downsample],
            "ray": {"workers": workers},
        }
    )


def ledger_records(config: RunConfig, plan: StagePlan) -> tuple[int, float, dict]:
    """What the ledger of a file:// run holds of `plan` (every epoch under its identity): the
    chunks it lists, their tasks' seconds, and the objects they wrote ({url: {key: size}})."""
    from petavox.workflows.ledger import Segment

    root = Path(local_path(config.output) or "") / "ledger" / plan.stage / plan.identity
    chunks, seconds, written = 0, 0.0, {}
    for path in sorted(root.rglob("done/*.npz")):
        segment = Segment.from_bytes(path.read_bytes())
        chunks += len(segment.chunks)
        seconds += float(segment.seconds.sum())
        for i in range(len(segment.chunks)):
            for url, key, size in segment.objects_of(i):
                written.setdefault(url, {})[key] = size
    return chunks, seconds, written


def measured_step(config: RunConfig, plan: StagePlan, seconds: float) -> dict[str, Any]:
    """What one step did: its stage seconds, its tasks' seconds in their jobs, and every object
    its tasks wrote with its size, by URL."""
    chunks, job_seconds, written = ledger_records(config, plan)
    return {
        "label": plan.label,
        "job": type(plan.job).__name__,
        "tasks": chunks,
        "seconds": seconds,
        "job_seconds": job_seconds,
        "written": written,
    }


def files_under(url: str, key: str) -> int:
    """Files (objects) in folder `key` of a file:// layer, temporary files left out."""
    folder = Path(local_path(url) or "") / key
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))


def traced_peak(plan: StagePlan) -> int:
    """Peak bytes traced (numpy and Python allocations) while one task of `plan` runs in this
    process: the task at grid index 0 (a whole task wherever the volume is big enough)."""
    chunk = plan.grid.chunk((0, 0, 0))
    tracemalloc.start()
    try:
        plan.job.run(chunk)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run_measured(config: RunConfig) -> tuple[list[StageSteps], list[dict[str, Any]]]:
    """Run `config` as `petavox run` does (a local Ray of its `ray.workers`, started by the
    first step and included in its seconds); its stages (as planned before the run) and each
    step's measurement, in plan order."""
    from petavox.workflows.pipeline import plan_stages, run

    stages = plan_stages(config)
    try:
        reports = run(config, progress=False)
    finally:
        common.stop_ray()
    plans = [plan for steps in stages for plan in steps.plans]
    if len(plans) != len(reports):
        raise RuntimeError(f"{len(plans)} plans but {len(reports)} reports")
    steps = [measured_step(config, p, r.seconds) for p, r in zip(plans, reports)]
    return stages, steps


def estimates_of(stages, workers: int):
    from petavox.workflows.costs.cluster import workers as cluster_of
    from petavox.workflows.costs.estimate import estimate_stages

    return estimate_stages(stages, cluster_of(workers))


def split_objects(step, measured: dict[str, Any]) -> dict[str, int]:
    """The objects a step's tasks wrote (its ledger records) and their bytes: volume data of the
    scales it writes (by URL and scale key), work files (intermediate/) and products."""
    volume = {(t.url, t.key) for t in step.shape.traffic if t.what == "write"}
    out = Counter()
    for url, objects in measured["written"].items():
        scales = {key for u, key in volume if u == url}
        for key, size in objects.items():
            if key.split("/", 1)[0] in scales:
                kind = "volume"
            else:
                kind = "work" if "/intermediate/" in url else "product"
            out[kind] += 1
            out[kind + "_bytes"] += size
    return dict(out)
