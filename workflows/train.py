"""`petavox train`: fit a small 3D U-Net to (raw, ground truth) volumes and export it to ONNX.

Runs in this process (no Ray): the volumes are read whole, every input is checked before
training starts, and the model is written as one self-contained .onnx file whose input is
raw uint8 / 255 (see `petavox.tasks.ml.training`). Needs the optional training dependencies.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.cli_options import runtime_from_args
from petavox.workflows.config import ConfigError, StorageConfig

LAYER_SCHEMES = ("file://", "s3://", "gs://")
INSTALL_HINT = "pip install 'petavox[train]' (or: pip install torch==2.13.0 onnx onnxruntime)"
TARGETS = ("boundary", "affinities")


# ---- reading volumes --------------------------------------------------------------------------
def load_volume(source: str, context: StorageContext = StorageContext()) -> np.ndarray:
    """A whole (z,y,x) volume from a .npy file (stored z,y,x) or a precomputed layer URL (mip 0).

    A local folder holding a precomputed `info` file counts as a layer too.
    """
    if source.startswith(LAYER_SCHEMES) or (Path(source) / "info").is_file():
        return _load_layer(source, context)
    path = Path(source)
    if path.suffix != ".npy":
        raise InputError(
            f"{source}: give a .npy file (z,y,x) or a precomputed layer URL (file://, s3://, gs://)"
        )
    if not path.is_file():
        raise InputError(f"{source}: no such .npy file; check the path")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise InputError(f"{source}: cannot read as .npy: {exc}") from exc
    if data.ndim != 3:
        raise InputError(f"{source}: array of shape {data.shape} is not 3D (z,y,x)")
    return data


def _load_layer(url: str, context: StorageContext) -> np.ndarray:
    """Mip 0 of a precomputed layer, transposed from x,y,z to z,y,x."""
    from petavox.tasks.core.layers import Layer

    layer = Layer.open(url, context)
    data = layer.read(layer.bounds(0))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(
            f"layer {layer.url} has {layer.num_channels} channels; training needs one channel"
        )
    return np.ascontiguousarray(data.transpose(2, 1, 0))


# ---- checks -----------------------------------------------------------------------------------
def require_training_packages() -> None:
    """Raise InputError naming the install command if torch, onnx or onnxruntime is missing."""
    missing = [m for m in ("torch", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(
            f"petavox train needs {', '.join(missing)}, which is not installed; {INSTALL_HINT}"
        )


def as_raw_uint8(raw: np.ndarray, name: str) -> np.ndarray:
    """uint8 raw as is, float in [0, 1] scaled to 0..255; anything else is an InputError."""
    if raw.dtype == np.uint8:
        return raw
    if raw.dtype.kind == "f":
        lo, hi = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
        if np.isfinite(lo) and np.isfinite(hi) and lo >= 0 and hi <= 1:
            return np.round(raw * 255).astype(np.uint8)
        raise InputError(
            f"raw {name} is {raw.dtype} with values {lo:g}..{hi:g}; float raw must be in [0, 1] "
            "(or give uint8): rescale it first"
        )
    raise InputError(f"raw {name} is {raw.dtype}; give uint8 or float in [0, 1] (rescale it first)")


def check_pair(
    raw: np.ndarray, gt: np.ndarray, names: tuple[str, str], patch: Sequence[int], target: str
) -> None:
    """Raise InputError unless raw and gt have the same shape, gt is integer with labelled voxels
    (and label-0 boundary voxels for a boundary target), and the volume holds a patch."""
    if raw.shape != gt.shape:
        raise InputError(
            f"raw {names[0]} is {raw.shape} (z,y,x) but ground truth {names[1]} is {gt.shape}; "
            "they must cover the same voxels"
        )
    if gt.dtype.kind not in "ui":
        raise InputError(f"ground truth {names[1]} is {gt.dtype}; it must hold integer labels")
    if any(p > s for p, s in zip(patch, raw.shape)):
        raise InputError(
            f"volume {names[0]} is {raw.shape} (z,y,x) voxels, smaller than the patch "
            f"{tuple(patch)}; use a smaller --patch or a bigger volume"
        )
    if not gt.any():
        raise InputError(f"ground truth {names[1]} is all 0 (boundary); it needs labelled voxels")
    if target == "boundary" and gt.all():
        raise InputError(
            f"ground truth {names[1]} has no label-0 (boundary) voxels, so a boundary target "
            "would be empty; mark membranes with 0 or train --target affinities"
        )


def check_patch_shape(patch: Sequence[int], pool: Sequence[int], depth: int) -> None:
    """Raise InputError unless the patch is a multiple of pool ** (depth - 1) on every axis."""
    div = [p ** (depth - 1) for p in pool]
    if len(patch) != 3 or any(p < 1 or p % d for p, d in zip(patch, div)):
        raise InputError(
            f"patch {tuple(patch)} (z,y,x) must be three positive multiples of {tuple(div)} "
            f"(pool {tuple(pool)} over {depth - 1} poolings)"
        )


def check_output(out: str) -> Path:
    """The local file to write; URLs and existing folders are InputErrors."""
    if "://" in out and not out.startswith("file://"):
        raise InputError(f"output {out}: write the model to a local .onnx path, then copy it")
    path = Path(out.removeprefix("file://"))
    if path.is_dir():
        raise InputError(f"output {out} is a folder; give a file name such as model.onnx")
    return path


def load_pairs(
    raw: str | Sequence[str],
    gt: str | Sequence[str],
    patch: Sequence[int],
    target: str,
    context: StorageContext,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Read and check every (raw, gt) pair; raw comes back as uint8."""
    raws = [raw] if isinstance(raw, str) else list(raw)
    gts = [gt] if isinstance(gt, str) else list(gt)
    if len(raws) != len(gts) or not raws:
        raise InputError(f"{len(raws)} raw volumes but {len(gts)} ground truths; pair them up")
    out_raw, out_gt = [], []
    for r_src, g_src in zip(raws, gts):
        r, g = load_volume(r_src, context), load_volume(g_src, context)
        check_pair(r, g, (r_src, g_src), patch, target)
        out_raw.append(as_raw_uint8(r, r_src))
        out_gt.append(g)
    return out_raw, out_gt


