"""`petavox plan` against measured runs: predicted vs measured seconds per stage and step,
predicted vs actual objects; and how long planning an H01-sized config takes.

Runs (file://, a local Ray with `--workers` CPUs, default 2):

- the demo's config (`workflows/demo.py`: every stage on its 256×256×64 synthetic volume,
  seed 0), as `petavox demo` runs it;
- a synthetic EM-like uint8 stack of `--shape` (default 1024×1024×1024 = 1.07 GVx; `--quick`
  512×512×256) ingested with the default task shape and given 3 mips of (2, 2, 1), once
  unsharded and once with `sharding: auto`;
- `petavox plan` (the CLI, in a subprocess) on an H01-sized config: an `info` only, uint8
  400,000 × 300,000 × 5,000 voxels in 128×128×64 chunks, downsample 3 mips (9,050,477 tasks),
  then infer, segment, mesh and skeletonize planned on top.

Every run is repeated `--rounds` times (default 3), the runs of a round one after the other,
each as `petavox run` runs it (a local Ray started by its first step). Reported: per step and
per stage, predicted seconds (`petavox plan` with `--workers` cores) over the measured
`StageReport.seconds`, median and best of the rounds (target: within 2× either way; other work
on a shared machine only adds time, up to 5× in one round here), and objects: exact
predictions (volume chunks and shard files) against the files each written scale holds, and
estimated ones (work files, meshes, skeletons, tables) against what the ledger records.

`--calibrate` instead runs the demo's config on a 384×384×96 volume (seed 1) and prints, per
kind of step, the figures `workflows/costs/figures.py` keeps: MVx/s per core of its basis
voxels (from the ledger's task seconds), work and product objects per task and per MVx,
bytes per voxel, and a task's traced peak memory per byte it reads (one task run again here
under tracemalloc).

    .venv/bin/python benchmarks/bench_plan.py [--quick] [--workers N] [--shape X,Y,Z]
    .venv/bin/python benchmarks/bench_plan.py --calibrate [--calibration-size 384]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import plan_runs
import yaml

FULL_SHAPE = (1024, 1024, 1024)
QUICK_SHAPE = (512, 512, 256)
H01_SIZE = (400_000, 300_000, 5_000)
H01_CHUNK = (128, 128, 64)


def median_of(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The lines of the first round with each step's measured seconds the median of all rounds
    (objects are the same every round: checked)."""
    lines = [dict(line) for line in rounds[0]]
    for i, line in enumerate(lines):
        seen = [r[i] for r in rounds]
        line["measured_s"] = statistics.median(s["measured_s"] for s in seen)
        line["measured_rounds_s"] = [s["measured_s"] for s in seen]
        if any(s["volume_objects_on_disk"] != line["volume_objects_on_disk"] for s in seen):
            raise RuntimeError(f"{line['label']}: objects differ between rounds")
    return lines


def on_disk(step) -> int:
    """Files in the scale folders the step writes, as the store holds them after the run."""
    return sum(plan_runs.files_under(t.url, t.key) for t in step.shape.traffic if t.what == "write")


def compare(name: str, stages, measured: list[dict], workers: int) -> list[dict[str, Any]]:
    """One line per step: predicted and measured seconds and objects."""
    estimated = plan_runs.estimates_of(stages, workers)
    estimates = [s for stage in estimated for s in stage.steps]
    stage_of = [stage.name for stage in estimated for _ in stage.steps]
    lines = []
    for stage, step, m in zip(stage_of, estimates, measured):
        objects = plan_runs.split_objects(step, m)
        lines.append(
            {
                "run": name,
                "stage": stage,
                "label": step.label,
                "job": step.shape.job,
                "tasks": step.shape.tasks,
                "predicted_s": round(step.totals.seconds, 3),
                "measured_s": round(m["seconds"], 3),
                "exact_objects": step.totals.objects,
                "volume_objects_written": objects.get("volume", 0),
                "volume_objects_on_disk": on_disk(step),
                "estimated_objects": step.totals.objects_estimated,
                "other_objects_written": objects.get("work", 0) + objects.get("product", 0),
            }
        )
    return lines


