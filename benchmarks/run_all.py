"""Run every benchmark (each in its own process), then print the summary table.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only segment,stitch,...]

Each benchmark writes `results/<name>.json`; `results/summary.md` gathers their rows. A full
(not --quick) run of all of them also refreshes the table in README.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import common

BENCHMARKS = {
    "downsample": "bench_downsample.py",
    "sharding": "bench_sharding.py",
    "runner": "bench_runner.py",
    "resume": "bench_resume.py",
    "segment": "bench_segment.py",
    "stitch": "bench_stitch.py",
    "infer": "bench_infer.py",
    "align": "bench_align.py",
    "montage": "bench_montage.py",
    "skeleton": "bench_skeleton.py",
    "mesh": "bench_mesh.py",
    "synapses": "bench_synapses.py",
    "synapse-detection": "bench_synapse_detection.py",
    "ledger": "bench_ledger.py",
    "retry": "bench_retry.py",
    "plan": "bench_plan.py",
    "normalize": "bench_normalize.py",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes, fewer rounds")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--repeats", type=int, help="passed on to every benchmark")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(
            f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}"
        )

    failed = []
    for name in names:
        cmd = [sys.executable, str(common.BENCH_DIR / BENCHMARKS[name])]
        if args.quick:
            cmd.append("--quick")
        if args.repeats and name not in ("stitch", "align", "montage", "ledger"):  # one pass
            cmd += ["--repeats", str(args.repeats)]
        print(f"\n######## {name}: {' '.join(cmd[1:])}", flush=True)
        started = time.perf_counter()
        code = subprocess.call(cmd, cwd=common.BENCH_DIR.parent)
        print(
            f"######## {name}: exit {code} after {time.perf_counter() - started:.0f} s", flush=True
        )
        if code:
            failed.append(name)

    common.refresh_summary()
    if not args.quick and not failed and set(names) == set(BENCHMARKS):
        common.update_readme_table()
    print("\n" + common.markdown_table())
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
