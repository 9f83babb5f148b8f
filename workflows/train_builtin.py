"""The built-in models, recreated: `python -m petavox.workflows.train_builtin OUT [--target
boundary|clefts|synapses] [--minutes M] [--checkpoint PT]` trains the model shipped as
`petavox:<target>-synthetic.onnx` the way it was made (synthetic volumes of fixed seeds); with a
checkpoint, a longer run can be spread over several sittings. The synapse model is two runs
averaged, made in three steps:

    python -m petavox.workflows.train_builtin plain.onnx --target synapses
    python -m petavox.workflows.train_builtin fill.onnx --target synapses --fill-no-data \
        --minutes 110
    python -m petavox.workflows.ensemble_model synapses-synthetic.onnx plain.onnx fill.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import numpy as np

from petavox.tasks.core.geometry import Box
from petavox.tasks.ml.synapse_targets import volume_flags
from petavox.workflows.interrupts import terminate_as_interrupt
from petavox.workflows.train import (
    check_output,
    fit_and_export,
    print_sha,
    require_training_packages,
)
from petavox.workflows.train_domain import training_domain
from petavox.workflows.tune import tune_and_record

BUILTIN_SEEDS = (101, 102, 103, 104)  # the demo uses seed 0, tests 1-9: none trains the model
BUILTIN_SHAPE = (128, 128, 64)  # x, y, z
BUILTIN_TUNING_SEED = 105  # segment's parameters are chosen on this one
BUILTIN_VOXEL_NM = (8.0, 8.0, 8.0)  # what the demo ingests the synthetic volumes at
# the cleft model: bold synapses as the demo draws them; the demo uses seed 0, tests and
# benchmarks seeds 1-20 and 100-119, its measurement seeds 301-302: none trains it
BUILTIN_CLEFT_SEEDS = (201, 202, 203, 204)
BUILTIN_SYNAPSE_SEEDS = tuple(range(201, 209))  # the synapse model: the same kind, 8 seeds
REALIGNED_ERROR = 1.0  # pixels: shifts and warps an aligned stack is left with (the demo's ~1)


def realigned_volume(volume, seed: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`volume`'s raw and `labels` (x, y, z) as the demo's aligned stack shows them: misaligned
    as the demo misaligns its sections, then aligned back up to about a pixel
    (`misalignment.realigned`): black margins, twice-resampled content, small residual shifts
    and warps. A model trained on drawn volumes alone took the margins' edges for clefts."""
    from petavox.tasks.synthetic.misalignment import random_misalignment, realigned
    from petavox.workflows.demo import MAX_SHIFT, WARP

    sections = volume.raw.shape[2]
    known = random_misalignment(sections, MAX_SHIFT, WARP, seed=seed)
    error = random_misalignment(sections, REALIGNED_ERROR, REALIGNED_ERROR, seed=seed + 1000)
    return realigned(volume.raw, known, error), realigned(labels, known, error, True)


def train_builtin(out: str, minutes: float = 10.0, checkpoint: str | None = None) -> int:
    """Recreate the model shipped as `petavox:boundary-synthetic.onnx` (how it was made): trained
    on seeds 101-104, segment's parameters tuned on seed 105."""
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    volumes = [
        generate(SyntheticParams(shape=BUILTIN_SHAPE, seed=s))
        for s in (*BUILTIN_SEEDS, BUILTIN_TUNING_SEED)
    ]
    raws = [np.ascontiguousarray(v.raw.transpose(2, 1, 0)) for v in volumes]
    gts = [np.ascontiguousarray(v.labels.transpose(2, 1, 0)) for v in volumes]
    path = check_output(out)
    require_training_packages()
    fit = slice(0, len(BUILTIN_SEEDS))
    fit_and_export(
        raws[fit],
        gts[fit],
        path,
        minutes=minutes,
        seed=0,
        voxel_nm=BUILTIN_VOXEL_NM,
        checkpoint=checkpoint,
    )
    where = f"synthetic volume seed {BUILTIN_TUNING_SEED}"
    tune_and_record(path, [(raws[-1], gts[-1])], BUILTIN_VOXEL_NM, where)
    return print_sha(path)


def bold_volumes(seed: int, labels_of: Callable) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(raw, labels) as drawn, (raw, labels) as an aligned stack makes it (`realigned_volume`)],
    z, y, x, of the bold-synapse volume of `seed`; `labels_of(volume)` gives its labels."""
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    params = SyntheticParams(shape=BUILTIN_SHAPE, seed=seed, bold_synapses=True, cleft_labels=True)
    volume = generate(params)
    labels = labels_of(volume)
    pairs = ((volume.raw, labels), realigned_volume(volume, seed, labels))
    return [tuple(np.ascontiguousarray(a.transpose(2, 1, 0)) for a in pair) for pair in pairs]


def margins_filled(raw: np.ndarray, value: int) -> np.ndarray:
    """`raw` (z, y, x, uint8) with its no-data voxels (black margins, however thin at the side
    faces) set to `value`: infer's own fill (`no_data_fill.filled`) on the whole volume."""
    from petavox.tasks.infer.no_data_fill import filled

    xyz = raw.transpose(2, 1, 0)
    whole = Box((0, 0, 0), xyz.shape)
    return np.asarray(filled(xyz, xyz, value, whole, whole), np.uint8).transpose(2, 1, 0)


