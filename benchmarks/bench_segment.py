"""Segmentation throughput per core: the `segment` stage (fragments, stitching, agglomeration)
through the Ray runner with 1 CPU, beside the kernel alone on the same volume in one process.

    .venv/bin/python benchmarks/bench_segment.py [--quick] [--repeats N]

The volume is synthetic (neurites with known labels); its boundary map is the ground truth's
membranes, blurred, plus noise. The kernel is watershed fragments + region graph + mean-affinity
agglomeration of the whole volume with no storage, no halo and no Ray: what one core must do at
least. The stage reads and writes file:// layers, recomputes halos, and stitches. The VOI between
the two results says how far the chunked result is from the whole-volume one (0 = identical).
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

import common
import numpy as np

FULL_SHAPE = (256, 256, 128)
QUICK_SHAPE = (128, 128, 64)
TASK = (128, 128, 64)
HALOS = ((32, 32, 32), (16, 16, 16))
MERGE_THRESHOLD = 0.6


def kernel(boundary: np.ndarray) -> np.ndarray:
    from petavox.tasks.segment.agglomeration import agglomerate_node, contact_graph
    from petavox.tasks.segment.equivalence import apply_maps
    from petavox.tasks.segment.watershed import (
        WatershedParams,
        affinities_from_boundary,
        watershed_fragments,
    )

    fragments = watershed_fragments(boundary, WatershedParams())
    padded = np.pad(fragments, ((1, 0),) * 3)
    affs = np.pad(affinities_from_boundary(boundary), ((1, 0),) * 3 + ((0, 0),))
    mapping, _ = agglomerate_node(contact_graph(padded, affs), np.zeros(0), MERGE_THRESHOLD)
    return apply_maps(fragments.ravel(), [mapping]).reshape(fragments.shape)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"volume {QUICK_SHAPE}")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 1)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    rounds = args.repeats or (1 if args.quick else 3)

    from petavox.tasks.core.layers import Layer
    from petavox.tasks.evaluate.metrics import evaluate
    from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    volume = generate(SyntheticParams(shape=shape, seed=1))
    boundary = boundary_from_labels(volume.labels, seed=1)
    voxels = int(np.prod(shape))
    scratch = common.scratch_dir("segment")
    np.save(scratch / "boundary.npy", boundary.transpose(2, 1, 0))
    session = None
    out: dict[str, Any] = {"shape": list(shape), "task": list(TASK)}
    try:
        kernel_times, labels = [], None
        for _ in range(rounds):
            started = time.perf_counter()
            labels = kernel(boundary)
            kernel_times.append(time.perf_counter() - started)
        kernel_s = min(kernel_times)
        out["kernel_s"] = kernel_s
        out["kernel_arand"] = evaluate(labels, volume.labels).arand
        print(f"kernel {shape}: {kernel_s:.2f} s, {common.mvx_per_s(voxels, kernel_s):.2f} MVx/s")

        session, init_s = common.start_ray(1)
        print(f"ray.init (1 CPU) {init_s:.1f} s")
        for halo in HALOS:
            stage_s, steps = [], {}
            for attempt in range(rounds):
                root = scratch / f"run-{halo[0]}-{attempt}"
                stages = [
                    {
                        "stage": "ingest",
                        "input": str(scratch / "boundary.npy"),
                        "output": "boundary",
                        "resolution": [8, 8, 8],
                        "storage_chunk": [64, 64, 32],
                    },
                    {
                        "stage": "segment",
                        "chunk_shape": list(TASK),
                        "halo": list(halo),
                        "merge_threshold": MERGE_THRESHOLD,
                    },
                ]
                config = parse_config({"output": f"file://{root}", "stages": stages})
                reports = run(config, session=session, progress=False)
                segment_reports = [r for r in reports if not r.label.startswith("ingest")]
                stage_s.append(sum(r.seconds for r in segment_reports))
                for r in segment_reports:
                    steps.setdefault(r.label, []).append(r.seconds)
                layer = Layer.open(f"file://{root}/segmentation")
                between = evaluate(layer.read(layer.bounds(0)), labels, ignore_gt=())
                voi = between.voi_split + between.voi_merge
                shutil.rmtree(root, ignore_errors=True)
            best = min(stage_s)
            key = f"halo{halo[0]}"
            out[key] = {
                "stage_s": best,
                "steps_s": {k: min(v) for k, v in steps.items()},
                "voi_to_kernel": voi,
            }
            rate = common.mvx_per_s(voxels, best)
            print(
                f"segment stage, halo {halo}, 1 CPU: {best:.2f} s, {rate:.2f} MVx/s "
                f"({best / kernel_s:.2f}× the kernel's time); VOI to the kernel's result {voi:.4f}"
            )
            for label, seconds in out[key]["steps_s"].items():
                print(f"    {label}: {seconds:.2f} s")
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)

    rows = [
        common.row(
            "segment",
            "kernel per core",
            common.mvx_per_s(voxels, kernel_s),
            "MVx/s",
            note=f"{shape}, fragments + region graph + agglomeration",
        )
    ]
    for halo in HALOS:
        s = out[f"halo{halo[0]}"]["stage_s"]
        rows.append(
            common.row(
                "segment",
                f"stage per core, halo {halo[0]}",
                common.mvx_per_s(voxels, s),
                "MVx/s",
                note=f"tasks {TASK}, {s / kernel_s:.2f}× kernel time, VOI to "
                f"kernel {out[f'halo{halo[0]}']['voi_to_kernel']:.4f}",
            )
        )
    out["rows"] = rows
    common.write_results("segment", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
