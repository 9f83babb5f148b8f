"""Skeletonizing throughput per core: petavox `skeletonize` vs igneous on the same segmentation.

The input is a synthetic neurite segmentation (uint64, raw encoding) on file://. Both sides
skeletonize it with kimimaro in tasks of the same shape (each read with one more voxel on its
high faces, `fix_borders` on), the same TEASAR parameters and dust threshold, and then merge
each segment's pieces with the same clean-up (kimimaro.postprocess, tick threshold 3000 nm, no
cable dust), unsharded, on one core:

- igneous: `create_skeletonizing_tasks` (no spatial index, which petavox does not write either)
  and `create_unsharded_skeleton_merge_tasks` (magnitude 1: nine merge tasks), run by a
  `LocalTaskQueue(parallel=1)`;
- petavox loop: the planned chunk and merge jobs, `job.run(chunk)` over each grid in this
  process (the kernel + I/O per core);
- petavox Ray: `pipeline.run` on a local Ray with one CPU, the two steps' stage seconds.

The three run interleaved, round-robin, each into a fresh copy of the layer; medians over the
rounds. The outputs are compared: segments with a skeleton, their cable length in all, and how
many skeletons fall apart into several components.

    .venv/bin/python benchmarks/bench_skeleton.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

FULL_SHAPE = (256, 256, 128)
QUICK_SHAPE = (128, 128, 64)
CHUNK = (64, 64, 32)
DUST = 1000  # voxels
TICKS = 3000.0  # nm


def make_segmentation(url: str, shape: tuple[int, int, int]) -> np.ndarray:
    from petavox.tasks.core.geometry import Box, Vec3
    from petavox.tasks.core.layers import Layer, LayerSpec
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    labels = generate(SyntheticParams(shape=shape, seed=1, synapses=False)).labels
    labels = labels.astype(np.uint64)
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        size=Vec3.of(shape),
        resolution=common.RESOLUTION,
        chunk_size=Vec3.of(CHUNK),
        encoding="raw",
    )
    Layer.create(url, spec).write(Box((0, 0, 0), shape), np.asfortranarray(labels))
    return labels


def run_igneous(url: str, task: tuple[int, int, int]) -> dict[str, float]:
    from igneous.task_creation import (
        create_skeletonizing_tasks,
        create_unsharded_skeleton_merge_tasks,
    )
    from taskqueue import LocalTaskQueue

    from petavox.tasks.skeleton.skeletons import Teasar

    queue = LocalTaskQueue(parallel=1, progress=False)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        queue.insert(
            create_skeletonizing_tasks(
                url,
                mip=0,
                shape=task,
                teasar_params=Teasar().teasar_params(),
                dust_threshold=DUST,
                fix_branching=True,
                fix_borders=True,
                parallel=1,
                spatial_index=False,
            )
        )
    queue.execute(progress=False)
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        queue.insert(
            create_unsharded_skeleton_merge_tasks(
                url, magnitude=1, dust_threshold=0, tick_threshold=TICKS
            )
        )
    queue.execute(progress=False)
    t2 = time.perf_counter()
    return {"igneous_chunks": t1 - t0, "igneous_merge": t2 - t1, "igneous": t2 - t0}


def petavox_config(root: Path, task: tuple[int, int, int], workers: int = 1):
    from petavox.workflows.config import RunConfig

    stage = {
        "stage": "skeletonize",
        "input": "seg",
        "chunk_shape": task,
        "dust_threshold": DUST,
        "tick_threshold": TICKS,
    }
    return RunConfig.model_validate(
        {"output": common.file_url(root), "stages": [stage], "ray": {"workers": workers}}
    )


def run_loop(root: Path, task: tuple[int, int, int]) -> dict[str, float]:
    from petavox.workflows.pipeline import finish, plan_run, prepare

    t0 = time.perf_counter()
    config = petavox_config(root, task)
    chunks, merge = plan_run(config)
    prepare(chunks, config)
    for chunk in chunks.grid:
        chunks.job.run(chunk)
    t1 = time.perf_counter()
    for chunk in merge.grid:
        merge.job.run(chunk)
    finish(merge, config)
    t2 = time.perf_counter()
    return {"loop_chunks": t1 - t0, "loop_merge": t2 - t1, "loop": t2 - t0}


def run_ray(root: Path, task: tuple[int, int, int], session) -> dict[str, float]:
    from petavox.workflows.pipeline import run

    reports = run(petavox_config(root, task), session=session, progress=False)
    return {"ray": sum(r.seconds for r in reports)}


def skeleton_summary(url: str, ids: list[int]) -> dict[str, float]:
    """Segments with a skeleton, cable length in all (mm), skeletons in several pieces."""
    from cloudvolume import CloudVolume

    cv = CloudVolume(url)
    folder = Path(url.removeprefix("file://")) / cv.info["skeletons"]
    found = [i for i in ids if any((folder / f"{i}{gz}").is_file() for gz in ("", ".gz"))]
    skeletons = [cv.skeleton.get(i) for i in found]
    return {
        "segments": len(found),
        "cable_mm": round(float(sum(s.cable_length() for s in skeletons)) / 1e6, 4),
        "split": sum(1 for s in skeletons if len(s.components()) > 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller volume, fewer rounds")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 2)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    task = tuple(s // 2 for s in shape)  # 8 tasks
    rounds = args.repeats or (2 if args.quick else 3)

    import igneous.task_creation  # noqa: F401  (imported up front: no side pays the import)
    import kimimaro  # noqa: F401

    scratch = common.scratch_dir("skeleton")
    session = None
    try:
        base = scratch / "base"
        labels = make_segmentation(common.file_url(base / "seg"), shape)
        ids = [int(i) for i in np.unique(labels) if i]
        dirs = {n: scratch / n for n in ("igneous", "loop", "ray")}

        def fresh(name: str):
            return lambda: common.copy_tree(base, dirs[name])

        session, _ = common.start_ray(1)
        igneous_url = common.file_url(dirs["igneous"] / "seg")
        cases: dict[str, common.Case] = {
            "igneous": (fresh("igneous"), lambda: run_igneous(igneous_url, task)),
            "loop": (fresh("loop"), lambda: run_loop(dirs["loop"], task)),
            "ray": (fresh("ray"), lambda: run_ray(dirs["ray"], task, session)),
        }
        timings = common.interleave(cases, rounds)
        outputs = {
            n: skeleton_summary(common.file_url(dirs[n] / "seg"), ids) for n in ("igneous", "loop")
        }
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)
    voxels = int(np.prod(shape))
    for key, timing in sorted(timings.items()):
        print(f"  {key:<18} {timing}")
    print(f"outputs: {json.dumps(outputs)}; {len(ids)} segments")
    ratio_loop = common.paired_ratio(timings["igneous"], timings["loop"])
    ratio_ray = common.paired_ratio(timings["igneous"], timings["ray"])
    note = f"{shape} synthetic neurites, {len(ids)} segments, tasks {task}"
    seen = (
        f"skeletons: petavox {outputs['loop']['segments']}, igneous "
        f"{outputs['igneous']['segments']}; cable {outputs['loop']['cable_mm']} vs "
        f"{outputs['igneous']['cable_mm']} mm"
    )
    rows = [
        common.row(
            "skeleton",
            "igneous skeletonize + merge per core",
            common.mvx_per_s(voxels, timings["igneous"].median),
            "MVx/s",
            note=note,
        ),
        common.row(
            "skeleton",
            "petavox skeletonize per core (job loop)",
            common.mvx_per_s(voxels, timings["loop"].median),
            "MVx/s",
        ),
        common.row(
            "skeleton",
            "petavox skeletonize per core (Ray, 1 CPU)",
            common.mvx_per_s(voxels, timings["ray"].median),
            "MVx/s",
        ),
        common.row(
            "skeleton",
            "speed vs igneous (job loop)",
            ratio_loop,
            "×",
            target="≥ 1.0",
            met=ratio_loop >= 1.0,
            note=seen,
        ),
        common.row(
            "skeleton",
            "speed vs igneous (Ray, 1 CPU)",
            ratio_ray,
            "×",
            target="≥ 1.0",
            met=ratio_ray >= 1.0,
        ),
    ]
    out = {
        "quick": args.quick,
        "workload": note,
        "shape": list(shape),
        "segments": len(ids),
        "outputs": outputs,
        "timings": {k: v.times for k, v in timings.items()},
        "rows": rows,
    }
    common.write_results("skeleton", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
