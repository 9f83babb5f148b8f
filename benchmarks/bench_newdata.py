"""A model on data it was not trained on: gala's model on another FIB-SEM volume, and models on
synthetic volumes at twice their training voxel size, through the pipeline at its defaults.

    .venv/bin/python benchmarks/bench_newdata.py [--model results/gala-forward.onnx]

1. `neuroproof_sample1` (fly medulla, 250³, 10 nm, no ground truth) through ingest → infer →
   segment with the gala model (run bench_gala.py first), with infer's intensity normalisation
   on (the default) and off: the boundary map's membrane share against the model's on its
   training data, the largest segment's share, the segment count, and a picture
   (results/newdata-neuroproof.png).
2. A synthetic volume (seed 11, 256×256×64 at 8 nm) and the same volume averaged 2× on every
   axis (16 nm): the built-in model (trained at 8 nm) with resampling on and off, scored
   against the labels; and the gala model (10 nm) on the 16 nm volume.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import common
import numpy as np

NEUROPROOF = common.BENCH_DIR.parent.parent / "shared" / "data" / "neuroproof_sample1"
BUILTIN = "petavox:boundary-synthetic.onnx"
# the demo's segment settings for the built-in model (README, "The built-in model")
BUILTIN_SEGMENT = {
    "seeds": "distance",
    "seed_threshold": 0.5,
    "seed_radius": 4,
    "merge_threshold": 0.7,
}


def pipeline(root: Path, raw: Path, nm, infer: dict, segment: dict, gt: Path | None, session):
    """ingest → infer → segment (→ evaluate against `gt`); the layers and the scores."""
    from petavox.tasks.core.layers import Layer
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    ingest = {"stage": "ingest", "resolution": list(nm), "storage_chunk": [64, 64, 32]}
    stages = [
        {**ingest, "input": str(raw), "output": "raw"},
        {"stage": "infer", **infer},
        {"stage": "segment", **segment},
    ]
    if gt is not None:
        stages.insert(1, {**ingest, "input": str(gt), "output": "gt", "layer_type": "segmentation"})
        stages.append({"stage": "evaluate", "input": "segmentation", "ground_truth": "gt"})
        stages[-1]["report"] = "s.json"
    run(
        parse_config({"output": f"file://{root}", "stages": stages}),
        session=session,
        progress=False,
    )
    layers = {n: Layer.open(f"file://{root}/{n}") for n in ("raw", "boundary", "segmentation")}
    data = {n: layer.read(layer.bounds(0)) for n, layer in layers.items()}
    seg = data["segmentation"]
    ids, counts = np.unique(seg[seg != 0], return_counts=True)
    record = layers["boundary"].info.get("petavox_model", {})
    figures = {
        "membrane_share": float((data["boundary"] >= 128).mean()),
        "model_membrane_share": record.get("membrane_fraction"),
        "largest_share": float(counts.max() / counts.sum()),
        "segments": len(ids),
    }
    if gt is not None:
        figures.update(json.loads((root / "s.json").read_text()))
    return figures, data


def picture(data: dict[str, np.ndarray], title: str, path: Path) -> None:
    """Raw, boundary map and segmentation of the middle section, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = data["raw"].shape[2] // 2
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    seg = data["segmentation"][:, :, z].T
    shuffled = np.random.default_rng(0).permutation(int(seg.max()) + 1)[seg % (seg.max() + 1)]
    panels = [(data["raw"][..., z].T, "gray"), (data["boundary"][..., z].T, "magma")]
    for ax, (image, cmap), name in zip(
        axes, [*panels, (shuffled, "tab20")], ("raw", "boundary", "segments")
    ):
        ax.imshow(np.squeeze(image), cmap=cmap, interpolation="nearest")
        ax.set_title(name)
        ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def neuroproof(model: Path, scratch: Path, session) -> dict[str, Any]:
    raw = np.load(NEUROPROOF / "raw.npz")["raw"]
    path = scratch / "np.npy"
    np.save(path, raw)
    out = {}
    for normalise in ("auto", "off"):
        infer = {"model": str(model), "normalise": normalise}
        figures, data = pipeline(
            scratch / f"np-{normalise}", path, (10, 10, 10), infer, {}, None, session
        )
        out[normalise] = figures
        if normalise == "auto":
            picture(
                data,
                f"neuroproof_sample1, gala model ({model.name}), defaults",
                common.RESULTS_DIR / "newdata-neuroproof.png",
            )
    return out


