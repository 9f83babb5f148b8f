"""Runner overhead: the downsample stage through the Ray runner vs a plain loop over its chunks.

Same layer and work as `bench_downsample.py` (uint8 raw file://, 3 mips of (2,2,1)), at two
task sizes: "step", the smallest task that writes whole chunks at every mip (storage chunk ×
factor^mips = 512×512×64, what `DownsampleParams.chunk_shape` defaulted to), and "auto", what
petavox now picks when `chunk_shape` is not given (~64 M voxels, `workflows/sizing.py`). Each case
runs on a fresh copy of the mip-0 layer, interleaved round-robin with the others:

- loop: `plan.job.run(chunk)` for each chunk of the plan's grid, in this process;
- loop, fresh job ("step" only): the same, but each chunk gets its own unpickled copy of the
  job (what a Ray task does: the job's layers, and so their cloud-volume clients, are rebuilt
  per task);
- loop, run_chunk ("step" only): `runner.run_chunk` with a fresh job, its record into the
  ledger's segment writer: all that a Ray task and the driver do per chunk, without Ray;
- Ray, 1 CPU: `pipeline.run` on a local Ray with `workers=1` (one task at a time), timing the
  stage (`StageReport.seconds`); `ray.init` and the first run after it are reported apart;
- Ray, 1 CPU, no ledger ("step" only): `runner.execute` without a ledger.

For the 1-CPU Ray runs the stage is split, from the ledger segments' timestamps, into job.run
time in the worker, the wait before the first task, the gaps between tasks and the tail.

Overhead = t_ray / t_loop − 1 (median of per-round ratios; target ≤ 10 %). Then a Ray with
`workers=2` against the loop, as a speedup. Each Ray is measured twice: as petavox starts it
(Ray runs its workers at niceness 15, so on a shared machine any other busy process takes the
CPU from them) and with `RAY_worker_niceness=0` (the runner's own cost, without that penalty).

    .venv/bin/python benchmarks/bench_runner.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import common
from bench_downsample import (
    FULL_SHAPE,
    QUICK_SHAPE,
    petavox_config,
    petavox_loop,
    petavox_plan,
    task_shape,
)

CHUNK = (64, 64, 64)
PHASES = {  # name: (Ray CPUs, worker niceness; None = Ray's default, 15)
    "ray1": (1, None),
    "ray1_nice0": (1, 0),
    "ray2": (2, None),
    "ray2_nice0": (2, 0),
}
POINTS = [
    ("read (cloud-volume download, decode)", "cloudvolume/frontends/precomputed.py", "download"),
    ("downsample (tinybrain)", "tinybrain/downsample.py", "downsample_with_averaging"),
    ("write (cloud-volume upload, total)", "datasource/precomputed/image/__init__.py", "upload"),
    ("CloudVolume() construction", "cloudvolume/cloudvolume.py", "__new__"),
    ("unpickle the job", "~", "<built-in method _pickle.loads>"),
    ("ledger segment writes", "workflows/ledger.py", "flush"),
]


def loop_fresh_job(plan) -> None:
    """The loop, with the job unpickled anew for every chunk (as each Ray task gets it)."""
    blob = pickle.dumps(plan.job)
    for chunk in plan.grid:
        pickle.loads(blob).run(chunk)


def loop_run_chunk(plan, ledger) -> None:
    """Everything a Ray task of the runner does, and the driver with its result, in this
    process: fresh job, retries, the record into the ledger's segment writer."""
    from petavox.workflows.runner import run_chunk

    blob = pickle.dumps(plan.job)
    writer = ledger.writer(plan.stage, plan.identity, tuple(plan.grid.grid_shape))
    for position, chunk in enumerate(plan.grid):
        outcome = run_chunk(pickle.loads(blob), chunk, plan.stage, 5)
        writer.add(position, outcome.record, outcome.result)
    writer.flush(force=True)


def ledger_timeline(root: Path, plan) -> list[tuple[float, float]]:
    """(start, end) of each task's job.run from the ledger's segments of the plan's stage (the
    folder holds one run): 'finished' is when the driver received the task's record, less the
    task's 'seconds'."""
    from petavox.workflows.ledger import Segment

    spans = []
    for path in (root / "ledger" / plan.stage).rglob("done/*.npz"):  # the one run's
        segment = Segment.from_bytes(path.read_bytes())
        for end, seconds in zip(segment.finished.tolist(), segment.seconds.tolist()):
            spans.append((end - seconds, end))
    return sorted(spans)


