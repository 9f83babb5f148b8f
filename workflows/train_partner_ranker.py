"""The partner ranker, fit: `python -m petavox.workflows.train_partner_ranker OUT.json [--crop
MANIFEST.json ...] [--demo URL SEED ...] [--check URL SEED ...]`.

Each `--crop` is a lab's annotated crop (`ranker_crops`: the aligned image, the pipeline's
segmentation, the synapse model's output, annotated clefts and objects, and each cleft's
partners). Each `--demo` is the output of `petavox demo --seed SEED` (any `--size`): its
aligned image, the U-Net's segmentation, the synapse model's three channels (`clefts`) and the
ground truth carried through the alignment; the true synapses are the generator's for that
seed and size. The ranker is fit on the clefts the detector finds in them (`ranker_examples`)
and written with what it was fit on; `--check` demos are scored with it and with the shipped
one. The shipped `partner-ranker-synthetic.json` was made from demo seeds 401-413 (no test,
benchmark or model uses them); `synapses --partner-ranker OUT.json` uses another.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import join_url
from petavox.tasks.synapse.cleft_channel import CleftParams
from petavox.tasks.synapse.partner_ranker import (
    BUILTIN_PATH,
    PartnerRanker,
    fit_weights,
    load_ranker,
    save_ranker,
)
from petavox.tasks.synapse.ranker_examples import RankerExample, accuracy, ranker_examples
from petavox.workflows.demo import CLEFT_THRESHOLD, RESOLUTION, demo_volume
from petavox.workflows.ranker_crops import crop_examples


def demo_examples(url: str, seed: int, params: CleftParams) -> tuple[list[RankerExample], int]:
    """Examples from one demo output folder made with `seed`, and the demo's size."""

    def volume(name: str, channels: bool = False) -> np.ndarray:
        layer = Layer.open(join_url(url, name))
        data = layer.read(layer.bounds(0))
        return data if channels or data.ndim == 3 else data[..., 0]

    raw = volume("aligned")
    truth = demo_volume(raw.shape[0], seed).synapse_table
    examples = ranker_examples(
        volume("clefts", channels=True),
        raw,
        volume("segmentation"),
        volume("ground_truth_clefts"),
        volume("ground_truth"),
        truth["pre"],
        truth["post"],
        RESOLUTION,
        params,
    )
    return examples, raw.shape[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petavox.workflows.train_partner_ranker")
    parser.add_argument("out", type=Path, help="where to write the ranker (.json)")
    parser.add_argument("--crop", type=Path, action="append", default=[], metavar="MANIFEST")
    parser.add_argument("--demo", nargs=2, action="append", default=[], metavar=("URL", "SEED"))
    parser.add_argument("--check", nargs=2, action="append", default=[], metavar=("URL", "SEED"))
    parser.add_argument(
        "--threshold",
        type=float,
        default=CLEFT_THRESHOLD,
        help="cleft probability threshold, as synapses will run (default: the demo's)",
    )
    args = parser.parse_args(argv)
    if not args.crop and not args.demo:
        parser.error("give at least one --crop or --demo to fit on")
    # the ranker is not used to make examples; a placeholder spares loading the shipped one
    params = CleftParams(threshold=args.threshold, partner_ranker=PartnerRanker((), "none"))
    try:
        return fit(args, params)
    except InputError as err:
        print(f"train_partner_ranker: error: {err}", file=sys.stderr)
        return 2


def fit(args: argparse.Namespace, params: CleftParams) -> int:
    """Fit on the crops and demos, write the ranker, score the checks."""
    examples, volumes = [], []
    for manifest in args.crop:
        found = crop_examples(manifest, params)
        print(f"{manifest}: {len(found)} clefts with their partners among the candidates")
        examples += found
        volumes.append(f"crop {manifest.name}")
    for url, seed in args.demo:
        found, size = demo_examples(url, int(seed), params)
        print(f"{url}: {len(found)} clefts with their partners among the candidates")
        examples += found
        volumes.append(f"petavox demo --size {size} --seed {seed}")
    weights = fit_weights([(e.rows, e.right) for e in examples])
    trained_on = {"volumes": volumes, "clefts": len(examples)}
    save_ranker(args.out, weights, trained_on)
    fitted = load_ranker(str(args.out))
    print(f"wrote {args.out}: top pair right for {accuracy(examples, fitted):.3f} of them")
    for url, seed in args.check:
        found, _ = demo_examples(url, int(seed), params)
        shipped = (
            f"{accuracy(found, load_ranker()):.3f}" if BUILTIN_PATH.exists() else "none shipped"
        )
        print(
            f"check {url}: {len(found)} clefts, top pair right for {accuracy(found, fitted):.3f} "
            f"(shipped ranker: {shipped})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