def synthetic(
    gala_model: Path | None, scratch: Path, session, builtin: str = BUILTIN
) -> dict[str, Any]:
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    v = generate(SyntheticParams(shape=(256, 256, 64), seed=11))
    fine_raw, fine_gt = v.raw.transpose(2, 1, 0), v.labels.transpose(2, 1, 0)  # z,y,x
    blocks = fine_raw.reshape(32, 2, 128, 2, 128, 2).astype(np.float64).mean(axis=(1, 3, 5))
    coarse_raw, coarse_gt = np.round(blocks).astype(np.uint8), fine_gt[::2, ::2, ::2]
    files = {}
    for name, array in {
        "fine-raw": fine_raw,
        "fine-gt": fine_gt,
        "coarse-raw": coarse_raw,
        "coarse-gt": coarse_gt,
    }.items():
        files[name] = scratch / f"{name}.npy"
        np.save(
            files[name], np.ascontiguousarray(array.astype(np.uint32) if "gt" in name else array)
        )
    runs = {
        "built-in, 8 nm": ("fine", (8, 8, 8), {"model": builtin}, BUILTIN_SEGMENT),
        "built-in, 16 nm, resampled": ("coarse", (16, 16, 16), {"model": builtin}, BUILTIN_SEGMENT),
        "built-in, 16 nm, not resampled": (
            "coarse",
            (16, 16, 16),
            {"model": builtin, "resample": "off"},
            BUILTIN_SEGMENT,
        ),
    }
    if gala_model is not None:
        runs["gala model, 16 nm"] = ("coarse", (16, 16, 16), {"model": str(gala_model)}, {})
    out = {}
    for i, (label, (size, nm, infer, segment)) in enumerate(runs.items()):
        figures, _ = pipeline(
            scratch / f"syn-{i}",
            files[f"{size}-raw"],
            nm,
            infer,
            segment,
            files[f"{size}-gt"],
            session,
        )
        out[label] = figures
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(common.RESULTS_DIR / "gala-forward.onnx"))
    parser.add_argument("--builtin", default=BUILTIN, help="the synthetic-data model to try")
    parser.add_argument("--synthetic-only", action="store_true")
    args = parser.parse_args(argv)
    model = Path(args.model)
    scratch = common.scratch_dir("newdata")
    out: dict[str, Any] = {}
    session = None
    try:
        session, _ = common.start_ray(2)
        if args.synthetic_only:
            pass
        elif NEUROPROOF.exists() and model.exists():
            out["neuroproof"] = neuroproof(model, scratch, session)
        else:
            print(f"skipping neuroproof: needs {NEUROPROOF} and {model} (bench_gala.py)")
        gala = model if model.exists() else None
        out["synthetic"] = synthetic(gala, scratch, session, args.builtin)
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for normalise, f in out.get("neuroproof", {}).items():
        note = (
            f"membrane {f['membrane_share']:.1%} (model on its training data "
            f"{f['model_membrane_share']:.1%}); {f['segments']} segments"
        )
        rows.append(
            common.row(
                "newdata",
                f"neuroproof, gala model, normalise {normalise}: largest segment",
                f["largest_share"] * 100,
                "%",
                "≤ 60 %",
                f["largest_share"] <= 0.6,
                note,
            )
        )
    for label, f in out["synthetic"].items():
        note = (
            f"membrane {f['membrane_share']:.1%} (model {f['model_membrane_share']:.1%}); "
            f"largest segment {f['largest_share']:.1%}"
        )
        rows.append(
            common.row("newdata", f"synthetic seed 11, {label}: ARAND", f["arand"], "", note=note)
        )
    out["rows"] = rows
    common.write_results("newdata", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
