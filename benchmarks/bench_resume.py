"""Resume: a whole `petavox run` (ingest + downsample) from the command line, then the same again.

A synthetic EM-like stack (a .npy, z,y,x) is ingested into a raw layer and given 3 mips,
through the CLI in a subprocess with `--workers 2 --quiet`, timed as the wall time of the
process (Ray start-up and shut-down included). The same command then runs again: the ledger
lists every chunk as done, so nothing is recomputed and Ray is not even started. Target: rerun
time ≤ 5 % of the first run's.

Also timed, as the floor of any CLI call: the interpreter alone, and importing the CLI. One
rerun runs under cProfile to show where its time goes.

    .venv/bin/python benchmarks/bench_resume.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
import yaml

FULL_SHAPE = (1536, 1536, 256)  # x, y, z: big enough that the first run is work, not start-up
QUICK_SHAPE = (256, 256, 64)
POINTS = [
    ("imports", "importlib._bootstrap", "_find_and_load"),
    ("load_config", "workflows/config.py", "load_config"),
    ("plan_run (opens source, reads infos)", "workflows/pipeline.py", "plan_run"),
    ("ledger listing", "workflows/ledger.py", "done"),
    ("execute (skips every chunk)", "workflows/runner.py", "execute"),
]


def cli_command() -> list[str]:
    """The installed `petavox` entry point next to this interpreter, else `python -m`."""
    script = Path(sys.executable).with_name("petavox")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "petavox.workflows.cli"]


def write_config(path: Path, output: Path, stack: Path) -> None:
    config = {
        "output": common.file_url(output),
        "stages": [
            {"stage": "ingest", "input": str(stack), "output": "raw", "resolution": [8, 8, 40]},
            {"stage": "downsample", "input": "raw", "mips": 3},
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def timed_run(cmd: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-5:])} failed ({proc.returncode}):\n{proc.stderr}")
    return elapsed, proc.stdout


def chunks_run(stdout: str) -> int:
    """Chunks the CLI reports as run (its summary lines: 'N chunks (M run, ...)')."""
    return sum(int(m) for m in re.findall(r"\((\d+) run", stdout))


def profile_rerun(cmd_tail: list[str], out: Path) -> dict[str, Any]:
    """A rerun under cProfile in a subprocess; time per category and the top functions."""
    prof = out / "rerun.prof"
    cmd = [sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "petavox.workflows.cli"]
    timed_run(cmd + cmd_tail)
    raw = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    total = max(ct for (_cc, _nc, _tt, ct, _callers) in raw.values())
    cats: dict[str, float] = {}
    for label, path_part, name in POINTS:
        cats[label] = round(
            sum(
                ct
                for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items()
                if func == name and path_part in filename.replace(os.sep, "/")
            ),
            4,
        )
    # the heaviest modules to import: cumulative time of each module's top-level code
    modules = sorted(
        (
            (ct, common._short(filename))
            for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items()
            if func == "<module>"
        ),
        reverse=True,
    )
    return {
        "total_s": round(total, 4),
        "categories_s": cats,
        "heaviest_module_imports": [
            {"module": m, "cumtime_s": round(t, 4)} for t, m in modules[:15]
        ],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"stack {QUICK_SHAPE} not {FULL_SHAPE}"
    )
    parser.add_argument("--repeats", type=int, help="first runs, each with reruns (default 3)")
    parser.add_argument("--reruns", type=int, default=3, help="reruns after each first run")
    parser.add_argument("--workers", type=int, default=2, help="--workers of the CLI run")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile rerun")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    repeats = args.repeats or (1 if args.quick else 3)

    scratch = common.scratch_dir("resume")
    first, rerun, ratios = common.Timing(), common.Timing(), []
    ran_first: list[int] = []
    ran_again: list[int] = []
    out: dict[str, Any] = {}
    try:
        stack = scratch / "stack.npy"
        np.save(stack, np.ascontiguousarray(common.em_like(shape, seed=3).transpose(2, 1, 0)))
        print(f"stack {shape} (x,y,z) saved as z,y,x .npy; CLI: {Path(cli_command()[0]).name}")

        floor_python = min(timed_run([sys.executable, "-c", "pass"])[0] for _ in range(3))
        floor_import = min(
            timed_run([sys.executable, "-c", "import petavox.workflows.cli"])[0] for _ in range(3)
        )
        floor_help = min(timed_run([*cli_command(), "--help"])[0] for _ in range(3))
        print(
            f"floor: python {floor_python:.3f} s, import the CLI {floor_import:.3f} s, "
            f"petavox --help {floor_help:.3f} s"
        )

        tail: list[str] = []
        for i in range(repeats):
            output = scratch / f"run-{i}"
            config = scratch / f"run-{i}.yaml"
            write_config(config, output, stack)
            tail = ["run", str(config), "--workers", str(args.workers), "--quiet"]
            common.settle()
            seconds, stdout = timed_run(cli_command() + tail)
            first.times.append(seconds)
            ran_first.append(chunks_run(stdout))
            again = []
            for _ in range(args.reruns):
                common.settle()
                seconds, stdout = timed_run(cli_command() + tail)
                rerun.times.append(seconds)
                again.append(seconds)
                ran_again.append(chunks_run(stdout))
            ratios.append(statistics.median(again) / first.times[-1])
            print(
                f"  run {i}: first {first.times[-1]:.2f} s ({ran_first[-1]} chunks), "
                f"reruns {', '.join(f'{s:.2f}' for s in again)} s "
                f"({ran_again[-1]} chunks run again)"
            )
        if not args.no_profile and tail:
            out["profile_rerun"] = prof = profile_rerun(tail, scratch)
            print(f"\n  profile of a rerun (cProfile, {prof['total_s']:.2f} s in Python):")
            for label, seconds in prof["categories_s"].items():
                print(f"    {label:<40} {seconds:7.3f} s")
            print("    heaviest imports (cumulative):")
            for m in prof["heaviest_module_imports"][:10]:
                print(f"      {m['cumtime_s']:7.3f} s  {m['module']}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    ratio = statistics.median(ratios)
    print(f"\n  first run {first}\n  rerun     {rerun}")
    print(f"  rerun / first: {100 * ratio:.1f} % (target ≤ 5 %)")
    out.update(
        {
            "quick": args.quick,
            "workload": (
                f"CLI `petavox run --workers {args.workers}`: ingest of a "
                f"{'x'.join(map(str, shape))} uint8 .npy + 3 mips; {repeats} first runs × "
                f"{args.reruns} reruns"
            ),
            "stack_shape_xyz": list(shape),
            "first_run": first.to_dict(),
            "rerun": rerun.to_dict(),
            "rerun_over_first_per_run": [round(r, 4) for r in ratios],
            "rerun_over_first": ratio,
            "chunks_run_first": ran_first,
            "chunks_run_on_rerun": ran_again,
            "floor_python_s": round(floor_python, 4),
            "floor_import_cli_s": round(floor_import, 4),
            "floor_cli_help_s": round(floor_help, 4),
        }
    )
    rows = [
        common.row(
            "resume",
            "first run, CLI wall time",
            first.median,
            "s",
            note=f"best {first.best:.2f} s; {ran_first[0]} chunks; Ray start-up included",
        ),
        common.row(
            "resume",
            "rerun, CLI wall time",
            rerun.median,
            "s",
            note=f"best {rerun.best:.2f} s; {max(ran_again)} chunks run again; "
            f"`import petavox.workflows.cli` alone {floor_import:.2f} s",
        ),
        common.row(
            "resume",
            "rerun / first run",
            100 * ratio,
            "%",
            "≤ 5 %",
            ratio <= 0.05,
            "median over first runs of median rerun / first",
        ),
    ]
    out["rows"] = rows
    common.write_results("resume", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
