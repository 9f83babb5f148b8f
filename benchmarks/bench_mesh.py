"""Meshing throughput per core: petavox `mesh` vs igneous on the same segmentation and machine.

The input is a synthetic neurite segmentation (uint64, raw encoding) on file://. Both sides
mesh it in tasks of the same shape with the same simplification (zmesh, reduction factor 100,
max error 40 nm) and then write one legacy manifest per segment, on one core:

- igneous: `create_meshing_tasks` (its defaults otherwise: gzip-compressed fragments, spatial
  index, meshes closed at the dataset's edges) and `create_mesh_manifest_tasks`, each task's
  `execute()` in a plain loop;
- petavox loop: the planned forge and manifest jobs, `job.run(chunk)` over each grid in this
  process (the kernel + I/O per core);
- petavox Ray: `pipeline.run` on a local Ray with one CPU, the two steps' stage seconds;
- petavox sharded: the `format: sharded` plans as a job loop (forge into per-shard files, then
  one merge task per shard: welding, 3 levels of detail, Draco, shard files); no igneous twin.

The four run interleaved, round-robin, each into a fresh copy of the layer; medians over the
rounds. The outputs are compared: segments with a mesh, triangles in all (sharded: of LOD 0).

    .venv/bin/python benchmarks/bench_mesh.py [--quick] [--repeats N]
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

FULL_SHAPE = (512, 512, 128)
QUICK_SHAPE = (256, 256, 64)
CHUNK = (64, 64, 64)
TASK = (256, 256, 64)


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
    layer = Layer.create(url, spec)
    layer.write(Box((0, 0, 0), shape), np.asfortranarray(labels))
    return labels


def run_igneous(url: str) -> dict[str, float]:
    from igneous.task_creation import create_mesh_manifest_tasks, create_meshing_tasks
    from taskqueue.queueablefns import totask

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        forge = list(
            create_meshing_tasks(
                url,
                mip=0,
                shape=TASK,
                simplification=True,
                max_simplification_error=40,
                mesh_dir="mesh",
            )
        )
    t1 = time.perf_counter()
    for task in forge:
        task.execute()
    t2 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        manifests = list(create_mesh_manifest_tasks(url, magnitude=2, mesh_dir="mesh"))
    for task in manifests:
        totask(task).execute()
    t3 = time.perf_counter()
    return {
        "igneous_create": t1 - t0,
        "igneous_forge": t2 - t1,
        "igneous_manifests": t3 - t2,
        "igneous": t3 - t0,
    }


def petavox_config(root: Path, workers: int = 1, **mesh: Any):
    from petavox.workflows.config import RunConfig

    stage = {"stage": "mesh", "input": "seg", "chunk_shape": TASK, **mesh}
    return RunConfig.model_validate(
        {"output": common.file_url(root), "stages": [stage], "ray": {"workers": workers}}
    )


def run_loop(root: Path, name: str = "loop", **mesh: Any) -> dict[str, float]:
    from petavox.workflows.pipeline import finish, plan_run, prepare

    t0 = time.perf_counter()
    config = petavox_config(root, **mesh)
    forge, manifests = plan_run(config)
    prepare(forge, config)
    t1 = time.perf_counter()
    for chunk in forge.grid:
        forge.job.run(chunk)
    t2 = time.perf_counter()
    for chunk in manifests.grid:
        manifests.job.run(chunk)
    finish(manifests, config)
    t3 = time.perf_counter()
    return {
        f"{name}_plan": t1 - t0,
        f"{name}_forge": t2 - t1,
        f"{name}_manifests": t3 - t2,
        name: t3 - t0,
    }


def run_ray(root: Path, session) -> dict[str, float]:
    from petavox.workflows.pipeline import run

    reports = run(petavox_config(root), session=session, progress=False)
    return {"ray": sum(r.seconds for r in reports)}


def mesh_summary(url: str, ids: list[int]) -> dict[str, int]:
    """Segments whose manifest lists fragments, and their triangles in all (multi-resolution:
    of LOD 0)."""
    from cloudvolume import CloudVolume

    cv = CloudVolume(url)
    multires = cv.mesh.meta.info["@type"] == "neuroglancer_multilod_draco"
    meshes = cv.mesh.get(ids, lod=0) if multires else cv.mesh.get(ids, fuse=False)
    return {
        "segments": sum(1 for m in meshes.values() if len(m.faces)),
        "triangles": int(sum(len(m.faces) for m in meshes.values())),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller volume, fewer rounds")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 2)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    rounds = args.repeats or (2 if args.quick else 3)
    scratch = common.scratch_dir("mesh")
    session = None
    try:
        base = scratch / "base"
        labels = make_segmentation(common.file_url(base / "seg"), shape)
        ids = [int(i) for i in np.unique(labels) if i]
        dirs = {n: scratch / n for n in ("igneous", "loop", "ray", "sharded")}

        def fresh(name: str):
            return lambda: common.copy_tree(base, dirs[name])

        session, _ = common.start_ray(1, niceness=0)  # as igneous here: no nice-15 penalty
        cases: dict[str, common.Case] = {
            "igneous": (
                fresh("igneous"),
                lambda: run_igneous(common.file_url(dirs["igneous"] / "seg")),
            ),
            "loop": (fresh("loop"), lambda: run_loop(dirs["loop"])),
            "ray": (fresh("ray"), lambda: run_ray(dirs["ray"], session)),
            "sharded": (
                fresh("sharded"),
                lambda: run_loop(dirs["sharded"], "sharded", format="sharded"),
            ),
        }
        timings = common.interleave(cases, rounds)
        outputs = {
            n: mesh_summary(common.file_url(dirs[n] / "seg"), ids)
            for n in ("igneous", "loop", "sharded")
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
    note = f"{shape} synthetic neurites, {len(ids)} segments, tasks {TASK}"
    rows = [
        common.row(
            "mesh",
            "igneous forge + manifests per core",
            common.mvx_per_s(voxels, timings["igneous"].median),
            "MVx/s",
            note=note,
        ),
        common.row(
            "mesh",
            "petavox mesh per core (job loop)",
            common.mvx_per_s(voxels, timings["loop"].median),
            "MVx/s",
        ),
        common.row(
            "mesh",
            "petavox mesh per core (Ray, 1 CPU)",
            common.mvx_per_s(voxels, timings["ray"].median),
            "MVx/s",
        ),
        common.row(
            "mesh",
            "petavox mesh sharded, 3 LODs, per core (job loop)",
            common.mvx_per_s(voxels, timings["sharded"].median),
            "MVx/s",
            note=f"merge {timings['sharded_manifests'].median:.1f} s of "
            f"{timings['sharded'].median:.1f} s; LOD 0 triangles "
            f"{outputs['sharded']['triangles']}",
        ),
        common.row(
            "mesh",
            "speed vs igneous (job loop)",
            ratio_loop,
            "×",
            target="≥ 1.0",
            met=ratio_loop >= 1.0,
        ),
        common.row(
            "mesh",
            "speed vs igneous (Ray, 1 CPU)",
            ratio_ray,
            "×",
            target="≥ 1.0",
            met=ratio_ray >= 1.0,
            note=f"triangles: petavox {outputs['loop']['triangles']}, igneous "
            f"{outputs['igneous']['triangles']}",
        ),
    ]
    out = {
        "shape": list(shape),
        "segments": len(ids),
        "outputs": outputs,
        "timings": {k: v.times for k, v in timings.items()},
        "rows": rows,
    }
    common.write_results("mesh", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