# ---- training ------------------------------------------------------------------------------
def run_train(
    raw: str | Sequence[str],
    gt: str | Sequence[str],
    out: str,
    *,
    minutes: float = 15.0,
    target: str = "boundary",
    seed: int = 0,
    patch: Sequence[int] = (32, 64, 64),
    batch: int = 2,
    base_channels: int = 8,
    depth: int = 3,
    pool: Sequence[int] = (2, 2, 2),
    validation: tuple[str, str] | None = None,
    context: StorageContext = StorageContext(),
    progress: bool = True,
) -> int:
    """Check the inputs, train for `minutes`, export to `out` (.onnx); print the model path, its
    sha256 and the final loss. `raw`/`gt` are sources for `load_volume` (or parallel lists);
    `patch` and `pool` are z,y,x. Returns the exit code."""
    if target not in TARGETS:
        raise InputError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    if minutes <= 0 or batch < 1:
        raise InputError(f"minutes ({minutes}) and batch ({batch}) must be positive")
    patch, pool = tuple(int(p) for p in patch), tuple(int(p) for p in pool)
    check_patch_shape(patch, pool, depth)
    path = check_output(out)
    require_training_packages()
    raws, gts = load_pairs(raw, gt, patch, target, context)
    val = None
    if validation is not None:
        (v_raw,), (v_gt,) = load_pairs(validation[0], validation[1], patch, target, context)
        val = (v_raw, v_gt)

    return fit_and_export(
        raws,
        gts,
        path,
        target=target,
        minutes=minutes,
        patch=patch,
        batch=batch,
        seed=seed,
        base_channels=base_channels,
        depth=depth,
        pool=pool,
        validation=val,
        progress=progress,
    )


