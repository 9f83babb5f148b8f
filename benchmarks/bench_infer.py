"""Inference throughput per core, and the cost of overlapping patches and blending, beside one
forward pass of the same model over the same voxels, in one process.

    .venv/bin/python benchmarks/bench_infer.py [--quick] [--repeats N] [--model PATH]

Three measurements on one synthetic EM volume, all on one core (ONNX Runtime with one thread):
- single pass: the model run once on the whole volume (no patches): the floor;
- blended: the default patch and overlap of the `infer` stage, tapered blending, no storage;
- stage: `petavox infer` through the Ray runner with 1 CPU, reading and writing file:// layers.
The overhead of overlap + blending is blended / single pass − 1 (target ≤ 40 %).
"""

from __future__ import annotations

import argparse
import shutil
import time
from typing import Any

import common
import numpy as np

# three (quick: two) patch strides plus the overlap per axis at the default patch (136,136,72)
# and overlap (8,8,8): volumes the patch grid tiles exactly, as it does inside a large volume
FULL_SHAPE = (392, 392, 200)
QUICK_SHAPE = (264, 264, 136)


def timed(fn, rounds: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"volume {QUICK_SHAPE}")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 2, quick 1)")
    parser.add_argument("--model", help="ONNX model (default: the built-in one)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    rounds = args.repeats or (1 if args.quick else 2)

    from petavox.tasks.core.geometry import Box, Vec3
    from petavox.tasks.infer.infer_jobs import as_model_input
    from petavox.tasks.infer.onnx_model import ModelRef, OnnxPredictor, fetch, sha256
    from petavox.tasks.infer.patches import PatchGrid, fit_patch, predict_blended
    from petavox.tasks.synthetic.generator import SyntheticParams, generate
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run
    from petavox.workflows.stages.infer import DEFAULT_MODEL, InferParams

    url = args.model or DEFAULT_MODEL
    predict = OnnxPredictor(ModelRef(url=url, sha256=sha256(fetch(url))))
    defaults = InferParams()
    raw = generate(SyntheticParams(shape=shape, seed=2)).raw
    image = as_model_input(raw)
    voxels = int(np.prod(shape))
    out: dict[str, Any] = {
        "shape": list(shape),
        "model": url,
        "patch": list(defaults.patch),
        "overlap": list(defaults.overlap),
    }

    single_s, whole = timed(lambda: predict(image.transpose(2, 1, 0)[None, None].copy()), rounds)
    print(
        f"single forward pass {shape}: {single_s:.2f} s, "
        f"{common.mvx_per_s(voxels, single_s):.3f} MVx/s"
    )
    bounds = Box.from_shape(shape)
    patch = fit_patch(Vec3.of(defaults.patch), bounds.shape, Vec3(4, 4, 4))
    grid = PatchGrid(bounds=bounds, patch=patch, overlap=Vec3.of(defaults.overlap))
    model_s = [0.0]

    def timed_predict(batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        result = predict(batch)
        model_s[0] += time.perf_counter() - started
        return result

    blended_s, blended = timed(
        lambda: predict_blended(grid, image, bounds.start, bounds, 1, timed_predict), rounds
    )
    model_share = model_s[0] / rounds / blended_s  # of the (best) blended time, roughly
    predicted = len(grid.touching(bounds)) * patch.prod() / voxels
    print(
        f"{len(grid.touching(bounds))} patches: {predicted:.2f}× the volume's voxels "
        f"predicted; the model takes ~{model_share:.0%} of the blended time, cutting, "
        "padding and blending the rest"
    )
    out.update(predicted_voxels_ratio=predicted, model_share=model_share)
    overhead = blended_s / single_s - 1
    diff = float(np.abs(blended[..., 0] - whole[0, 0].transpose(2, 1, 0)).mean())
    print(
        f"patches {tuple(patch)} overlap {defaults.overlap}, blended: {blended_s:.2f} s, "
        f"{common.mvx_per_s(voxels, blended_s):.3f} MVx/s, overhead {overhead:+.0%}; "
        f"mean |blended - single pass| {diff:.4f}"
    )
    out.update(single_s=single_s, blended_s=blended_s, overhead=overhead, mean_abs_diff=diff)

    scratch = common.scratch_dir("infer")
    np.save(scratch / "raw.npy", raw.transpose(2, 1, 0))
    session = None
    try:
        session, init_s = common.start_ray(1)
        print(f"ray.init (1 CPU) {init_s:.1f} s")
        stage_times = []
        for attempt in range(rounds):
            root = scratch / f"run-{attempt}"
            stages = [
                {
                    "stage": "ingest",
                    "input": str(scratch / "raw.npy"),
                    "output": "raw",
                    "resolution": [8, 8, 8],
                    "storage_chunk": [64, 64, 32],
                },
                {"stage": "infer", "model": url},  # default (auto) task shape
            ]
            config = parse_config({"output": f"file://{root}", "stages": stages})
            reports = run(config, session=session, progress=False)
            stage_times.append(sum(r.seconds for r in reports if r.label.startswith("infer")))
            shutil.rmtree(root, ignore_errors=True)
        stage_s = min(stage_times)
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"infer stage, 1 CPU: {stage_s:.2f} s, {common.mvx_per_s(voxels, stage_s):.3f} MVx/s "
        f"({stage_s / single_s:.2f}× the single pass)"
    )
    out["stage_s"] = stage_s

    rows = [
        common.row(
            "infer",
            "single forward pass per core",
            common.mvx_per_s(voxels, single_s),
            "MVx/s",
            note=f"{shape}, built-in U-Net" if not args.model else str(shape),
        ),
        common.row(
            "infer",
            "patches + blending per core",
            common.mvx_per_s(voxels, blended_s),
            "MVx/s",
            note=f"patch {tuple(patch)}, overlap {defaults.overlap}: "
            f"{overhead:+.0%} vs single pass (target ≤ +40%); {predicted:.2f}× voxels "
            "predicted",
        ),
        common.row(
            "infer",
            "stage per core",
            common.mvx_per_s(voxels, stage_s),
            "MVx/s",
            note=f"Ray, file:// layers, default task shape, {stage_s / single_s:.2f}× "
            "single pass time",
        ),
    ]
    out["rows"] = rows
    common.write_results("infer", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
