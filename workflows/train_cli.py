"""The `petavox train` and `petavox tune` command lines (PyTorch is imported only when training
runs)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from petavox.workflows.cli_options import runtime_from_args
from petavox.workflows.config import ConfigError, StorageConfig
from petavox.workflows.train import SYNAPSE_TARGETS, TARGETS, run_train
from petavox.workflows.tune import HOLDOUT, run_tune


def positive_xyz(text: str, kind: type = float) -> tuple:
    """Three positive numbers X,Y,Z of `kind`."""
    try:
        parts = [kind(p) for p in text.split(",")]
    except ValueError:
        parts = []
    what = "integers" if kind is int else "numbers"
    if len(parts) != 3 or min(parts) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not three positive {what} X,Y,Z")
    return tuple(parts)


def zyx_of_xyz(text: str) -> tuple[int, int, int]:
    """X,Y,Z on the command line (as every option takes it) as the Z,Y,X the trainer uses."""
    x, y, z = positive_xyz(text, int)
    return z, y, x


def train_command(args: argparse.Namespace) -> int:
    if (args.val_raw is None) != (args.val_gt is None):
        raise ConfigError("give both --val-raw and --val-gt, or neither")
    validation = (args.val_raw, args.val_gt) if args.val_raw else None
    storage = StorageConfig(**runtime_from_args(args)["storage"])
    return run_train(
        args.raw,
        args.gt,
        args.out,
        minutes=args.minutes,
        target=args.target,
        seed=args.seed,
        patch=args.patch,
        batch=args.batch,
        base_channels=args.base_channels,
        depth=args.depth,
        pool=args.pool,
        validation=validation,
        voxel_nm=args.voxel_nm,
        holdout=args.holdout,
        context=storage.context(),
        progress=not args.quiet,
        checkpoint=args.checkpoint,
    )


def add_train_parser(sub: Any) -> None:
    """`petavox train` and its options (PyTorch is imported only when it runs)."""
    p = sub.add_parser("train", help="train a 3D U-Net on your ground truth; writes ONNX")
    p.add_argument(
        "--raw",
        required=True,
        action="append",
        help="image: .npy (z,y,x) or layer URL; repeat for several volumes",
    )
    p.add_argument(
        "--gt",
        required=True,
        action="append",
        help="labels, same shape, one per --raw (0 = boundary/unknown; clefts: nonzero = "
        "cleft; synapses: flags 1 cleft, 2 presynaptic side, 4 postsynaptic side)",
    )
    p.add_argument("--out", required=True, help="model file to write (.onnx)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time (default 15)")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="boundary",
        help="what the model predicts (default boundary); clefts: the probability of a "
        "synaptic cleft; synapses: the cleft and its presynaptic and postsynaptic sides",
    )
    p.add_argument(
        "--patch",
        type=zyx_of_xyz,
        default=(32, 64, 64),
        help="training patch X,Y,Z (default 64,64,32)",
    )
    p.add_argument(
        "--pool",
        type=zyx_of_xyz,
        default=(2, 2, 2),
        help="pooling X,Y,Z per level; 2,2,1 for anisotropic stacks (default 2,2,2)",
    )
    p.add_argument(
        "--voxel-nm",
        type=positive_xyz,
        help="voxel size X,Y,Z in nm of the training images, recorded in the model so infer "
        "can resample other data to it (default: the raw layers' resolution; .npy inputs need it)",
    )
    p.add_argument(
        "--holdout",
        type=float,
        default=HOLDOUT,
        help="share of each volume (its end along the longest axis) kept out of training to "
        f"choose segment's parameters on (default {HOLDOUT}; 0: none; ignored with --val-raw)",
    )
    add_run_options(p)
    p.set_defaults(func=train_command, workers=None, address=None, max_in_flight=None)


def add_run_options(p: argparse.ArgumentParser) -> None:
    """`petavox train`'s options past its inputs, target and geometry."""
    p.add_argument("--batch", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--base-channels", type=int, default=8, help="width of the U-Net (default 8)")
    p.add_argument("--depth", type=int, default=3, help="U-Net levels (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--checkpoint",
        help="save the run's state here every 5 minutes and at the end (local .pt file); if it "
        "exists, train on from it, with the same settings, until --minutes in all",
    )
    p.add_argument("--val-raw", help="held-out image for a validation loss")
    p.add_argument("--val-gt", help="held-out labels for a validation loss")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint for s3:// inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def refuse_cleft_model(model: str) -> None:
    """`tune` chooses segment's parameters: a cleft model (whose map segment refuses) is an
    InputError; a missing or unreadable file is left to `run_tune`'s own checks."""
    from petavox.tasks.core.errors import InputError
    from petavox.tasks.infer.onnx_model import ModelError, inspect, open_session

    path = Path(model.removeprefix("file://"))
    if not path.is_file():
        return
    try:
        target = inspect(open_session(path.read_bytes(), model), model).target
    except ModelError:
        return
    if target in SYNAPSE_TARGETS:
        raise InputError(
            f"model {model} predicts {target}; tune chooses segment's parameters for a boundary "
            "or affinity model"
        )


def tune_command(args: argparse.Namespace) -> int:
    refuse_cleft_model(args.model)
    storage = StorageConfig(**runtime_from_args(args)["storage"])
    return run_tune(
        args.model,
        args.raw,
        args.gt,
        out=args.out,
        voxel_nm=args.voxel_nm,
        context=storage.context(),
    )


def add_tune_parser(sub: Any) -> None:
    """`petavox tune`: segment parameters for a model, chosen on ground truth it was not
    trained on, recorded in the model."""
    p = sub.add_parser(
        "tune",
        help="choose segment's parameters for a model on held-out ground truth; records them",
    )
    p.add_argument("--model", required=True, help="the model (.onnx, local)")
    p.add_argument(
        "--raw", required=True, action="append", help="image: .npy (z,y,x) or layer URL; repeat"
    )
    p.add_argument("--gt", required=True, action="append", help="labels, one per --raw")
    p.add_argument("--out", help="write the tuned model here (default: update --model in place)")
    p.add_argument(
        "--voxel-nm", type=positive_xyz, help="voxel size X,Y,Z in nm (default: the layers')"
    )
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint for s3:// inputs")
    p.set_defaults(func=tune_command, workers=None, address=None, max_in_flight=None)
