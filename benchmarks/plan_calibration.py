"""`bench_plan.py --calibrate`: the figures `workflows/costs/figures.py` keeps for every kind
of step, measured on the demo's config over a volume of another size and seed than the demo's.

Per job class (steps of the same kind summed): MVx/s per core of its basis voxels (the
ledger's task seconds, which leave out the runner's own time), work files and products per
task and per MVx with their bytes per basis voxel (from the ledger's records), and the peak
memory traced while one task runs again in this process (numpy and Python allocations; not
what C libraries allocate on their own, nor the worker's baseline), per byte of its largest
read box. Also the first step's seconds beyond its work: the workers' start-up.
"""

from __future__ import annotations

import shutil
from collections import Counter, defaultdict
from typing import Any

import common
import plan_runs


def job_seconds(measured: dict, tasks: int, workers: int) -> float:
    """The tasks' seconds in their jobs; for a step without a ledger (evaluate), its stage
    seconds less the runner's per-step overhead, on as many cores as it had tasks."""
    from petavox.workflows.costs.figures import STEP_OVERHEAD_S

    if measured["job_seconds"]:
        return measured["job_seconds"]
    return max(0.0, measured["seconds"] - STEP_OVERHEAD_S) * min(workers, tasks)


def aggregate(
    steps, measured: list[dict], peaks: list[int], workers: int
) -> dict[str, dict[str, Any]]:
    """Per job class: the sums of its steps, then the figures."""
    sums: dict[str, Counter] = defaultdict(Counter)
    memory: dict[str, float] = defaultdict(float)
    for step, m, peak in zip(steps, measured, peaks):
        shape, s = step.shape, sums[step.shape.job]
        s["seconds"] += job_seconds(m, shape.tasks, workers)
        s["tasks"] += shape.tasks
        s["basis"] += shape.basis_voxels
        s.update(plan_runs.split_objects(step, m))
        read = shape.largest_read * shape.input_bytes_per_voxel
        memory[shape.job] = max(memory[shape.job], peak / read if read else peak)
    out = {}
    for job, s in sums.items():
        mvx = s["basis"] / 1e6
        out[job] = {
            "mvx_per_core_s": round(mvx / s["seconds"], 4) if s["seconds"] else None,
            "job_seconds": round(s["seconds"], 3),
            "tasks": s["tasks"],
            "basis_mvx": round(mvx, 3),
            "memory": round(memory[job], 2),
            "work_per_task": round(s["work"] / s["tasks"], 3),
            "work_bytes_per_voxel": round(s["work_bytes"] / s["basis"], 5) if s["basis"] else 0,
            "product_per_task": round(s["product"] / s["tasks"], 3),
            "product_per_mvx": round(s["product"] / mvx, 2) if mvx else 0,
            "product_bytes_per_voxel": round(s["product_bytes"] / s["basis"], 5)
            if s["basis"]
            else 0,
            "volume_objects": s["volume"],
        }
    return out


def with_sharded_products(config):
    """The demo's config, then the sharded mesh and skeleton formats of its segmentation (into
    folders of their own), so their steps are measured too."""
    extra = [
        {"stage": "mesh", "input": "segmentation", "format": "sharded", "mesh_dir": "mesh_sharded"},
        {
            "stage": "skeletonize",
            "input": "segmentation",
            "sharded": True,
            "dust_threshold": 0,
            "skeleton_dir": "skeletons_sharded",
        },
    ]
    data = config.model_dump(mode="json", exclude_unset=True)
    data["stages"] = [
        s.model_dump(mode="json", exclude_unset=True) | {"stage": s.stage} for s in config.stages
    ] + extra
    return type(config).model_validate(data)


def calibrate(size: int, workers: int) -> dict[str, Any]:
    folder = common.scratch_dir("plan-calibration")
    try:
        config = with_sharded_products(plan_runs.demo_run_config(folder, size, 1, workers))
        stages, measured = plan_runs.run_measured(config)
        estimated = plan_runs.estimates_of(stages, workers)
        steps = [s for stage in estimated for s in stage.steps]
        peaks = [plan_runs.traced_peak(p) for stage in stages for p in stage.plans]
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    from petavox.workflows.costs import figures

    first = measured[0]
    cold = first["seconds"] - first["job_seconds"] / workers - figures.STEP_OVERHEAD_S
    jobs = aggregate(steps, measured, peaks, workers)
    print(f"calibration: demo config, {size}×{size}×{size // 4}, seed 1, {workers} workers")
    print(f"  first step: {first['seconds']:.2f} s, of which Ray and worker start-up ~{cold:.2f} s")
    for job, f in sorted(jobs.items()):
        print(f"  {job:<20} {f}")
    for step, m in zip(steps, measured):
        print(f"    {step.label[:50]:<50} {m['seconds']:7.3f} s (jobs {m['job_seconds']:.3f})")
    out = {
        "workload": f"demo config {size}, seed 1",
        "cold_start_s": round(cold, 3),
        "jobs": jobs,
        "rows": [],
    }
    common.write_results("plan-calibration", out)
    return out
