"""Cell-class accuracy of the built-in classifier on held-out synthetic volumes (issue 25's bar).

Each seed is a synthetic volume with cell classes (`train_cells.cell_volume`, 192×192×96 at
8 nm; the classifier was trained on seeds 501-510 and 531-540, these are 511-516 unless
`--seeds`). Two
paths, both through the stages on local Ray:

- `truth`: the ground-truth segmentation, skeletonized, measured (`morphology` with the image),
  classified (`classify`, the built-in model); a segment's true class is the generator's;
- `own`: the pipeline's own segmentation (`infer` with the built-in boundary U-Net, `segment`
  with the demo's parameters: `train_cells.own_stages`), then the same; a segment's true class
  is `train_cells.own_truth`'s: neuron if it holds half or more of a neuron's soma core, else
  the class of the ground truth covering most of its voxels (membrane left out; neurite for a
  neuron's piece).

Scored over the segments of `MIN_VOXELS` voxels or more: per class, the share of its segments
given that class (recall, "accuracy per class"), and the share of segments given it that have
it (precision); pooled over the seeds and per seed.

    .venv/bin/python benchmarks/eval_cell_classes.py [--seeds 511,512] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from petavox.tasks.morphology.table_reads import read_dataset
from petavox.workflows.train_cells import (
    CLASSES,
    MIN_VOXELS,
    cell_volume,
    local_ray,
    measure_volume,
    own_stages,
    own_truth,
)

HELD_OUT = "511,512,513,514,515,516"


def scored(truth: list[str], predicted: list[str]) -> dict:
    t, p = np.array(truth), np.array(predicted)
    out = {"segments": len(t), "accuracy": float((t == p).mean()) if len(t) else float("nan")}
    for c in CLASSES:
        out[c] = {
            "segments": int((t == c).sum()),
            "recall": float((p[t == c] == c).mean()) if (t == c).any() else float("nan"),
            "precision": float((t[p == c] == c).mean()) if (p == c).any() else float("nan"),
        }
    return out


def evaluate(seed: int, folder: Path, session) -> dict[str, tuple[list[str], list[str]]]:
    """(true classes, predicted classes) of the segments of each path."""
    volume = cell_volume(seed)
    classify = [{"stage": "classify", "input": name} for name in ("seg", "own")]
    measure_volume(volume, folder, session, [*own_stages(), *classify])
    out = {}
    for path, layer, truth_of in (
        ("truth", "seg", volume.classes),
        ("own", "own", own_truth(folder, volume)),
    ):
        table = read_dataset(folder / layer / "morphology")
        classes = read_dataset(folder / layer / "classes")
        big = table["voxels"] >= MIN_VOXELS
        ids = [int(i) for i in table["segment_id"][big] if int(i) in truth_of]
        predicted = dict(zip(classes["segment_id"].tolist(), classes["class"].tolist()))
        out[path] = ([truth_of[i] for i in ids], [predicted[i] for i in ids])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=HELD_OUT)
    parser.add_argument("--workdir", default=None, help="keep the outputs here (resumable)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="petavox-cells-"))
    pooled: dict[str, tuple[list[str], list[str]]] = {"truth": ([], []), "own": ([], [])}
    rows = {}
    try:
        with local_ray() as session:
            for seed in seeds:
                result = evaluate(seed, work / f"seed{seed}", session)
                for path, (t, p) in result.items():
                    pooled[path][0].extend(t)
                    pooled[path][1].extend(p)
                    rows[f"{path} seed {seed}"] = scored(t, p)
                    print_row(f"{path} seed {seed}", rows[f"{path} seed {seed}"])
        for path, (t, p) in pooled.items():
            rows[f"{path} pooled"] = scored(t, p)
            print_row(f"{path} pooled", rows[f"{path} pooled"])
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(rows, indent=1))
    return 0


def print_row(name: str, row: dict) -> None:
    parts = [
        f"{c} {row[c]['recall']:.2f}/{row[c]['precision']:.2f} ({row[c]['segments']})"
        for c in CLASSES
    ]
    print(f"{name:16s} accuracy {row['accuracy']:.3f}; recall/precision: " + ", ".join(parts))


if __name__ == "__main__":
    raise SystemExit(main())
