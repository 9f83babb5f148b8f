"""From raw EM to neurons on real data: train the U-Net on gala `train`, then infer, segment and
score gala `test` through the pipeline's stages (ingest → infer → segment → evaluate).

    .venv/bin/python benchmarks/bench_gala.py [--minutes 15] [--model PATH] [--quick]

The model trains on gala `train` minus a held-out slab (x ≥ 136); the merge threshold is the
one that scores best on that slab, so nothing about `test` is chosen by looking at `test`.
Reference on `test` (../shared/data/gala/README.md): gala's pixel classifier + agglomeration,
adapted Rand 0.112, VOI 0.305 + 0.365.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

GALA = common.BENCH_DIR.parent.parent / "shared" / "data" / "gala"
HOLD_OUT_X = 136  # train on x < 136 (z,y,x arrays), choose the threshold on x ≥ 136
MERGE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.875)
SEED_THRESHOLD = 0.15


def score(root: Path, stacks: dict[str, Path], model: Path, merge: float, session) -> dict:
    """Run ingest → infer → segment → evaluate on one (raw, gt) pair; return the scores."""
    import json

    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    stages = [
        {"stage": "ingest", "input": str(stacks["raw"]), "output": "raw",
         "resolution": [10, 10, 10], "storage_chunk": [64, 64, 64]},
        {"stage": "ingest", "input": str(stacks["gt"]), "output": "gt",
         "layer_type": "segmentation", "resolution": [10, 10, 10], "storage_chunk": [64, 64, 64]},
        {"stage": "infer", "model": str(model), "chunk_shape": [128, 128, 64]},
        {"stage": "segment", "chunk_shape": [128, 128, 64], "seed_threshold": SEED_THRESHOLD,
         "merge_threshold": merge},
        {"stage": "evaluate", "ground_truth": "gt", "report": f"eval-{merge}.json"},
    ]  # fmt: skip
    run(parse_config({"output": f"file://{root}", "stages": stages}), session=session,
        progress=False)  # fmt: skip
    return json.loads((root / f"eval-{merge}.json").read_text())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training time (default 15)")
    parser.add_argument("--model", help="skip training: use this ONNX model")
    parser.add_argument("--quick", action="store_true", help="1 minute of training")
    args = parser.parse_args(argv)
    if not (GALA / "train.npz").exists():
        print(f"gala data not found at {GALA}; nothing to do")
        return {}
    scratch = common.scratch_dir("gala")
    train, test = np.load(GALA / "train.npz"), np.load(GALA / "test.npz")
    stacks = {
        "fit": (train["raw"][..., :HOLD_OUT_X], train["gt"][..., :HOLD_OUT_X]),
        "held-out": (train["raw"][..., HOLD_OUT_X:], train["gt"][..., HOLD_OUT_X:]),
        "test": (test["raw"], test["gt"]),
    }
    files: dict[str, dict[str, Path]] = {}
    for name, (raw, gt) in stacks.items():
        files[name] = {"raw": scratch / f"{name}-raw.npy", "gt": scratch / f"{name}-gt.npy"}
        np.save(files[name]["raw"], np.ascontiguousarray(raw))
        np.save(files[name]["gt"], np.ascontiguousarray(gt.astype(np.uint32)))
    out: dict[str, Any] = {}
    session = None
    try:
        if args.model:
            model = Path(args.model)
        else:
            from petavox.workflows.train import run_train

            minutes = 1.0 if args.quick else args.minutes
            model = scratch / "gala.onnx"
            started = time.perf_counter()
            run_train(str(files["fit"]["raw"]), str(files["fit"]["gt"]), str(model), minutes)
            out["train_s"] = time.perf_counter() - started
            out["minutes"] = minutes
        session, _ = common.start_ray(2)
        held = {m: score(scratch / f"held-{m}", files["held-out"], model, m, session)
                for m in MERGE_THRESHOLDS}  # fmt: skip
        for m, r in held.items():
            print(f"held-out slab of train, merge {m}: ARAND {r['arand']:.3f}, "
                  f"VOI {r['voi_split']:.3f} + {r['voi_merge']:.3f}")  # fmt: skip
        best = min(held, key=lambda m: held[m]["voi_split"] + held[m]["voi_merge"])
        result = score(scratch / "test", files["test"], model, best, session)
    finally:
        common.stop_ray(session)
    voi = result["voi_split"] + result["voi_merge"]
    print(f"gala test from raw EM (merge {best}, chosen on the held-out slab): ARAND "
          f"{result['arand']:.3f}, VOI {result['voi_split']:.3f} + {result['voi_merge']:.3f} = "
          f"{voi:.3f}  (gala: 0.112, 0.305 + 0.365)")  # fmt: skip
    out.update(merge_threshold=best, test=result, held_out=held)
    rows = [common.row("gala", "test ARAND from raw EM", result["arand"], "",
                       note=f"U-Net trained {out.get('minutes', '?')} min on train; merge {best} "
                       "chosen on a held-out slab of train; gala 0.112"),
            common.row("gala", "test VOI split + merge", voi, "bits",
                       note=f"{result['voi_split']:.3f} + {result['voi_merge']:.3f}; "
                       "gala 0.67")]  # fmt: skip
    out["rows"] = rows
    common.write_results("gala", out)
    common.print_rows(rows)
    shutil.rmtree(scratch, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
