"""Quality of the classical synapse detector per seed: precision, recall and direction.

Each seed's bold synthetic volume (`SyntheticParams(bold_synapses=True)`, 128×128×64 voxels at
8 nm unless `--shape`) goes through the detector kernel on the whole volume (the stage gives the
same table under any chunking, see the `synapses` integration tests). Detections are matched
one-to-one to the generator's cleft centres within 6 voxels (closest overall); precision =
matched / detected, recall = matched / true, direction = matched with pre and post both right /
matched ("swapped": pre and post exchanged).

    .venv/bin/python benchmarks/eval_synapses.py [--seeds 1-9,20] [--shape 128,128,64]

Seeds 100-111 chose the detector's parameters and its direction rule; 1-9 and 10-15 are
held out (see the `synapses` integration tests).
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

SHAPE = (128, 128, 64)
RESOLUTION = (8, 8, 8)
RADIUS = 6.0  # voxels: a detection within this of a true centre can match it


def match(
    found: dict[str, np.ndarray], truth: np.ndarray, resolution=RESOLUTION
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of detections (nm) to true centres (voxels) within RADIUS voxels,
    closest overall: the matched rows of each."""
    from petavox.tasks.evaluate.synapse_scores import match_centres

    det = np.column_stack([found[a] for a in "xyz"]) / np.asarray(resolution, np.float64)
    return match_centres(det, np.column_stack([truth[a] for a in "xyz"]), RADIUS)


def score(found: dict[str, np.ndarray], truth: np.ndarray, resolution=RESOLUTION) -> dict:
    """Counts of one volume: detected, true, matched, right (pre and post), swapped."""
    rows, cols = match(found, truth, resolution)
    pre, post = truth["pre"][cols], truth["post"][cols]
    got_pre, got_post = found["pre_id"][rows], found["post_id"][rows]
    return {
        "detected": len(found["x"]),
        "true": len(truth),
        "matched": len(rows),
        "right": int(np.sum((got_pre == pre) & (got_post == post))),
        "swapped": int(np.sum((got_pre == post) & (got_post == pre))),
    }


def rates(counts: dict) -> dict[str, float]:
    """Precision, recall and direction of (summed) counts."""
    m = counts["matched"]
    return {
        "precision": m / max(counts["detected"], 1),
        "recall": m / max(counts["true"], 1),
        "direction": counts["right"] / max(m, 1),
    }


def evaluate_seed(seed: int, shape=SHAPE, params=None) -> dict:
    """The counts of one seed's volume through the kernel."""
    from petavox.tasks.core.geometry import Box
    from petavox.tasks.synapse.detection import DetectorParams, detect
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    volume = generate(SyntheticParams(shape=tuple(shape), seed=seed, bold_synapses=True))
    box = Box((0, 0, 0), tuple(shape))
    found = detect(volume.raw, volume.labels, box, box, box, RESOLUTION, params or DetectorParams())
    return score(found, volume.synapse_table)


def parse_seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def total(counts: list[dict]) -> dict:
    return {k: sum(c[k] for c in counts) for k in counts[0]}


def line(name: str, counts: dict) -> str:
    r = rates(counts)
    return (
        f"{name:>8}  true {counts['true']:3d}  found {counts['detected']:3d}  "
        f"P {r['precision']:.3f}  R {r['recall']:.3f}  direction {r['direction']:.3f}  "
        f"({counts['right']}/{counts['matched']}, swapped {counts['swapped']})"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1-9", help="e.g. 1-9 or 4,5,10-15")
    parser.add_argument("--shape", default=",".join(map(str, SHAPE)), help="x,y,z voxels")
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    per_seed = {}
    for seed in parse_seeds(args.seeds):
        per_seed[seed] = evaluate_seed(seed, shape)
        print(line(f"seed {seed}", per_seed[seed]), flush=True)
    all_counts = total(list(per_seed.values()))
    print(line("all", all_counts))
    return {"shape": list(shape), "seeds": per_seed, "total": all_counts, **rates(all_counts)}


if __name__ == "__main__":
    main()
