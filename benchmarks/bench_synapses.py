"""The connectome writer on synthetic synapses: table, edge list, statistics, annotation layer.

Synthetic synapse tables (the contract of `petavox.tasks.synapse.table`: 10^4 rows per chunk
table, uniform in a 200 × 200 × 50 µm box, partners among N/20 segments, 5% without a partner)
go through the planned `connectome` jobs, `job.run(chunk)` over each step's grid in this
process (per core). Each task runs under tracemalloc: its peak (Python and numpy allocations;
Arrow's own pool is reported separately, as the process's pool high-water mark) per step.
Memory is bounded if a task's peak stays flat when the synapses grow at a fixed number of
synapses per shard (and chunk tables per reader): the run is repeated at N/4.

    .venv/bin/python benchmarks/bench_synapses.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

import common
import numpy as np

FULL = 1_000_000
QUICK = 100_000
PER_CHUNK = 10_000
PER_SHARD = 2**15  # synapses per shard (about)
CHUNKS_PER_READER = 4
EXTENT = (200_000.0, 200_000.0, 50_000.0)  # nm


def write_chunks(folder: Path, n: int, seed: int = 0) -> None:
    from petavox.tasks.synapse.table import COLUMNS, to_parquet

    rng = np.random.default_rng(seed)
    segments = (np.arange(max(1, n // 20), dtype=np.uint64) + 1) * np.uint64(2**33 + 7)
    folder.mkdir(parents=True)
    for c, start in enumerate(range(0, n, PER_CHUNK)):
        m = min(PER_CHUNK, n - start)
        centre = rng.uniform(0, EXTENT, (m, 3))
        offset = rng.normal(0, 60, (m, 3))
        table: dict[str, Any] = {
            "synapse_id": np.arange(start + 1, start + m + 1),
            "size": rng.integers(5, 500, m),
            "confidence": rng.uniform(0.5, 1, m),
            "pre_id": segments[rng.integers(0, len(segments), m)],
            "post_id": segments[rng.integers(0, len(segments), m)],
        }
        for i, axis in enumerate("xyz"):
            table[axis] = centre[:, i]
            table[f"pre_{axis}"] = centre[:, i] + offset[:, i]
            table[f"post_{axis}"] = centre[:, i] - offset[:, i]
        table["pre_id"][rng.random(m) < 0.05] = 0
        table["post_id"][rng.random(m) < 0.05] = 0
        data = {k: np.asarray(table[k]).astype(t) for k, t in COLUMNS.items()}
        (folder / f"{c}_0_0.parquet").write_bytes(to_parquet(data))


def run_loop(root: Path, n: int) -> dict[str, Any]:
    """The stage's steps as job loops: seconds and the largest task peak (MiB) per step."""
    import pyarrow as pa

    from petavox.workflows.config import RunConfig
    from petavox.workflows.pipeline import plan_run, prepare

    shard_bits = max(0, round(np.log2(n / PER_SHARD)))
    readers = max(1, -(-n // (PER_CHUNK * CHUNKS_PER_READER)))
    stage = {
        "stage": "connectome",
        "input": "synapses",
        "shard_bits": shard_bits,
        "readers": readers,
        "spatial_cell": 8192,
    }
    config = RunConfig.model_validate({"output": common.file_url(root), "stages": [stage]})
    steps: dict[str, Any] = {}
    tracemalloc.start()
    try:
        for plan in plan_run(config):
            prepare(plan, config)
            peaks, t0 = [], time.perf_counter()
            for chunk in plan.grid:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                plan.job.run(chunk)
                peaks.append(tracemalloc.get_traced_memory()[1] - base)
            if plan.global_step is not None:
                plan.global_step()
            name = plan.stage.removeprefix("connectome-")
            steps[name] = {
                "seconds": round(time.perf_counter() - t0, 3),
                "tasks": len(peaks),
                "peak_mib": round(max(peaks) / 2**20, 2),
            }
    finally:
        tracemalloc.stop()
    arrow = round(pa.default_memory_pool().max_memory() / 2**20, 1)
    return {
        "synapses": n,
        "shard_bits": shard_bits,
        "readers": readers,
        "steps": steps,
        "arrow_pool_max_mib": arrow,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10^5 synapses instead of 10^6")
    parser.add_argument("--repeats", type=int, help="ignored: one run per size")
    args = parser.parse_args(argv)
    n = QUICK if args.quick else FULL
    scratch = common.scratch_dir("synapses")
    runs = []
    try:
        for size in (n // 4, n):
            root = scratch / str(size)
            write_chunks(root / "synapses" / "chunks", size)
            runs.append(run_loop(root, size))
            shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    small, big = runs
    for run in runs:
        print(
            f"{run['synapses']} synapses, {2 ** run['shard_bits']} shards, "
            f"{run['readers']} readers: {run['steps']}; "
            f"Arrow pool high-water {run['arrow_pool_max_mib']} MiB"
        )
    seconds = sum(s["seconds"] for s in big["steps"].values())
    peak = max(s["peak_mib"] for s in big["steps"].values())
    peak_small = max(s["peak_mib"] for s in small["steps"].values())
    growth = peak / peak_small
    note = (
        f"{n} synapses in {n // PER_CHUNK} chunk tables, {2 ** big['shard_bits']} shards, "
        f"one process"
    )
    rows = [
        common.row(
            "synapses",
            "connectome writer throughput per core (job loop)",
            n / seconds / 1e3,
            "k synapses/s",
            note=note,
        ),
        common.row(
            "synapses",
            "largest task peak (tracemalloc)",
            peak,
            "MiB",
            note=", ".join(f"{k} {v['peak_mib']}" for k, v in big["steps"].items()),
        ),
        common.row(
            "synapses",
            "task peak growth, 4× synapses at fixed shard size",
            growth,
            "×",
            target="≤ 1.5",
            met=growth <= 1.5,
            note=f"{peak_small} MiB at {small['synapses']} synapses",
        ),
    ]
    out = {"quick": args.quick, "workload": note, "runs": runs, "rows": rows}
    common.write_results("synapses", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