def stage_breakdown(
    spans: list[tuple[float, float]], start: float, stop: float
) -> dict[str, float]:
    """Split one serial (1-CPU) stage into job.run time, the wait before the first task, the
    gaps between tasks (ledger write, result, next dispatch) and the tail after the last."""
    gaps = sum(max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(spans))
    return {
        "in_jobs": sum(e - s for s, e in spans),
        "before_first": max(0.0, spans[0][0] - start),
        "between": gaps,
        "after_last": max(0.0, stop - spans[-1][1]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"volume {QUICK_SHAPE} not {FULL_SHAPE}"
    )
    parser.add_argument("--repeats", type=int, help="timed rounds per phase (default 13, quick 3)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    rounds = args.repeats or (3 if args.quick else 13)

    import cloudvolume  # noqa: F401  (imported up front: the loop does not pay it in its timing)

    from petavox.workflows.pipeline import ledger_for, plan_run, prepare, run
    from petavox.workflows.runner import execute

    scratch = common.scratch_dir("runner")
    base = scratch / "base"
    voxels = shape[0] * shape[1] * shape[2]
    out: dict[str, Any] = {}
    session = None
    try:
        started = time.perf_counter()
        common.make_image_layer(common.file_url(base / "raw"), shape, CHUNK, seed=2)
        print(f"test layer {shape}, chunk {CHUNK} written in {time.perf_counter() - started:.1f} s")
        variants: dict[str, tuple[int, int, int] | None] = {"step": task_shape(CHUNK), "auto": None}
        grids: dict[str, tuple[list[int], int]] = {}
        for v, chunk_shape in list(variants.items()):
            (probe,) = plan_run(petavox_config(base, chunk_shape=chunk_shape))  # writes nothing
            grids[v] = (list(probe.grid.chunk_shape), len(probe.grid))
            print(f"task '{v}' {grids[v][0]}: {grids[v][1]} chunks")
        if grids["auto"][0] == grids["step"][0]:
            del variants["auto"], grids["auto"]  # petavox's default is the step itself

        def root(name: str, v: str) -> Path:
            return scratch / f"{name}-{v}"

        def fresh(name: str, v: str):
            return lambda: common.copy_tree(base, root(name, v))

        def config(name: str, v: str, workers: int = 1):
            return petavox_config(root(name, v), workers, chunk_shape=variants[v])

        def timed(fn) -> float:
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0

        def case_loop(v: str) -> dict[str, float]:
            plan = petavox_plan(config("loop", v))
            return {f"loop@{v}": timed(lambda: petavox_loop(plan))}

        def case_fresh(v: str) -> dict[str, float]:
            plan = petavox_plan(config("fresh", v))
            return {f"loop_fresh_job@{v}": timed(lambda: loop_fresh_job(plan))}

        def case_runchunk(v: str) -> dict[str, float]:
            cfg = config("runchunk", v)
            plan = petavox_plan(cfg)
            ledger = ledger_for(cfg)
            ledger.record_params(plan.stage, plan.identity, plan.spec)
            return {f"loop_run_chunk@{v}": timed(lambda: loop_run_chunk(plan, ledger))}

        def case_ray(v: str, workers: int) -> dict[str, float]:
            key = f"ray@{v}"
            (report,) = run(config("ray", v, workers), session=session, progress=False)
            stop = time.time()
            if report.ran != grids[v][1]:
                raise RuntimeError(f"expected {grids[v][1]} chunks to run: {report}")
            (plan,) = plan_run(config("ray", v, workers))  # after the timing
            spans = ledger_timeline(root("ray", v), plan)
            parts = stage_breakdown(spans, stop - report.seconds, stop) if workers == 1 else {}
            return {key: report.seconds, **{f"{key}_{k}": x for k, x in parts.items()}}

        def case_ray_no_ledger(v: str) -> dict[str, float]:
            cfg = config("raynl", v)
            plan = petavox_plan(cfg)
            prepare(plan, cfg)
            return {f"ray_no_ledger@{v}": execute(plan, None, session, progress=False).seconds}

        phases: dict[str, dict[str, common.Timing]] = {}
        inits: dict[str, float] = {}
        firsts: dict[str, float] = {}
        for phase, (workers, niceness) in PHASES.items():
            session, inits[phase] = common.start_ray(workers, niceness)
            print(f"{phase}: ray.init ({workers} CPU) {inits[phase]:.2f} s")
            fresh("ray", "step")()
            common.settle()
            firsts[phase] = case_ray("step", workers)["ray@step"]
            print(f"  first run after ray.init (cold workers): {firsts[phase]:.3f} s")
            cases: dict[str, common.Case] = {}
            for v in variants:
                cases[f"loop@{v}"] = (fresh("loop", v), lambda v=v: case_loop(v))
                cases[f"ray@{v}"] = (fresh("ray", v), lambda v=v, w=workers: case_ray(v, w))
            if workers == 1:
                cases["raynl@step"] = (fresh("raynl", "step"), lambda: case_ray_no_ledger("step"))
            if phase == "ray1":
                cases["fresh@step"] = (fresh("fresh", "step"), lambda: case_fresh("step"))
                cases["runchunk@step"] = (fresh("runchunk", "step"), lambda: case_runchunk("step"))
            phases[phase] = t = common.interleave(cases, rounds)
            for name, timing in t.items():
                print(f"  {name:<24} {timing}")
            common.stop_ray(session)
            session = None

        if not args.no_profile:
            fresh("runchunk", "step")()
            cfg = config("runchunk", "step")
            plan = petavox_plan(cfg)
            ledger = ledger_for(cfg)
            common.settle()
            prof_task = common.profile(lambda: loop_run_chunk(plan, ledger), points=POINTS)
            fresh("loop", "step")()
            plan = petavox_plan(config("loop", "step"))
            common.settle()
            prof_loop = common.profile(lambda: petavox_loop(plan), points=POINTS)
            out["profile"] = {"loop": prof_loop, "loop_run_chunk": prof_task}
            common.print_profile("loop", prof_loop)
            common.print_profile(
                "loop via run_chunk, fresh job per chunk (a Ray task's work)", prof_task
            )
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)

    def figures(phase: str, v: str) -> dict[str, Any]:
        t = phases[phase]
        workers = PHASES[phase][0]
        loop, viaray = t[f"loop@{v}"], t[f"ray@{v}"]
        n = grids[v][1]
        f: dict[str, Any] = {"task_shape": grids[v][0], "tasks": n}
        if workers == 2:
            f["speedup"] = common.paired_ratio(loop, viaray)
            return f
        f["overhead"] = common.paired_ratio(viaray, loop) - 1
        f["overhead_of_medians"] = viaray.median / loop.median - 1
        f["extra_ms_per_task"] = 1000 * (viaray.median - loop.median) / n
        # where the extra time goes: job.run in the worker (as the ledger records it)
        # against the loop, and the rest of the stage (dispatch, ledger, waits) per task
        jobs = t[f"ray@{v}_in_jobs"]
        outside = [a - b for a, b in zip(viaray.times, jobs.times)]
        f["ms_per_task_outside_job_run"] = 1000 * statistics.median(outside) / n
        f["jobs_in_workers_vs_loop"] = common.paired_ratio(jobs, loop) - 1
        # the runner's own time (dispatch, ledger, waits; from one run's timestamps, so much
        # less noisy than comparing two runs) relative to the work of the tasks
        f["outside_share"] = statistics.median(o / j for o, j in zip(outside, jobs.times))
        f["stage_parts_ms_median"] = {
            part: round(1000 * t[f"ray@{v}_{part}"].median, 2)
            for part in ("in_jobs", "before_first", "between", "after_last")
        }
        if f"ray_no_ledger@{v}" in t:
            f["overhead_no_ledger"] = common.paired_ratio(t[f"ray_no_ledger@{v}"], loop) - 1
        if f"loop_fresh_job@{v}" in t:
            f["loop_fresh_job_vs_loop"] = common.paired_ratio(t[f"loop_fresh_job@{v}"], loop) - 1
            f["loop_run_chunk_vs_loop"] = common.paired_ratio(t[f"loop_run_chunk@{v}"], loop) - 1
        return f

    out["phases"] = {
        phase: {
            "workers": PHASES[phase][0],
            "worker_niceness": 15 if PHASES[phase][1] is None else PHASES[phase][1],
            "ray_init_s": round(inits[phase], 3),
            "first_run_after_init_s": round(firsts[phase], 4),
            "timings": {k: x.to_dict() for k, x in t.items()},
            "figures": {v: figures(phase, v) for v in variants},
        }
        for phase, t in phases.items()
    }
    print()
    for ph in out["phases"].values():
        label = f"Ray {ph['workers']} CPU, worker niceness {ph['worker_niceness']}"
        for v, f in ph["figures"].items():
            where = f"task {v} {'x'.join(map(str, f['task_shape']))} ({f['tasks']} tasks)"
            if "speedup" in f:
                print(f"  {label}, {where}: speedup vs loop {f['speedup']:.2f}×")
                continue
            extra = ""
            if "overhead_no_ledger" in f:
                extra = f", without ledger {100 * f['overhead_no_ledger']:+.1f} %"
            print(
                f"  {label}, {where}: overhead vs loop {100 * f['overhead']:+.1f} % "
                f"(outside job.run / job time {100 * f['outside_share']:.1f} %) "
                f"(target ≤ 10 %){extra}, {f['extra_ms_per_task']:.1f} ms per task\n"
                f"    job.run in the workers vs the loop "
                f"{100 * f['jobs_in_workers_vs_loop']:+.1f} %; outside job.run "
                f"{f['ms_per_task_outside_job_run']:.1f} ms per task; "
                f"stage parts (ms): {f['stage_parts_ms_median']}"
            )
    f1 = out["phases"]["ray1"]["figures"]["step"]
    print(
        f"  in-process, task step: fresh job per chunk {100 * f1['loop_fresh_job_vs_loop']:+.1f} %,"
        f" + run_chunk and ledger {100 * f1['loop_run_chunk_vs_loop']:+.1f} %"
    )
    out.update(
        {
            "quick": args.quick,
            "workload": (
                f"{'x'.join(map(str, shape))} uint8 raw file://, chunk {CHUNK}, 3 mips (2,2,1); "
                + "; ".join(f"task {v} {grids[v][0]} ({grids[v][1]} tasks)" for v in variants)
                + f"; medians of {rounds} rounds per phase"
            ),
            "volume_shape": list(shape),
            "tasks": {v: {"task_shape": g[0], "tasks": g[1]} for v, g in grids.items()},
            "rounds": rounds,
        }
    )

    def overhead_row(phase: str, v: str) -> dict[str, Any]:
        f = out["phases"][phase]["figures"][v]
        nice = out["phases"][phase]["worker_niceness"]
        note = (
            f"of medians {100 * f['overhead_of_medians']:+.1f} %; {f['extra_ms_per_task']:.1f} ms "
            f"per task: job.run in workers {100 * f['jobs_in_workers_vs_loop']:+.1f} %, "
            f"{f['ms_per_task_outside_job_run']:.1f} ms per task outside it"
        )
        if "overhead_no_ledger" in f:
            note += f"; no ledger {100 * f['overhead_no_ledger']:+.1f} %"
        return common.row(
            "runner",
            f"Ray 1 CPU overhead vs loop, task {v} ({f['tasks']} tasks), workers nice {nice}",
            100 * f["overhead"],
            "%",
            "≤ 10 %",
            f["overhead"] <= 0.10,
            note,
        )

    loop = phases["ray1"]["loop@step"]
    rows = [
        common.row(
            "runner",
            "plain loop, 1 process, task step",
            common.mvx_per_s(voxels, loop.median),
            "MVx/s",
            note=f"best-of {common.mvx_per_s(voxels, loop.best):.0f}",
        )
    ]
    for v in variants:
        rows += [overhead_row("ray1", v), overhead_row("ray1_nice0", v)]
    for v in variants:
        f, f0 = out["phases"]["ray1"]["figures"][v], out["phases"]["ray1_nice0"]["figures"][v]
        parts = f["stage_parts_ms_median"]
        rows.append(
            common.row(
                "runner",
                f"Ray 1 CPU stage time outside job.run / job time, task {v} ({f['tasks']} tasks)",
                100 * f["outside_share"],
                "%",
                "≤ 10 %",
                f["outside_share"] <= 0.10,
                f"from the ledger's timestamps; nice 0: {100 * f0['outside_share']:.1f} %; "
                f"ms: {parts['before_first']:.0f} before the first task, "
                f"{parts['between']:.0f} between tasks, {parts['after_last']:.0f} after the last",
            )
        )
    rows += [
        common.row(
            "runner",
            "loop with a fresh job per chunk, vs loop (task step)",
            100 * f1["loop_fresh_job_vs_loop"],
            "%",
            note="cloud-volume clients rebuilt per task",
        ),
        common.row(
            "runner",
            "loop via run_chunk + ledger, vs loop (task step)",
            100 * f1["loop_run_chunk_vs_loop"],
            "%",
            note="a Ray task's work without Ray",
        ),
    ]
    for v in variants:
        f2 = out["phases"]["ray2"]["figures"][v]
        f2n = out["phases"]["ray2_nice0"]["figures"][v]
        rows.append(
            common.row(
                "runner",
                f"Ray 2 CPUs speedup vs loop, task {v} ({f2['tasks']} tasks), workers nice 15",
                f2["speedup"],
                "×",
                note=f"workers nice 0: {f2n['speedup']:.2f}×",
            )
        )
    warm = phases["ray1"]["ray@step"].median
    rows.append(
        common.row(
            "runner",
            "ray.init, 1 CPU (not in the stage times)",
            inits["ray1"],
            "s",
            note=f"2 CPUs {inits['ray2']:.1f} s; first run after it {firsts['ray1']:.2f} s "
            f"(cold workers) vs warm {warm:.2f} s (task step)",
        )
    )
    out["rows"] = rows
    common.write_results("runner", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