def by_stage(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The step lines summed per stage (in order); the stage's seconds in each round, their
    median and best, and the predicted seconds over each."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        key = (line["run"], line["stage"])
        row = out.setdefault(key, {"run": line["run"], "stage": line["stage"]})
        for k, v in line.items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                row[k] = row.get(k, 0) + v
        rounds = line.get("measured_rounds_s", [line["measured_s"]])
        row["rounds_s"] = [a + b for a, b in zip(row.get("rounds_s", [0.0] * len(rounds)), rounds)]
    for row in out.values():
        row["measured_s"] = statistics.median(row["rounds_s"])
        row["best_s"] = min(row["rounds_s"])
        row["ratio"] = row["predicted_s"] / row["measured_s"]
        row["ratio_best"] = row["predicted_s"] / row["best_s"]
    return list(out.values())


def print_stages(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n  {'run / stage':<34} {'pred s':>7} {'median':>7} {'ratio':>6} {'best':>7} "
        f"{'ratio':>6}  {'exact objs (ledger/disk)':>27}  {'est. objs / written':>20}"
    )
    for r in rows:
        exact = (
            f"{r['exact_objects']} ({r['volume_objects_written']}/{r['volume_objects_on_disk']})"
        )
        print(
            f"  {r['run'] + ': ' + r['stage']:<34} {r['predicted_s']:7.2f} {r['measured_s']:7.2f} "
            f"{r['ratio']:6.2f} {r['best_s']:7.2f} {r['ratio_best']:6.2f}  {exact:>27}  "
            f"{r['estimated_objects']:>9} / {r['other_objects_written']:<8}"
        )


def timed_run(name: str, config, workers: int) -> list[dict[str, Any]]:
    stages, measured = plan_runs.run_measured(config)
    return compare(name, stages, measured, workers)


def h01_config(folder: Path) -> Path:
    """An H01-sized raw layer (its info only) and a config that plans on it."""
    from petavox.tasks.core.geometry import Vec3
    from petavox.tasks.core.layers import LayerSpec, write_info

    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3.of(H01_SIZE),
        resolution=(8, 8, 33),
        chunk_size=Vec3.of(H01_CHUNK),
    )
    out = folder / "h01"
    write_info(common.file_url(out / "raw"), spec.to_info())
    config = {
        "output": common.file_url(out),
        "stages": [
            {"stage": "downsample", "input": "raw", "mips": 3},
            {"stage": "infer", "input": "raw", "output": "boundary"},
            {"stage": "segment", "input": "boundary", "output": "segmentation"},
            {"stage": "mesh", "input": "segmentation"},
            {"stage": "skeletonize", "input": "segmentation"},
        ],
    }
    path = folder / "h01.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def time_h01(folder: Path) -> dict[str, Any]:
    """`petavox plan --json` on the H01-sized config, as a user runs it (imports included)."""
    path = h01_config(folder)
    cmd = [str(Path(sys.executable).with_name("petavox")), "plan", str(path), "--json"]
    cmd += ["--workers", "1000"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    report = json.loads(done.stdout)
    first = report["stages"][0]
    print(f"\n  H01-sized plan: {wall:.1f} s wall ({report['planning_seconds']:.1f} s planning)")
    print(
        f"    downsample tasks {first['totals']['tasks']}, total tasks {report['total']['tasks']}"
    )
    print(
        f"    total wall on 1000 cores {report['total']['seconds'] / 3600:.1f} h, "
        f"AWS spot ${report['dollars']['aws']['compute_spot']:.0f}"
    )
    return {
        "wall_s": round(wall, 2),
        "planning_s": report["planning_seconds"],
        "downsample_tasks": first["totals"]["tasks"],
        "total": report["total"],
        "dollars": report["dollars"],
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"synthetic run of {QUICK_SHAPE}")
    parser.add_argument("--workers", type=int, default=2, help="Ray CPUs (and predicted cores)")
    parser.add_argument("--shape", help="synthetic stack X,Y,Z (default 1024,1024,1024)")
    parser.add_argument("--no-sharded", action="store_true", help="skip the sharded synthetic")
    parser.add_argument(
        "--rounds",
        "--repeats",
        dest="rounds",
        type=int,
        default=3,
        help="rounds of every run, interleaved (default 3)",
    )
    parser.add_argument("--calibrate", action="store_true", help="measure the figures instead")
    parser.add_argument("--calibration-size", type=int, default=384)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.calibrate:
        import plan_calibration

        return plan_calibration.calibrate(args.calibration_size, args.workers)
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else None
    shape = shape or (QUICK_SHAPE if args.quick else FULL_SHAPE)
    folder = common.scratch_dir("plan")
    variants = [("synthetic", None)] + ([] if args.no_sharded else [("sharded", "auto")])
    rounds: dict[str, list[list[dict[str, Any]]]] = {}
    try:
        stack = plan_runs.write_stack(folder / "stack.npy", shape)
        for r in range(args.rounds):  # interleaved, so slow spells of the machine hit all runs
            demo = plan_runs.demo_run_config(folder / f"demo{r}", 256, 0, args.workers)
            rounds.setdefault("demo", []).append(timed_run("demo", demo, args.workers))
            shutil.rmtree(folder / f"demo{r}", ignore_errors=True)
            for name, sharding in variants:
                out = folder / f"{name}{r}"
                config = plan_runs.synthetic_run_config(out, stack, 3, args.workers, sharding)
                rounds.setdefault(name, []).append(timed_run(name, config, args.workers))
                shutil.rmtree(out, ignore_errors=True)
        h01 = time_h01(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [line for runs in rounds.values() for line in median_of(runs)]
    return report(args, shape, lines, h01)


def within(ratios: list[float]) -> int:
    return sum(0.5 <= r <= 2.0 for r in ratios)


def report(args, shape, lines: list[dict[str, Any]], h01: dict[str, Any]) -> dict[str, Any]:
    stages = by_stage(lines)
    print_stages(stages)
    median, best = [r["ratio"] for r in stages], [r["ratio_best"] for r in stages]
    exact = all(
        r["exact_objects"] == r["volume_objects_written"] == r["volume_objects_on_disk"]
        for r in stages
    )
    n, voxels = len(stages), shape[0] * shape[1] * shape[2]
    long = [r["ratio"] for r in stages if r["measured_s"] >= 1.0]
    rows = [
        common.row(
            "plan",
            "stages within 2× of their best measured seconds",
            within(best),
            "stages",
            f"{n} of {n}",
            within(best) == n,
            f"predicted/best {min(best):.2f}-{max(best):.2f}; {args.rounds} rounds",
        ),
        common.row(
            "plan",
            "stages within 2× of their median measured seconds",
            within(median),
            "stages",
            f"{n} of {n}",
            within(median) == n,
            f"predicted/median {min(median):.2f}-{max(median):.2f}",
        ),
        common.row(
            "plan",
            "stages of 1 s or more within 2× of their median",
            within(long),
            "stages",
            f"{len(long)} of {len(long)}",
            within(long) == len(long),
            "shorter stages last tens of ms, which one scheduling delay doubles",
        ),
        common.row(
            "plan",
            "exact object predictions equal to the objects written",
            int(exact),
            "",
            "1",
            exact,
            "volume chunks and shard files: the ledger's and on disk",
        ),
        common.row(
            "plan",
            "petavox plan, H01-sized config (CLI wall)",
            h01["wall_s"],
            "s",
            "< 60 s",
            h01["wall_s"] < 60,
            f"{h01['total']['tasks']} tasks",
        ),
    ]
    out = {
        "quick": args.quick,
        "workload": f"demo 256 + synthetic {shape} ({voxels / 1e9:.2f} GVx), "
        f"{args.workers} workers, {args.rounds} rounds",
        "rows": rows,
        "steps": lines,
        "stages": stages,
        "h01": h01,
    }
    common.write_results("plan", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
