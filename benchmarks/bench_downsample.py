"""Downsample throughput per core: petavox vs igneous on the same layer, machine and process.

The input is an uncompressed raw uint8 image layer on file:// (EM-like synthetic data). Both
sides make the same 3 mips with factor (2,2,1) in tasks of the same shape, each into its own
fresh copy of the mip-0 layer, written uncompressed:

- igneous: `create_downsampling_tasks` (memory target set so its task is the petavox default,
  storage chunk × 2^3 in x,y) and then each task's `execute()` in a plain loop, one core;
- petavox loop: the planned `DownsampleJob`, `job.run(chunk)` over the `ChunkGrid` in this
  process, one core: the kernel + I/O throughput per core (task shape given explicitly:
  petavox's own default is now ~64 M voxels, see `workflows/sizing.py`);
- petavox Ray: `pipeline.run` on a local Ray with one CPU (so one task at a time), timing the
  stage only (its `StageReport.seconds`, ledger included); `ray.init` is reported separately,
  and so is the first run after it (cold workers: process start-up and imports).

The three run interleaved, round-robin, each on a fresh copy, with dirty pages flushed before
each timed run; the medians (and best-of) over the rounds are reported.

The pyramids are compared voxel by voxel. Then one pass of igneous and of the petavox loop run
under cProfile, to show where the time goes (read, tinybrain, encode, write).

    .venv/bin/python benchmarks/bench_downsample.py [--quick] [--repeats N]
        [--chunks 64,64,64]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import common

FACTOR = (2, 2, 1)
MIPS = 3
FULL_SHAPE = (1024, 1024, 128)
QUICK_SHAPE = (512, 512, 128)


def parse_triple(text: str) -> tuple[int, int, int]:
    x, y, z = (int(v) for v in text.split(","))
    return (x, y, z)


def task_shape(chunk: tuple[int, int, int]) -> tuple[int, int, int]:
    """The smallest task that writes whole chunks at every mip: storage chunk × factor^mips."""
    return tuple(c * f**MIPS for c, f in zip(chunk, FACTOR))  # type: ignore[return-value]


# ---- igneous ------------------------------------------------------------------------------
def igneous_memory_target(chunk: tuple[int, int, int]) -> int:
    """A memory target for which igneous picks `MIPS` mips per task (so the petavox shape)."""
    from igneous.task_creation.image import num_mips_from_memory_target

    task_bytes = task_shape(chunk)[0] * task_shape(chunk)[1] * task_shape(chunk)[2]
    target = 2 * task_bytes  # uint8, one channel; igneous budgets 4/3 of the task for the stack
    got = num_mips_from_memory_target(target, "uint8", chunk, 1, FACTOR)
    if got != MIPS:
        raise RuntimeError(f"memory target {target} gives {got} mips, not {MIPS}")
    return target


def igneous_default_shape(chunk: tuple[int, int, int]) -> tuple[int, list[int]]:
    """Mips and task shape igneous picks at its default memory target (before clamping)."""
    from igneous.task_creation.image import MEMORY_TARGET, num_mips_from_memory_target

    mips = num_mips_from_memory_target(MEMORY_TARGET, "uint8", chunk, 1, FACTOR)
    return mips, [c * f**mips for c, f in zip(chunk, FACTOR)]


def igneous_tasks(url: str, memory_target: int) -> list:
    from igneous.task_creation import create_downsampling_tasks

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the bounds
        return list(
            create_downsampling_tasks(
                url,
                mip=0,
                num_mips=MIPS,
                factor=FACTOR,
                compress=False,
                memory_target=memory_target,
                preserve_chunk_size=True,
                fill_missing=False,
                delete_black_uploads=False,
            )
        )


def igneous_execute(tasks: list) -> None:
    from taskqueue.queueablefns import totask

    for task in tasks:
        totask(task).execute()


def igneous_task_shapes(tasks: list) -> list[list[int]]:
    return sorted({tuple(int(v) for v in t.keywords["shape"]) for t in tasks})  # type: ignore[misc]


# ---- petavox ------------------------------------------------------------------------------
def petavox_config(root: Path, workers: int = 1, chunk_shape: tuple[int, int, int] | None = None):
    from petavox.workflows.config import RunConfig

    stage: dict[str, Any] = {"stage": "downsample", "input": "raw", "factor": FACTOR, "mips": MIPS}
    if chunk_shape is not None:
        stage["chunk_shape"] = chunk_shape
    return RunConfig.model_validate(
        {"output": common.file_url(root), "stages": [stage], "ray": {"workers": workers}}
    )


def petavox_plan(config):
    """Plan the downsample stage and write its info (what `pipeline.run` does before executing)."""
    from petavox.workflows.pipeline import plan_run, prepare

    (plan,) = plan_run(config)
    prepare(plan, config)
    return plan


def petavox_loop(plan) -> None:
    for chunk in plan.grid:
        plan.job.run(chunk)


# ---- one configuration --------------------------------------------------------------------
RAY_KINDS = {  # case name: (label, worker niceness; None = Ray's default, 15)
    "ray": ("petavox Ray 1 CPU", None),
    "ray_nice0": ("petavox Ray 1 CPU, workers at nice 0", 0),
}


class Bench:
    """One storage-chunk configuration: its base layer, its per-side copies, its timings."""

    def __init__(self, scratch: Path, data, chunk: tuple[int, int, int]) -> None:
        self.chunk = chunk
        self.task = task_shape(chunk)  # igneous's task too (see `igneous_memory_target`)
        self.tag = "x".join(str(c) for c in chunk)
        self.shape = data.shape
        self.voxels = int(data.size)
        self.base = scratch / f"base-{self.tag}"
        common.make_image_layer(common.file_url(self.base / "raw"), data.shape, chunk, data=data)
        self.dirs = {n: scratch / f"{n}-{self.tag}" for n in ("igneous", "loop", "ray")}
        self.memory_target = igneous_memory_target(chunk)
        self.seen: dict[str, Any] = {}
        self.phases: dict[str, dict[str, common.Timing]] = {}
        self.first_ray_run: float | None = None

    def fresh(self, name: str):
        return lambda: common.copy_tree(self.base, self.dirs[name])

    def run_igneous(self) -> dict[str, float]:
        t0 = time.perf_counter()
        tasks = igneous_tasks(common.file_url(self.dirs["igneous"] / "raw"), self.memory_target)
        t1, c1 = time.perf_counter(), time.process_time()
        igneous_execute(tasks)
        t2, c2 = time.perf_counter(), time.process_time()
        self.seen["shapes"], self.seen["tasks"] = igneous_task_shapes(tasks), len(tasks)
        return {"igneous_create": t1 - t0, "igneous": t2 - t1, "igneous_cpu": c2 - c1}

    def run_loop(self) -> dict[str, float]:
        t0 = time.perf_counter()
        plan = petavox_plan(petavox_config(self.dirs["loop"], chunk_shape=self.task))
        t1, c1 = time.perf_counter(), time.process_time()
        petavox_loop(plan)
        t2, c2 = time.perf_counter(), time.process_time()
        self.seen["chunks"] = len(plan.grid)
        return {"loop_plan": t1 - t0, "loop": t2 - t1, "loop_cpu": c2 - c1}

    def run_ray(self, session, key: str) -> dict[str, float]:
        from petavox.workflows.pipeline import run

        t0 = time.perf_counter()
        config = petavox_config(self.dirs["ray"], workers=1, chunk_shape=self.task)
        (report,) = run(config, session=session, progress=False)
        return {key: report.seconds, f"{key}_run_wall": time.perf_counter() - t0}

    def phase(self, name: str, rounds: int, session=None, first: bool = False) -> None:
        """igneous, the petavox loop and (with a `session`) petavox on Ray, interleaved."""
        cases: dict[str, common.Case] = {
            "igneous": (self.fresh("igneous"), self.run_igneous),
            "loop": (self.fresh("loop"), self.run_loop),
        }
        if session is not None:
            cases[name] = (self.fresh("ray"), lambda: self.run_ray(session, name))
            if first:
                self.fresh("ray")()
                common.settle()
                self.first_ray_run = self.run_ray(session, name)[name]
        self.phases[name] = timings = common.interleave(cases, rounds)
        print(f"  [{self.tag}, phase {name}]")
        for key in ("igneous", "loop", name):
            if key in timings:
                print(f"    {key:<10} {timings[key]}")

    # ---- after the timings --------------------------------------------------------------
    def summary(self, with_profile: bool) -> dict[str, Any]:
        default_mips, default_shape = igneous_default_shape(self.chunk)
        out: dict[str, Any] = {
            "storage_chunk": list(self.chunk),
            "petavox_task_shape": list(task_shape(self.chunk)),
            "igneous_memory_target": self.memory_target,
            "igneous_task_shapes": self.seen["shapes"],
            "igneous_tasks": self.seen["tasks"],
            "petavox_chunks": self.seen["chunks"],
            "igneous_default": {"mips_per_task": default_mips, "task_shape": default_shape},
        }
        # igneous and the loop ran in every phase: pool their rounds (pairs stay in order)
        pooled: dict[str, common.Timing] = {}
        for timings in self.phases.values():
            for key in (
                "igneous",
                "igneous_cpu",
                "igneous_create",
                "loop",
                "loop_cpu",
                "loop_plan",
            ):
                pooled.setdefault(key, common.Timing()).times.extend(timings[key].times)
        ign, loop = pooled["igneous"], pooled["loop"]
        out["igneous"] = {
            "execute": ign.to_dict(),
            "execute_cpu": pooled["igneous_cpu"].to_dict(),
            "create": pooled["igneous_create"].to_dict(),
            "mvx_per_s_median": common.mvx_per_s(self.voxels, ign.median),
            "mvx_per_s_best": common.mvx_per_s(self.voxels, ign.best),
            "mvx_per_cpu_s_median": common.mvx_per_s(self.voxels, pooled["igneous_cpu"].median),
        }
        out["petavox_loop"] = {
            "execute": loop.to_dict(),
            "execute_cpu": pooled["loop_cpu"].to_dict(),
            "plan_and_info": pooled["loop_plan"].to_dict(),
            "mvx_per_s_median": common.mvx_per_s(self.voxels, loop.median),
            "mvx_per_s_best": common.mvx_per_s(self.voxels, loop.best),
            "mvx_per_cpu_s_median": common.mvx_per_s(self.voxels, pooled["loop_cpu"].median),
            "paired_speed_ratio_vs_igneous": common.paired_ratio(ign, loop),
            "paired_cpu_ratio_vs_igneous": common.paired_ratio(
                pooled["igneous_cpu"], pooled["loop_cpu"]
            ),
        }
        for key, timings in self.phases.items():
            if key not in timings:
                continue
            t = timings[key]
            out[key] = {
                "niceness": "Ray default (15)" if RAY_KINDS[key][1] is None else RAY_KINDS[key][1],
                "stage": t.to_dict(),
                "run_wall": timings[f"{key}_run_wall"].to_dict(),
                "mvx_per_s_median": common.mvx_per_s(self.voxels, t.median),
                "mvx_per_s_best": common.mvx_per_s(self.voxels, t.best),
                "paired_speed_ratio_vs_igneous": common.paired_ratio(timings["igneous"], t),
                "paired_speed_ratio_vs_loop": common.paired_ratio(timings["loop"], t),
            }
        if self.first_ray_run is not None:
            out["ray_first_run_after_init_s"] = round(self.first_ray_run, 4)

        # same data? (igneous rounds its multi-mip average differently from mip-by-mip)
        mips = range(1, MIPS + 1)
        url = {n: common.file_url(d / "raw") for n, d in self.dirs.items()}
        out["diff_petavox_vs_igneous"] = common.compare_pyramids(url["loop"], url["igneous"], mips)
        if any(k in self.phases for k in RAY_KINDS):
            out["diff_ray_vs_loop"] = common.compare_pyramids(url["ray"], url["loop"], mips)
        if with_profile:
            common.copy_tree(self.base, self.dirs["igneous"])
            tasks = igneous_tasks(url["igneous"], self.memory_target)
            common.settle()
            prof_ign = common.profile(lambda: igneous_execute(tasks))
            common.copy_tree(self.base, self.dirs["loop"])
            plan = petavox_plan(petavox_config(self.dirs["loop"], chunk_shape=self.task))
            common.settle()
            prof_pv = common.profile(lambda: petavox_loop(plan))
            out["profile"] = {"igneous": prof_ign, "petavox_loop": prof_pv}
        return out

    def cleanup(self) -> None:
        for path in (self.base, *self.dirs.values()):
            shutil.rmtree(path, ignore_errors=True)


def print_summary(res: dict[str, Any]) -> None:
    tag = "x".join(str(c) for c in res["storage_chunk"])
    ign, loop = res["igneous"], res["petavox_loop"]
    print(f"\n== storage chunk {tag}: petavox task {res['petavox_task_shape']} ==")
    print(
        f"  igneous task shape {res['igneous_task_shapes']} ({res['igneous_tasks']} tasks, "
        f"memory_target {res['igneous_memory_target']} B); at its default memory target "
        f"igneous would do {res['igneous_default']['mips_per_task']} mips per task of "
        f"{res['igneous_default']['task_shape']}"
    )
    for name, side in (("igneous", ign), ("petavox loop", loop)):
        print(
            f"  {name:<13} median {side['mvx_per_s_median']:6.1f} MVx/s, best "
            f"{side['mvx_per_s_best']:6.1f}, per CPU-second {side['mvx_per_cpu_s_median']:6.1f}"
        )
    print(
        f"  petavox loop / igneous: speed {loop['paired_speed_ratio_vs_igneous']:.3f} (paired), "
        f"CPU time {loop['paired_cpu_ratio_vs_igneous']:.3f}"
    )
    for key, (label, _) in RAY_KINDS.items():
        if key in res:
            r = res[key]
            print(
                f"  {label}: median {r['mvx_per_s_median']:.1f} MVx/s, best "
                f"{r['mvx_per_s_best']:.1f}; / igneous {r['paired_speed_ratio_vs_igneous']:.3f}, "
                f"/ loop {r['paired_speed_ratio_vs_loop']:.3f} (paired)"
            )
    if "ray_first_run_after_init_s" in res:
        print(
            f"  first Ray run after ray.init (cold workers): {res['ray_first_run_after_init_s']} s"
        )
    for name in ("diff_petavox_vs_igneous", "diff_ray_vs_loop"):
        if name in res:
            summary = {
                m: (d.get("max_abs_diff"), d.get("fraction_differing"))
                for m, d in res[name].items()
            }
            print(f"  {name} (mip: max |diff|, fraction differing): {summary}")
    if "profile" in res:
        common.print_profile(f"igneous execute, chunk {tag}", res["profile"]["igneous"])
        common.print_profile(f"petavox loop, chunk {tag}", res["profile"]["petavox_loop"])


def rows_for(res: dict[str, Any]) -> list[dict[str, Any]]:
    tag = "x".join(str(c) for c in res["storage_chunk"])
    task = "x".join(str(c) for c in res["petavox_task_shape"])
    where = f"chunk {tag}, task {task}"
    ign, loop = res["igneous"], res["petavox_loop"]

    def speed(name: str, side: dict, note: str = "") -> dict[str, Any]:
        note = f"best-of {side['mvx_per_s_best']:.0f}" + (f"; {note}" if note else "")
        return common.row(
            "downsample", f"{name} ({where})", side["mvx_per_s_median"], "MVx/s", note=note
        )

    def ratio(name: str, side: dict) -> dict[str, Any]:
        paired = side["paired_speed_ratio_vs_igneous"]
        med = side["mvx_per_s_median"] / ign["mvx_per_s_median"]
        top = side["mvx_per_s_best"] / ign["mvx_per_s_best"]
        note = f"median of per-round ratios; of medians {med:.2f}, of bests {top:.2f}"
        if "paired_cpu_ratio_vs_igneous" in side:
            note += f"; CPU-time ratio {side['paired_cpu_ratio_vs_igneous']:.2f}"
        return common.row(
            "downsample", f"{name} / igneous ({where})", paired, "×", "≥ 1.0", paired >= 1.0, note
        )

    rows = [
        speed("igneous, 1 core", ign, f"{ign['mvx_per_cpu_s_median']:.0f} per CPU-s"),
        speed("petavox loop, 1 core", loop, f"{loop['mvx_per_cpu_s_median']:.0f} per CPU-s"),
        ratio("petavox loop", loop),
    ]
    for key, (label, _) in RAY_KINDS.items():
        if key in res:
            note = ""
            if key == "ray" and "ray_first_run_after_init_s" in res:
                cold = common.mvx_per_s(res["voxels"], res["ray_first_run_after_init_s"])
                note = f"first run after ray.init (cold workers) {cold:.0f}"
            rows += [speed(f"{label}, stage", res[key], note), ratio(label, res[key])]
    diffs = res["diff_petavox_vs_igneous"]
    per_mip = ", ".join(
        f"mip {m}: {d.get('max_abs_diff')} ({100 * d.get('fraction_differing', 0):.0f} % of voxels)"
        for m, d in diffs.items()
    )
    rows.append(
        common.row(
            "downsample",
            f"max abs diff petavox vs igneous, mips 1-3 ({where})",
            max(d.get("max_abs_diff", 0) for d in diffs.values()),
            "gray levels",
            note=per_mip,
        )
    )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"volume {QUICK_SHAPE} not {FULL_SHAPE}"
    )
    parser.add_argument("--repeats", type=int, help="timed rounds per phase (default 9, quick 3)")
    parser.add_argument(
        "--chunks",
        nargs="+",
        type=parse_triple,
        help="storage chunk sizes to try (default 64,64,64 and 128,128,64; quick: 64,64,64)",
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray runs")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    rounds = args.repeats or (3 if args.quick else 9)
    chunks = args.chunks or ([(64, 64, 64)] if args.quick else [(64, 64, 64), (128, 128, 64)])

    import cloudvolume  # noqa: F401  (imported up front: no side pays the import in its timing)
    import igneous.task_creation  # noqa: F401
    import tinybrain  # noqa: F401

    scratch = common.scratch_dir("downsample")
    session = None
    inits: dict[str, float] = {}
    benches: list[Bench] = []
    try:
        started = time.perf_counter()
        data = common.em_like(shape, seed=1)
        print(f"test volume {shape} made in {time.perf_counter() - started:.1f} s")
        benches = [Bench(scratch, data, chunk) for chunk in chunks]
        del data
        if args.no_ray:
            for bench in benches:
                bench.phase("no-ray", rounds)
        for key, (label, niceness) in ({} if args.no_ray else RAY_KINDS).items():
            session, inits[key] = common.start_ray(1, niceness)
            print(f"{label}: ray.init {inits[key]:.2f} s")
            for i, bench in enumerate(benches):
                bench.phase(key, rounds, session, first=(key == "ray" and i == 0))
            common.stop_ray(session)
            session = None
        results = [bench.summary(with_profile=not args.no_profile) for bench in benches]
    finally:
        common.stop_ray(session)
        for bench in benches:
            bench.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)
    voxels = int(shape[0] * shape[1] * shape[2])
    for res in results:
        res["voxels"] = voxels
        print_summary(res)
    rows = [r for res in results for r in rows_for(res)]
    if inits:
        note = ", ".join(f"{k} {v:.1f} s" for k, v in inits.items())
        rows.append(
            common.row(
                "downsample",
                "ray.init, 1 CPU (not in the stage times)",
                min(inits.values()),
                "s",
                note=note,
            )
        )
    payload = {
        "quick": args.quick,
        "workload": (
            f"{'x'.join(map(str, shape))} uint8 raw uncompressed file://, {MIPS} mips "
            f"factor {FACTOR}, medians of {rounds} interleaved rounds per phase"
        ),
        "volume_shape": list(shape),
        "voxels": voxels,
        "rounds_per_phase": rounds,
        "ray_init_s": {k: round(v, 3) for k, v in inits.items()},
        "configs": results,
        "rows": rows,
    }
    common.write_results("downsample", payload)
    common.print_rows(rows)
    return payload


if __name__ == "__main__":
    main(sys.argv[1:])
