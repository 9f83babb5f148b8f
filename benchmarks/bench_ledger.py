"""A cubic-millimetre plan in bounded memory (issue 18): planning, `status` and a resume's check
of a 10^7-chunk stage, and the dispatch loop's rate and memory over 10^5 no-op tasks.

- *H01-sized config*: `downsample`, 3 mips, of a uint8 layer of 400,000 × 300,000 × 5,000
  voxels with 128×128×64 storage chunks (an `info` file only; about a quarter of H01's mip-0
  volume): 9,050,477 chunks at the default task shape. The ledger holds a half-finished stage,
  made as the driver makes it (`SegmentWriter` segments of 16,384 chunks): every other chunk
  finished, each recording 3 objects (one per new mip, as a sharded output writes). To
  measure reading and checking the ledger rather than listing 10^7 objects (one LIST per
  1,000 objects on S3), every record names the same 3 objects, which are there: each of the
  1.4 × 10^7 recorded objects is looked up and found whole. Each measurement runs in a fresh
  process (`--case`), reporting its wall time and peak RSS: planning the config
  (`plan_stages`), `petavox status`, and a resume's check (`runner.standing` with the object
  check, what `execute` does before it dispatches anything).
- *Dispatch*: 10^5 (`--tasks`) no-op chunks through `execute` on a local Ray with 2 CPUs, the
  ledger on file://: tasks per second and the driver's RSS in each tenth of the run (flat =
  O(1) per task).

    .venv/bin/python benchmarks/bench_ledger.py [--quick] [--tasks N] [--no-dispatch]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

SIZE, CHUNK, RESOLUTION = (400_000, 300_000, 5_000), (128, 128, 64), (8, 8, 33)
QUICK_SIZE = (100_000, 75_000, 5_000)  # 1/16: 572,908 chunks
OBJECTS_PER_CHUNK = 3
TARGET_SECONDS, TARGET_RSS_MIB = 60.0, 1024.0


def write_config(root: Path, size: tuple[int, int, int]) -> Path:
    """The layer's info and a one-stage downsample config; returns the config file."""
    (root / "raw").mkdir(parents=True)
    scale = {"key": "8_8_33", "resolution": list(RESOLUTION), "voxel_offset": [0, 0, 0]}
    scale |= {"size": list(size), "chunk_sizes": [list(CHUNK)], "encoding": "raw"}
    info = {"type": "image", "data_type": "uint8", "num_channels": 1, "scales": [scale]}
    (root / "raw" / "info").write_text(json.dumps(info))
    config = root / "run.yaml"
    stage = "  - {stage: downsample, input: raw, mips: 3}"
    config.write_text(f"output: {common.file_url(root)}\nstages:\n{stage}\n")
    return config