def fit_and_export(
    raws: list[np.ndarray],
    gts: list[np.ndarray],
    path: Path,
    *,
    patch: tuple[int, ...] = (32, 64, 64),
    depth: int = 3,
    pool: tuple[int, ...] = (2, 2, 2),
    target: str = "boundary",
    **training,
) -> int:
    """Train on checked (z,y,x) volumes, export to `path`, print path, sha256 and losses."""
    from petavox.tasks.infer.onnx_model import sha256
    from petavox.tasks.ml.training import export_onnx, train_model
    from petavox.tasks.ml.unet import count_parameters, divisor

    model = train_model(raws, gts, target=target, patch=patch, depth=depth, pool=pool, **training)
    export_onnx(model, path, target=target, patch=patch, divisor=divisor(pool, depth))
    log = model.train_log
    print(f"model: {path}")
    print(f"sha256: {sha256(path.read_bytes())}")
    print(
        f"final loss: {log.final_loss:.4f} ({log.steps} steps in {log.seconds:.0f} s, "
        f"{count_parameters(model)} parameters)"
    )
    if log.validation:
        print(f"validation loss: {log.validation[-1][1]:.4f}")
    return 0


# ---- the built-in model --------------------------------------------------------------------
BUILTIN_SEEDS = (101, 102, 103, 104)  # the demo uses seed 0, tests 1-9: none trains the model
BUILTIN_SHAPE = (128, 128, 64)  # x, y, z


def train_builtin(out: str, minutes: float = 10.0) -> int:
    """Recreate the model shipped as `petavox:boundary-synthetic.onnx` (how it was made)."""
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    volumes = [generate(SyntheticParams(shape=BUILTIN_SHAPE, seed=s)) for s in BUILTIN_SEEDS]
    raws = [np.ascontiguousarray(v.raw.transpose(2, 1, 0)) for v in volumes]
    gts = [np.ascontiguousarray(v.labels.transpose(2, 1, 0)) for v in volumes]
    path = check_output(out)
    require_training_packages()
    return fit_and_export(raws, gts, path, minutes=minutes, seed=0)


# ---- the command line ---------------------------------------------------------------------
def triple(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r} is not three integers Z,Y,X")
    return parts[0], parts[1], parts[2]


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
        context=storage.context(),
        progress=not args.quiet,
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
        help="labels (0 = boundary/unknown), same shape; one per --raw",
    )
    p.add_argument("--out", required=True, help="model file to write (.onnx)")
    p.add_argument("--minutes", type=float, default=15.0, help="training time (default 15)")
    p.add_argument(
        "--target",
        choices=("boundary", "affinities"),
        default="boundary",
        help="what the model predicts (default boundary)",
    )
    p.add_argument(
        "--patch",
        type=triple,
        default=(32, 64, 64),
        help="training patch Z,Y,X (default 32,64,64)",
    )
    p.add_argument(
        "--pool",
        type=triple,
        default=(2, 2, 2),
        help="pooling Z,Y,X per level; 1,2,2 for anisotropic stacks (default 2,2,2)",
    )
    p.add_argument("--batch", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--base-channels", type=int, default=8, help="width of the U-Net (default 8)")
    p.add_argument("--depth", type=int, default=3, help="U-Net levels (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--val-raw", help="held-out image for a validation loss")
    p.add_argument("--val-gt", help="held-out labels for a validation loss")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint for s3:// inputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=train_command, workers=None, address=None, max_in_flight=None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="retrain the built-in synthetic-data model")
    parser.add_argument("out", help="model file to write (.onnx)")
    parser.add_argument("--minutes", type=float, default=10.0)
    sys.exit(train_builtin(**vars(parser.parse_args())))
