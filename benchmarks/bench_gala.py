"""From raw EM to neurons on real data, both ways: train on one gala crop, segment the other.

    .venv/bin/python benchmarks/bench_gala.py [--minutes 15] [--direction both|forward|reverse]
                                              [--quick]

The whole recipe, nothing chosen by hand: `petavox train` (its defaults: 30 % of the training
crop held out along x, segment's parameters chosen there and recorded in the model), then the
pipeline `ingest → infer → segment → evaluate` on the other crop with every stage at its
defaults (segment takes the model's choice). Forward: train on `train`, score `test`; reverse:
train on `test`, score `train`. The models are kept in results/ (gala-forward.onnx,
gala-reverse.onnx) for bench_newdata.py.
Reference on `test` (../shared/data/gala/README.md): gala's pixel classifier + agglomeration,
adapted Rand 0.112, VOI 0.305 + 0.365.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

GALA = common.BENCH_DIR.parent.parent / "shared" / "data" / "gala"
DIRECTIONS = {"forward": ("train", "test"), "reverse": ("test", "train")}
VOXEL_NM = (10.0, 10.0, 10.0)  # gala's README: about 10 nm isotropic


def model_path(direction: str) -> Path:
    return common.RESULTS_DIR / f"gala-{direction}.onnx"


def train(direction: str, scratch: Path, minutes: float) -> dict[str, Any]:
    """`petavox train` at its defaults on the direction's training crop."""
    from petavox.tasks.infer.onnx_model import inspect, open_session
    from petavox.workflows.train import run_train

    source = DIRECTIONS[direction][0]
    data = np.load(GALA / f"{source}.npz")
    files = {k: scratch / f"{direction}-fit-{k}.npy" for k in ("raw", "gt")}
    np.save(files["raw"], data["raw"])
    np.save(files["gt"], data["gt"].astype(np.uint32))
    path = model_path(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    run_train(str(files["raw"]), str(files["gt"]), str(path), minutes=minutes, voxel_nm=VOXEL_NM)
    seconds = time.perf_counter() - started
    domain = inspect(open_session(path.read_bytes(), str(path)), str(path)).domain
    return {"train_s": seconds, "minutes": minutes, "chosen": domain.segment}


def retune(direction: str) -> dict[str, Any]:
    """The tuning `petavox train` ends with, again on the kept model (the same held-out 30 %):
    for a tuning change without retraining."""
    from petavox.tasks.infer.onnx_model import inspect, open_session
    from petavox.workflows.tune import HOLDOUT, hold_out, tune_and_record

    data = np.load(GALA / f"{DIRECTIONS[direction][0]}.npz")
    _, _, held, where = hold_out([data["raw"]], [data["gt"]], HOLDOUT, (32, 64, 64))
    path = model_path(direction)
    tune_and_record(path, held, VOXEL_NM, where)
    return {"chosen": inspect(open_session(path.read_bytes(), str(path)), str(path)).domain.segment}


def score(direction: str, scratch: Path, session) -> dict[str, Any]:
    """ingest → infer → segment → evaluate on the other crop, every stage at its defaults."""
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    target = DIRECTIONS[direction][1]
    data = np.load(GALA / f"{target}.npz")
    root = scratch / f"{direction}-{target}"
    files = {k: scratch / f"{direction}-{target}-{k}.npy" for k in ("raw", "gt")}
    np.save(files["raw"], data["raw"])
    np.save(files["gt"], data["gt"].astype(np.uint32))
    ingest = {"stage": "ingest", "resolution": list(VOXEL_NM), "storage_chunk": [64, 64, 64]}
    stages = [
        {**ingest, "input": str(files["raw"]), "output": "raw"},
        {**ingest, "input": str(files["gt"]), "output": "gt", "layer_type": "segmentation"},
        {"stage": "infer", "model": str(model_path(direction))},
        {"stage": "segment"},
        {"stage": "evaluate", "input": "segmentation", "ground_truth": "gt", "report": "s.json"},
    ]
    config = parse_config({"output": f"file://{root}", "stages": stages})
    run(config, session=session, progress=False)
    return json.loads((root / "s.json").read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training time (default 15)")
    parser.add_argument("--direction", choices=("both", *DIRECTIONS), default="both")
    parser.add_argument("--skip-training", action="store_true", help="reuse the kept models")
    parser.add_argument(
        "--retune", action="store_true", help="with --skip-training: redo the models' tuning"
    )
    parser.add_argument("--quick", action="store_true", help="1 minute of training")
    args = parser.parse_args(argv)
    if not (GALA / "train.npz").exists():
        print(f"gala data not found at {GALA}; nothing to do")
        return {}
    directions = list(DIRECTIONS) if args.direction == "both" else [args.direction]
    scratch = common.scratch_dir("gala")
    out: dict[str, Any] = {}
    session = None
    try:
        for direction in directions:
            if not args.skip_training:
                out[direction] = train(direction, scratch, 1.0 if args.quick else args.minutes)
            elif args.retune:
                out[direction] = retune(direction)
        session, _ = common.start_ray(2)
        for direction in directions:
            out.setdefault(direction, {})["scores"] = score(direction, scratch, session)
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for direction in directions:
        s = out[direction]["scores"]
        fit, scored = DIRECTIONS[direction]
        voi = s["voi_split"] + s["voi_merge"]
        print(
            f"gala {direction}: trained on {fit}, scored on {scored}: adapted Rand "
            f"{s['arand']:.3f}, VOI {s['voi_split']:.3f} + {s['voi_merge']:.3f} = {voi:.3f}"
        )
        note = f"train on {fit} ({out[direction].get('minutes', '?')} min), defaults; gala 0.112"
        rows.append(common.row("gala", f"{scored} ARAND from raw EM", s["arand"], "", note=note))
        rows.append(common.row("gala", f"{scored} VOI split + merge", voi, "bits"))
    out["rows"] = rows
    common.write_results("gala", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
