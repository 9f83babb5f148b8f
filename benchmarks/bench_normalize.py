"""Normalize throughput per core: petavox's `normalize` job loop vs scikit-image on the same
volume, in the same process.

The input is a uint16 EM-like layer on file:// (the benchmarks' synthetic EM, spread over
~1000-60000 with a gain per section), raw, 64³ chunks. Each side maps it to uint8:

- reference: `skimage.exposure.rescale_intensity` of the whole volume held in memory, between
  the same 0.5 / 99.5 percentiles (no I/O: the kernel alone), and for CLAHE
  `skimage.exposure.equalize_adapthist` section by section (tile 64);
- petavox: the planned steps of `normalize` run in this process over their grids (one core,
  reads and writes included): `global`, `section` (its levels step too) and `section` + CLAHE.

Cases run interleaved, round-robin; medians over the rounds are reported, with the ratio of
petavox's throughput to the reference's.

    .venv/bin/python benchmarks/bench_normalize.py [--quick] [--repeats N]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

FULL_SHAPE = (512, 512, 64)
QUICK_SHAPE = (256, 256, 32)
TASK = (256, 256, 64)
MODES = {
    "global": {"mode": "global"},
    "section": {"mode": "section"},
    "clahe": {"mode": "section", "clahe": True},
}


def make_input(url: str, shape: tuple[int, int, int]) -> np.ndarray:
    from petavox.tasks.core.geometry import Box, Vec3
    from petavox.tasks.core.layers import Layer, LayerSpec

    em = common.em_like(shape, seed=3).astype(np.float64)
    gain = np.linspace(0.7, 1.0, shape[2])[None, None, :] * 55000 / 255
    data = np.round(1000 + em * gain).astype(np.uint16)
    spec = LayerSpec(
        layer_type="image",
        dtype="uint16",
        size=Vec3.of(shape),
        resolution=common.RESOLUTION,
        chunk_size=Vec3(64, 64, 64),
    )
    Layer.create(url, spec).write(Box((0, 0, 0), shape), np.asfortranarray(data))
    return data


def run_loop(root: Path, options: dict[str, Any]) -> dict[str, float]:
    """Every step of the stage over its grid in this process, as a task would run it."""
    from petavox.workflows.config import RunConfig
    from petavox.workflows.pipeline import plan_run, prepare

    shutil.rmtree(root / "out", ignore_errors=True)
    stage = {"stage": "normalize", "input": "raw16", "output": "out", "chunk_shape": TASK}
    config = RunConfig.model_validate(
        {"output": common.file_url(root), "stages": [{**stage, **options}]}
    )
    started = time.perf_counter()
    for plan in plan_run(config):
        prepare(plan, config)
        for chunk in plan.grid:
            plan.job.run(chunk)
        if plan.global_step is not None:
            plan.global_step()
    return {
        "petavox " + next(k for k, v in MODES.items() if v == options): time.perf_counter()
        - started
    }


def run_reference(data: np.ndarray) -> dict[str, float]:
    from skimage.exposure import rescale_intensity

    started = time.perf_counter()
    lo, hi = np.percentile(data[::4, ::4, ::4], [0.5, 99.5])
    out = rescale_intensity(data, in_range=(lo, hi), out_range=(0, 255)).astype(np.uint8)
    assert out.dtype == np.uint8
    return {"skimage rescale": time.perf_counter() - started}


def run_reference_clahe(data: np.ndarray) -> dict[str, float]:
    from skimage.exposure import equalize_adapthist, rescale_intensity

    started = time.perf_counter()
    lo, hi = np.percentile(data[::4, ::4, ::4], [0.5, 99.5])
    scaled = rescale_intensity(data, in_range=(lo, hi), out_range=(0, 255)).astype(np.uint8)
    for z in range(data.shape[2]):
        equalize_adapthist(scaled[:, :, z], kernel_size=64, clip_limit=0.01)
    return {"skimage rescale + CLAHE": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller volume, fewer rounds")
    parser.add_argument("--repeats", type=int, help="timed rounds (default 3, quick 2)")
    args = parser.parse_args(argv)
    shape = QUICK_SHAPE if args.quick else FULL_SHAPE
    rounds = args.repeats or (2 if args.quick else 3)
    scratch = common.scratch_dir("normalize")
    try:
        data = make_input(common.file_url(scratch / "raw16"), shape)
        cases: dict[str, common.Case] = {
            "reference": (None, lambda: run_reference(data)),
            "reference clahe": (None, lambda: run_reference_clahe(data)),
            **{name: (None, lambda o=o: run_loop(scratch, o)) for name, o in MODES.items()},
        }
        timings = common.interleave(cases, rounds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    voxels = int(np.prod(shape))
    rates = {k: common.mvx_per_s(voxels, t.median) for k, t in timings.items()}
    for key, timing in sorted(timings.items()):
        print(f"  {key:<26} {timing}  {rates[key]:7.2f} MVx/s")
    ratios = {
        "global": rates["petavox global"] / rates["skimage rescale"],
        "section": rates["petavox section"] / rates["skimage rescale"],
        "clahe": rates["petavox clahe"] / rates["skimage rescale + CLAHE"],
    }
    for name, ratio in ratios.items():
        print(f"  petavox {name} / reference throughput: {ratio:.2f}")
    note = f"uint16 {shape}, 64³ raw chunks, tasks {TASK}, one core; reference in memory"
    rows = [
        common.row("normalize", f"{key} per core", rate, "MVx/s", note=note)
        for key, rate in sorted(rates.items())
    ]
    rows += [
        common.row("normalize", f"petavox {n} / reference", r, "×", note=note)
        for n, r in ratios.items()
    ]
    payload = {
        "shape": list(shape),
        "rounds": rounds,
        "timings": {k: t.to_dict() for k, t in timings.items()},
        "mvx_per_s": rates,
        "ratios": ratios,
        "rows": rows,
    }
    common.print_rows(rows)
    path = common.write_results("normalize", payload)
    print(f"results: {path}")
    return payload


if __name__ == "__main__":
    main()
