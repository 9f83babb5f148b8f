"""Morphology and classify throughput per core and their largest task's memory, at 1× and 4×
segments with the same shard size (segments per shard), beside scikit-image's `regionprops_table`
on the whole volume in this process (the usual way to get such a table, for one volume that
fits in memory).

Each volume is a Voronoi partition of random seeds (1×: `--segments`, 4×: four times as many)
with an EM-like image, ingested, measured by `morphology` (with the image; skeleton features
are the skeletonize stage's cost, left out) and classified with `classify --labels` (every
tenth segment labelled by a size rule). Per step: seconds and throughput per core from the run
(`--workers` local Ray workers), and the peak traced memory (numpy and Python) of one task run
again in this process. The reference computes count, box, centroid and mean intensity.

    .venv/bin/python benchmarks/bench_morphology.py [--shape 256,256,128] [--segments 500]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from plan_runs import traced_peak
from scipy import ndimage

from petavox.tasks.morphology.table_reads import read_dataset
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run

SEGMENTS_PER_SHARD = 64


def voronoi(shape: tuple[int, int, int], segments: int, seed: int) -> np.ndarray:
    """Labels 1..segments (uint32): each voxel the label of its nearest random seed."""
    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.uint32)
    points = rng.integers(0, shape, (segments, 3))
    seeds[tuple(points.T)] = np.arange(1, segments + 1, dtype=np.uint32)
    index = ndimage.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    return seeds[tuple(index)]


def config(folder: Path, segments: int, workers: int) -> dict:
    ingest = {"resolution": [8, 8, 8], "storage_chunk": [64, 64, 64]}
    shard_bits = max(0, round(math.log2(segments / SEGMENTS_PER_SHARD)))
    stages = [
        {"stage": "ingest", "input": str(folder / "seg.npy"), "output": "seg", **ingest}
        | {"layer_type": "segmentation"},
        {"stage": "ingest", "input": str(folder / "image.npy"), "output": "image", **ingest},
        {"stage": "morphology", "input": "seg", "image": "image", "shard_bits": shard_bits}
        | {"chunk_shape": [128, 128, 64]},
        {"stage": "classify", "input": "seg", "labels": str(folder / "labels.csv"), "folds": 3},
    ]
    return {"output": f"file://{folder}", "stages": stages, "ray": {"workers": workers}}


def measure(shape, segments: int, workers: int, folder: Path) -> dict:
    labels = voronoi(shape, segments, seed=segments)
    image = common.em_like(shape, seed=1)
    folder.mkdir(parents=True)
    spread = labels.astype(np.uint64) * np.uint64(2**33 + 7)  # large ids, as segment writes
    np.save(folder / "seg.npy", spread.transpose(2, 1, 0))
    np.save(folder / "image.npy", image.transpose(2, 1, 0))
    spec = config(folder, segments, workers)
    measured = run(parse_config({**spec, "stages": spec["stages"][:3]}), progress=False)
    table = read_dataset(folder / "seg" / "morphology")
    median = np.median(table["voxels"])
    sample = zip(table["segment_id"][::10].tolist(), table["voxels"][::10].tolist())
    rows = [f"{i},{'big' if v > median else 'small'}" for i, v in sample]
    (folder / "labels.csv").write_text("segment_id,class\n" + "\n".join(rows) + "\n")
    cfg = parse_config(spec)
    measured += run(cfg, progress=False)
    common.stop_ray()
    plans = {p.label: p for p in plan_run(cfg)}
    out = {"segments": len(table["segment_id"]), "voxels": int(np.prod(shape)), "steps": {}}
    for r in measured:
        if r.ran and r.label.startswith(("morphology", "classify")) and r.label in plans:
            out["steps"][r.label.split(": ")[1]] = {
                "tasks": r.total,
                "seconds": r.seconds,
                "peak_mib": traced_peak(plans[r.label]) / 2**20,
            }
    started = time.perf_counter()
    from skimage.measure import regionprops_table

    regionprops_table(
        labels, image, properties=("label", "area", "bbox", "centroid", "intensity_mean")
    )
    out["regionprops_seconds"] = time.perf_counter() - started
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,256,128")
    parser.add_argument("--segments", type=int, default=500)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    with tempfile.TemporaryDirectory(prefix="petavox-bench-morph-") as work:
        for factor in (1, 4):
            n = args.segments * factor
            m = measure(shape, n, args.workers, Path(work) / f"x{factor}")
            mvx = m["voxels"] / 1e6
            parts = m["steps"]["parts"]
            per_core = mvx / (parts["seconds"] * args.workers)
            reference = mvx / m["regionprops_seconds"]
            print(
                f"{factor}x ({m['segments']} segments, {mvx:.1f} MVx): parts {per_core:.2f} "
                f"MVx/s per core (regionprops on the whole volume, one core: {reference:.2f}; "
                f"ratio {per_core / reference:.2f}), largest task {parts['peak_mib']:.0f} MiB"
            )
            for step in ("table", "train", "predict", "properties"):
                s = m["steps"].get(step)
                if s:
                    rate = m["segments"] / (s["seconds"] * args.workers)
                    print(
                        f"    {step}: {s['tasks']} tasks, {s['seconds']:.1f} s, {rate:.0f} "
                        f"segments/s per core, largest task {s['peak_mib']:.1f} MiB"
                    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