def half_finished(config_file: Path) -> dict[str, Any]:
    """Claim the stage's products (as a run does) and record every other chunk as finished."""
    from petavox.workflows.config import load_config
    from petavox.workflows.ledger import DONE_FOLDER, SEGMENT_CHUNKS, Segment
    from petavox.workflows.pipeline import ledger_for, plan_stages
    from petavox.workflows.provenance import claim
    from petavox.workflows.runner import ledger_key

    config = load_config(config_file)
    (steps,) = plan_stages(config)
    (plan,) = steps.plans
    epoch = claim(steps, False, config.storage.context())
    ledger, key = ledger_for(config), ledger_key(plan, epoch)
    grid = tuple(int(v) for v in plan.grid.grid_shape)
    positions = np.arange(0, len(plan.grid), 2, dtype=np.int64)
    url = plan.outputs[0].url
    for mip in (1, 2, 3):  # what every record names, there: every object is looked up
        folder = Path(url.removeprefix("file://")) / str(mip)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "shared.shard", "wb") as f:
            f.truncate(1 << 20)
    started, segments = time.perf_counter(), 0
    for first in range(0, len(positions), SEGMENT_CHUNKS):
        chunks = positions[first : first + SEGMENT_CHUNKS]
        n = len(chunks)
        names = [f"{m}/shared.shard".encode() for _ in range(n) for m in (1, 2, 3)]
        segment = Segment(
            grid=grid,  # type: ignore[arg-type]
            chunks=chunks,
            finished=np.full(n, time.time()),
            seconds=np.full(n, 1.5, np.float32),
            first=np.arange(0, OBJECTS_PER_CHUNK * n + 1, OBJECTS_PER_CHUNK, dtype=np.int64),
            urls=(url,),
            object_url=np.zeros(OBJECTS_PER_CHUNK * n, np.int32),
            object_key=np.array(names),
            object_size=np.full(OBJECTS_PER_CHUNK * n, 1 << 20, np.int64),
        )
        name = f"{time.time_ns():020d}-bench-{segments:06d}.npz"
        path = Path(ledger.url.removeprefix("file://")) / ledger.prefix(plan.stage, key)
        (path / DONE_FOLDER).mkdir(parents=True, exist_ok=True)
        (path / DONE_FOLDER / name).write_bytes(segment.to_bytes())
        segments += 1
    return {
        "chunks": len(plan.grid),
        "finished": len(positions),
        "segments": segments,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_case(case: str, config_file: Path) -> dict[str, Any]:
    """One measurement in this process: its result, wall seconds and peak RSS."""
    started = time.perf_counter()
    from petavox.workflows.config import load_config
    from petavox.workflows.pipeline import ledger_for, lost_data, plan_stages, status
    from petavox.workflows.provenance import epoch_of
    from petavox.workflows.runner import ledger_key, standing

    config = load_config(config_file)
    if case == "plan":
        (steps,) = plan_stages(config)
        out: dict[str, Any] = {"chunks": len(steps.plans[0].grid)}
    elif case == "status":
        (row,) = status(config)
        out = {"done": row.done, "total": row.total, "note": row.note[:120]}
    else:  # a resume's check
        (steps,) = plan_stages(config)
        (plan,) = steps.plans
        ledger = ledger_for(config)
        key = ledger_key(plan, epoch_of(steps, ledger.context))
        trusted = standing(plan, ledger, key, lambda p, k, f: lost_data(p, k, f, ledger))
        out = {"standing": trusted.count, "total": len(plan.grid)}
    out["seconds"] = round(time.perf_counter() - started, 2)
    out["rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def measure(case: str, config_file: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--case", case, "--config", str(config_file)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


class NoOpJob:
    def run(self, chunk: Any) -> None:
        return None


def dispatch(n: int, scratch: Path) -> list[dict[str, float]]:
    """10 windows of n / 10 tasks: tasks per second and the driver's RSS at each window's end."""
    import psutil
    import ray.cloudpickle

    from petavox.tasks.core.geometry import index_grid
    from petavox.workflows.ledger import Ledger
    from petavox.workflows.plan import DriverHooks, StagePlan
    from petavox.workflows.runner import execute

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    windows: list[dict[str, float]] = []
    state = {"done": 0, "t": time.perf_counter()}

    def on_result(chunk: Any, result: Any) -> None:
        state["done"] += 1
        if state["done"] % (n // 10) == 0:
            now = time.perf_counter()
            rss = psutil.Process().memory_info().rss / 2**20
            windows.append({"tasks_per_s": (n // 10) / (now - state["t"]), "rss_mib": rss})
            state["t"] = now

    plan = StagePlan(
        label="no-op",
        stage="noop",
        version=1,
        spec={},
        grid=index_grid(n),
        job=NoOpJob(),
        hooks=DriverHooks(on_result=on_result),
    )
    session, _ = common.start_ray(2)
    try:
        execute(plan, Ledger(common.file_url(scratch / "ledger")), session, progress=False)
    finally:
        common.stop_ray(session)
    return windows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/16 of the volume, 2·10^4 tasks")
    parser.add_argument("--tasks", type=int, default=None, help="no-op tasks (default 10^5)")
    parser.add_argument("--no-dispatch", action="store_true")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.config))))
        return {}
    scratch = common.scratch_dir("ledger")
    try:
        config = write_config(scratch / "run", QUICK_SIZE if args.quick else SIZE)
        plan = measure("plan", config)
        empty = measure("status", config)
        made = half_finished(config)
        print(f"ledger: {made}")
        cases = {case: measure(case, config) for case in ("status", "resume-check")}
        tasks = args.tasks or (20_000 if args.quick else 100_000)
        windows = [] if args.no_dispatch else dispatch(tasks, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rows = rows_for(plan, empty, cases, made, windows, tasks)
    payload = {"plan": plan, "status_empty": empty, "ledger": made, **cases, "dispatch": windows}
    payload["rows"] = rows
    common.write_results("ledger", payload)
    common.print_rows(rows)
    return payload


def rows_for(plan, empty, cases, made, windows, tasks) -> list[dict[str, Any]]:
    def within(result: dict[str, Any]) -> bool:
        return result["seconds"] <= TARGET_SECONDS and result["rss_mib"] <= TARGET_RSS_MIB

    target = f"≤ {TARGET_SECONDS:g} s, ≤ {TARGET_RSS_MIB:g} MiB"
    rows = []
    for name, result, note in (
        ("plan", plan, f"{plan['chunks']} chunks"),
        ("status, empty ledger", empty, f"{empty['done']}/{empty['total']}"),
        (
            "status, half finished",
            cases["status"],
            f"{made['finished']} finished chunks in "
            f"{made['segments']} segments; {cases['status']['note']}",
        ),
        (
            "resume check, half finished",
            cases["resume-check"],
            f"{cases['resume-check']['standing']} standing of {cases['resume-check']['total']}",
        ),
    ):
        rows.append(
            common.row(
                "ledger",
                f"{name}: seconds",
                result["seconds"],
                "s",
                target,
                within(result),
                f"peak RSS {result['rss_mib']} MiB; {note}",
            )
        )
    if windows:
        rates = [w["tasks_per_s"] for w in windows]
        rss = [w["rss_mib"] for w in windows]
        rows.append(
            common.row(
                "ledger",
                "dispatch of no-op tasks, tasks/s (median of 10 windows)",
                float(np.median(rates)),
                "tasks/s",
                "flat",
                None,
                f"{tasks} tasks, 2 CPUs; windows {min(rates):.0f}-{max(rates):.0f}/s; "
                f"driver RSS {rss[0]:.0f} → {rss[-1]:.0f} MiB",
            )
        )
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
