"""Synapse detection throughput per core: the classical cleft detector beside the cleft channel
(the built-in cleft model's `infer`, then `synapses --clefts`) and the synapse model's channels
(the built-in synapse model's, as the demo runs them), on the same volume.

A bold synthetic volume (`SyntheticParams(bold_synapses=True)`, seed 20, 256×256×128 at 8 nm;
`--quick` 128×128×64, tasks 64³) is written as a raw uint8 image layer and its ground-truth
segmentation (uint64) on file://, storage chunks 64³. Measured, on one core (ONNX Runtime runs
one thread per task):

- classical: the planned `synapses` stage (tasks 128×128×64, the default halo), `job.run(chunk)`
  over its grid in this process: read with halo, detect, assign partners, write the chunk's
  Parquet table. MVx/s of the volume's voxels;
- cleft channel: the planned `infer` stage with `petavox:clefts-synthetic.onnx` (the cleft
  probability layer; infer's default task shape, ~32 M voxels, as a run would use), then the
  planned `synapses --clefts` stage (the same tasks as the classical one), each as a job loop;
  their sum is the detector's cost, MVx/s of the volume's voxels;
- synapse model: the same with `petavox:synapses-synthetic.onnx` (cleft and side channels;
  partners from the sides) and the demo's threshold (`demo.CLEFT_THRESHOLD`);
- kernel: `detect` alone on one chunk's read box (the write box grown by the halo; the chunk
  with the largest read box) as an in-memory array: MVx/s of its write box (comparable with
  the job loop) and of its read box (what it computes on).

Rounds alternate the cases; medians. Also reported: precision, recall and direction of each
detector's tables against the generator's synapses (`eval_synapses.score`: one-to-one matching
within 6 voxels; direction = pre and post both right, of the matched).

    .venv/bin/python benchmarks/bench_synapse_detection.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

import common
import numpy as np
from eval_synapses import rates, score

FULL_SHAPE = (256, 256, 128)
QUICK_SHAPE = (128, 128, 64)
TASK = (128, 128, 64)
QUICK_TASK = (64, 64, 64)
CHUNK = (64, 64, 64)
RESOLUTION = (8, 8, 8)  # the generator's volumes are isotropic
SEED = 20  # not among the seeds that chose the detector's parameters (100-119)


def make_layers(root: Path, shape: tuple[int, int, int]):
    """The raw and ground-truth segmentation layers `raw` and `seg` under `root`; the volume."""
    from petavox.tasks.core.geometry import Box, Vec3
    from petavox.tasks.core.layers import Layer, LayerSpec
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    volume = generate(SyntheticParams(shape=shape, seed=SEED, bold_synapses=True))
    for name, layer_type, dtype, data in (
        ("raw", "image", "uint8", volume.raw),
        ("seg", "segmentation", "uint64", volume.labels.astype(np.uint64)),
    ):
        spec = LayerSpec(
            layer_type=layer_type,
            dtype=dtype,
            size=Vec3.of(shape),
            resolution=RESOLUTION,
            chunk_size=Vec3.of(CHUNK),
            encoding="raw",
        )
        layer = Layer.create(common.file_url(root / name), spec)
        layer.write(Box((0, 0, 0), shape), np.asfortranarray(data))
    return volume


def plan(root: Path, task: tuple[int, int, int]) -> dict[str, Any]:
    """The planned stages by name: `infer` (the cleft channel), `infer_sides` (the synapse
    model's channels), `classical`, `clefts` and `sides` (`synapses` without and with them)."""
    from petavox.workflows.config import RunConfig
    from petavox.workflows.demo import CLEFT_THRESHOLD
    from petavox.workflows.pipeline import plan_run, prepare
    from petavox.workflows.stages.infer import CLEFT_MODEL, SYNAPSE_MODEL

    synapses = {"stage": "synapses", "input": "raw", "segmentation": "seg", "chunk_shape": task}
    stages = [
        {
            "stage": "infer",
            "input": "raw",
            "output": "clefts",
            "model": CLEFT_MODEL,  # infer's own default task shape
        },
        {"stage": "infer", "input": "raw", "output": "sides", "model": SYNAPSE_MODEL},
        {**synapses, "output": "syn"},
        {**synapses, "output": "syn_clefts", "clefts": "clefts"},
        {**synapses, "output": "syn_sides", "clefts": "sides", "threshold": CLEFT_THRESHOLD},
    ]
    config = RunConfig.model_validate({"output": common.file_url(root), "stages": stages})
    names = ("infer", "infer_sides", "classical", "clefts", "sides")
    planned = dict(zip(names, plan_run(config)))
    for stage in planned.values():
        prepare(stage, config)
    return planned


def run_loop(synapses) -> float:
    """Seconds of `job.run(chunk)` over the grid."""
    import time

    started = time.perf_counter()
    for chunk in synapses.grid:
        synapses.job.run(chunk)
    return time.perf_counter() - started


def read_tables(folder: Path) -> dict[str, np.ndarray]:
    from petavox.tasks.core.storage import StorageContext
    from petavox.tasks.synapse.table import read_tables

    return read_tables(common.file_url(folder), "chunks/", StorageContext())


def quality_rows(label: str, counts: dict) -> list[dict]:
    """Precision, recall and direction rows of one detector's counts."""
    quality = rates(counts)
    figures = (
        ("precision", f"{counts['matched']} of {counts['detected']} detections matched"),
        ("recall", f"{counts['matched']} of {counts['true']} true synapses"),
        ("direction", f"{counts['right']} right, {counts['swapped']} swapped (of matched)"),
    )
    return [
        common.row(
            "synapse-detection",
            f"{label}: {name}",
            quality[name],
            "",
            target="≥ 0.9",
            met=quality[name] >= 0.9,
            note=note,
        )
        for name, note in figures
    ]


def measure(scratch: Path, shape, task, rounds: int) -> dict[str, Any]:
    """Timings, the kernel's chunk and each detector's counts on a fresh volume in `scratch`."""
    import time

    from petavox.tasks.synapse.detection import detect

    volume = make_layers(scratch, shape)
    stages = plan(scratch, task)
    classical = stages["classical"]
    chunks = list(classical.grid)
    chunk = max(chunks, key=lambda c: int(np.prod(tuple(c.read_box.shape))))
    read, write = chunk.read_box, chunk.write_box
    raw = classical.job.raw.read(read)
    seg = classical.job.segmentation.read(read)
    bounds = classical.job.raw.bounds(0)

    def kernel() -> dict[str, float]:
        started = time.perf_counter()
        detect(raw, seg, read, write, bounds, RESOLUTION, classical.job.params)
        return {"kernel": time.perf_counter() - started}

    def channel(infer_name: str, name: str, label: str):
        def run() -> dict[str, float]:
            infer = run_loop(stages[infer_name])
            found = run_loop(stages[name])
            return {f"{label} infer": infer, f"{label} synapses": found, label: infer + found}

        return run

    cases = {
        "classical": (None, lambda: {"classical": run_loop(classical)}),
        "channel": (None, channel("infer", "clefts", "cleft channel")),
        "sides": (None, channel("infer_sides", "sides", "synapse model")),
        "kernel": (None, kernel),
    }
    timings = common.interleave(cases, rounds)
    counts = {
        name: score(read_tables(scratch / folder), volume.synapse_table, RESOLUTION)
        for name, folder in (
            ("classical", "syn"),
            ("cleft channel", "syn_clefts"),
            ("synapse model", "syn_sides"),
        )
    }
    halo = tuple(classical.spec["halo"])
    return {
        "timings": timings,
        "chunks": len(chunks),
        "chunk": chunk,
        "counts": counts,
        "halo": halo,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from petavox.workflows.stages.infer import CLEFT_MODEL, SYNAPSE_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller volume, fewer rounds")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 2)")
    args = parser.parse_args(argv)
    shape, task = (QUICK_SHAPE, QUICK_TASK) if args.quick else (FULL_SHAPE, TASK)
    rounds = args.repeats or (2 if args.quick else 3)
    scratch = common.scratch_dir("synapse-detection")
    try:
        got = measure(scratch, shape, task, rounds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    timings, counts = got["timings"], got["counts"]
    read, write = got["chunk"].read_box, got["chunk"].write_box
    voxels = int(np.prod(shape))
    kernel_s = timings["kernel"].median
    note = (
        f"{'×'.join(map(str, shape))} bold synthetic (seed {SEED}), {got['chunks']} tasks "
        f"{'×'.join(map(str, task))}, halo {got['halo']}, one process"
    )
    chunk_note = (
        f"chunk {tuple(write.start)}: write box {tuple(write.shape)}, read box {tuple(read.shape)}"
    )
    print(f"{note}\n" + "".join(f"  {name}: {t}\n" for name, t in timings.items()))
    print(f"  kernel: {chunk_note}\n  {counts}")
    per_core = [
        ("classical", "classical detection + assignment (job loop)", note),
        ("cleft channel", "cleft channel: infer + detection + assignment (job loops)", note),
        ("cleft channel infer", "cleft channel: infer alone", CLEFT_MODEL),
        (
            "cleft channel synapses",
            "cleft channel: detection + assignment alone",
            "synapses --clefts",
        ),
        ("synapse model", "synapse model: infer + detection + assignment (job loops)", note),
        ("synapse model infer", "synapse model: infer alone", SYNAPSE_MODEL),
        ("synapse model synapses", "synapse model: detection + assignment alone", "from sides"),
    ]
    rows = [
        common.row(
            "synapse-detection",
            what,
            common.mvx_per_s(voxels, timings[key].median),
            "MVx/s",
            note=why,
        )
        for key, what, why in per_core
    ]
    rows += [
        common.row(
            "synapse-detection",
            f"{key} vs classical (time ratio, per round)",
            common.paired_ratio(timings[key], timings["classical"]),
            "×",
            note=f"seconds of the {key} / seconds of the classical detector",
        )
        for key in ("cleft channel", "synapse model")
    ]
    for voxels_of, what in ((write, "write-box"), (read, "read-box")):
        rows.append(
            common.row(
                "synapse-detection",
                f"classical kernel alone, one chunk (per {what} voxel)",
                common.mvx_per_s(int(np.prod(tuple(voxels_of.shape))), kernel_s),
                "MVx/s",
                note=chunk_note,
            )
        )
    for name, found in counts.items():
        rows += quality_rows(name, found)
    out = {
        "quick": args.quick,
        "shape": list(shape),
        "seed": SEED,
        "workload": note,
        "chunk": chunk_note,
        "timings": {k: t.to_dict() for k, t in timings.items()},
        "counts": counts,
        **{f"{name} {k}": v for name, c in counts.items() for k, v in rates(c).items()},
        "rows": rows,
    }
    common.write_results("synapse-detection", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