def fit_drawn_and_realigned(
    out: str,
    seeds: Sequence[int],
    labels_of: Callable,
    target: str,
    minutes: float,
    fill_no_data: bool = False,
    **training,
) -> int:
    """Train a `target` model on `bold_volumes` of `seeds`, each as drawn and realigned; export
    it to `out` with the intensity domain of the volumes as drawn (the realigned copies add
    black margins, which would make infer rescale the contrast of every input with margins of
    its own); print its SHA-256. With `fill_no_data` the realigned copies' margins are that
    domain's mean, as infer shows them to a cleft or synapse model (`margins_filled`; the
    shipped models were trained without). `training`: more of `train_model`'s settings."""
    pairs = [pair for seed in seeds for pair in bold_volumes(seed, labels_of)]
    if fill_no_data:
        mean = training_domain([raw for raw, _ in pairs[::2]], None, None).intensity[0]
        pairs = [(margins_filled(raw, round(mean * 255)), labels) for raw, labels in pairs]
    path = check_output(out)
    require_training_packages()
    fit_and_export(
        [raw for raw, _ in pairs],
        [labels for _, labels in pairs],
        path,
        target=target,
        minutes=minutes,
        seed=0,
        voxel_nm=BUILTIN_VOXEL_NM,
        domain_raws=[raw for raw, _ in pairs[::2]],  # bold_volumes: drawn first
        **training,
    )
    return print_sha(path)


def train_builtin_clefts(out: str, minutes: float = 20.0, checkpoint: str | None = None) -> int:
    """Recreate the model shipped as `petavox:clefts-synthetic.onnx`: a cleft probability
    model trained on the cleft labels of bold-synapse volumes of seeds 201-204, each as drawn
    and as an aligned stack makes it (`realigned_volume`); no tuning: segment does not read
    clefts."""
    return fit_drawn_and_realigned(
        out,
        BUILTIN_CLEFT_SEEDS,
        lambda volume: volume.clefts,
        "clefts",
        minutes,
        checkpoint=checkpoint,
    )


def train_builtin_synapses(
    out: str, minutes: float = 100.0, checkpoint: str | None = None, fill_no_data: bool = False
) -> int:
    """One member of the model shipped as `petavox:synapses-synthetic.onnx`: cleft,
    presynaptic-side and postsynaptic-side probabilities (`volume_flags`) from a U-Net twice as
    wide as the others (base width 16: at 8, 30-35 minutes learned where the sides are, not
    which is which), trained on the bold-synapse volumes of `BUILTIN_SYNAPSE_SEEDS` as drawn
    and realigned; no tuning: segment does not read them. The shipped model averages two such
    runs (`ensemble_model`): one of 100 minutes as drawn and realigned, one of 110 minutes with
    `fill_no_data` (the realigned copies' margins filled as infer shows them,
    `fit_drawn_and_realigned`)."""
    return fit_drawn_and_realigned(
        out,
        BUILTIN_SYNAPSE_SEEDS,
        volume_flags,
        "synapses",
        minutes,
        fill_no_data,
        base_channels=16,
        checkpoint=checkpoint,
    )


BUILT_IN = {
    "boundary": train_builtin,
    "clefts": train_builtin_clefts,
    "synapses": train_builtin_synapses,
}

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="retrain a built-in synthetic-data model")
    parser.add_argument("out", help="model file to write (.onnx)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="default 10 (clefts: 20, synapses: 100)"
    )
    parser.add_argument("--target", choices=tuple(BUILT_IN), default="boundary")
    parser.add_argument(
        "--checkpoint",
        help="save the run's state here (.pt) and, if it exists, train on from it until "
        "--minutes in all (the ONNX cannot be trained further)",
    )
    parser.add_argument(
        "--fill-no-data",
        action="store_true",
        help="synapses: train on the realigned copies with their margins filled as infer shows "
        "them (the shipped model's second member; see the module's docstring)",
    )
    args = parser.parse_args()
    terminate_as_interrupt()  # SIGTERM saves the checkpoint as Ctrl-C does
    given = {} if args.minutes is None else {"minutes": args.minutes}  # else the recipe's own
    if args.fill_no_data:
        if args.target != "synapses":
            parser.error("--fill-no-data is a synapses recipe")
        given["fill_no_data"] = True
    sys.exit(BUILT_IN[args.target](args.out, checkpoint=args.checkpoint, **given))
