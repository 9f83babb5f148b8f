"""Does `petavox analyze` find an oriented subpopulation of neurons when the generator plants one,
and report none when it does not (issue 25's bar: direction within 10°, p < 0.01)?

Each volume is a synthetic volume with cell classes (`train_cells.cell_volume`, 256×256×160 at
8 nm, so that it holds about fifteen neurons with a soma), half of whose somata neurons run
along a tilted direction (`--planted` seeds) or none (`--plain` seeds). The ground-truth
segmentation goes through the stages (ingest, skeletonize, morphology with the image, classify
with the built-in model), then `analyze`. Printed per volume: the neurons it tested (the
segments classified neuron), how many the generator planted (of 2000 voxels or more), the
subset and how many of it were planted, the direction's angle to the planted one, the subset's
and Bingham's p-values, and whether a preferred direction was reported.

    .venv/bin/python benchmarks/eval_orientation.py [--planted 611,612,613] [--plain 621,622,623]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from petavox.tasks.analysis.orientation import angle_degrees
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.analyze import analyze
from petavox.workflows.train_cells import cell_volume, local_ray, measure_volume

SHAPE = (256, 256, 160)
DIRECTION = (0.8, 0.45, 0.4)  # physical x, y, z; normalised by the generator


def evaluate(seed: int, fraction: float, folder: Path, session) -> dict:
    volume = cell_volume(seed, SHAPE, oriented_fraction=fraction, orientation=DIRECTION)
    measure_volume(volume, folder, session, [{"stage": "classify", "input": "seg"}])
    result = analyze(f"file://{folder}", segmentation="seg", context=StorageContext())
    o = result["orientation"]
    planted = volume.oriented or frozenset()
    found = set(o["aligned_ids"]) if o["preferred"] else set()
    return {
        "seed": seed,
        "planted": len([i for i in planted if int((volume.labels == i).sum()) >= 2000]),
        "large": o["count"],
        "aligned": o["aligned"],
        "aligned_planted": len(found & set(planted)),
        "angle": angle_degrees(o["direction"], DIRECTION) if o["count"] >= 3 else float("nan"),
        "p_subset": o["aligned_p_value"],
        "p_bingham": o["p_value"],
        "preferred": o["preferred"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--planted", default="611,612,613")
    parser.add_argument("--plain", default="621,622,623")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="petavox-orientation-"))
    plan = [
        (s, f) for seeds, f in ((args.planted, 0.5), (args.plain, 0.0)) for s in seeds.split(",")
    ]
    try:
        with local_ray() as session:
            for seed, fraction in ((int(s), f) for s, f in plan if s):
                r = evaluate(seed, fraction, work / f"seed{seed}", session)
                print(
                    f"seed {seed} ({'planted' if fraction else 'plain'}): {r['large']} "
                    f"neurons, {r['planted']} planted; subset {r['aligned']} "
                    f"({r['aligned_planted']} of them planted), {r['angle']:.1f}° from the "
                    f"planted direction, p {r['p_subset']:.2g} (Bingham {r['p_bingham']:.2g}): "
                    f"{'preferred direction' if r['preferred'] else 'none'}",
                    flush=True,
                )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
