"""`petavox train`: fit a small 3D U-Net to (raw, ground truth) volumes and export it to ONNX.

Runs in this process (no Ray): the volumes are read whole, every input is checked before
training starts, and the model is written as one self-contained .onnx file whose input is
raw uint8 / 255 (see `petavox.tasks.ml.training`). Needs the optional training dependencies.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.ml.examples import SYNAPSE_TARGETS, cleft_voxels
from petavox.tasks.ml.examples import TARGETS as TARGET_CHANNELS
from petavox.workflows.train_domain import (
    describe_domain,
    is_layer,
    layers_resolution,
    training_domain,
)
from petavox.workflows.tune import HOLDOUT, hold_out, tune_and_record

INSTALL_HINT = "pip install 'petavox[train]' (or: pip install torch==2.13.0 onnx onnxruntime)"
TARGETS = tuple(TARGET_CHANNELS)


# ---- reading volumes --------------------------------------------------------------------------
def load_volume(source: str, context: StorageContext = StorageContext()) -> np.ndarray:
    """A whole (z,y,x) volume from a .npy file (stored z,y,x) or a precomputed layer URL (mip 0).

    A local folder holding a precomputed `info` file counts as a layer too.
    """
    if is_layer(source):
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
    (and label-0 boundary voxels for a boundary target; cleft voxels for a clefts target, whose
    gt is a cleft label volume, or a synapses target, whose gt holds `SYNAPSE_BITS` flags), and
    the volume holds a patch."""
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
    if target in SYNAPSE_TARGETS and not cleft_voxels(gt, target).size:
        raise InputError(
            f"cleft labels {names[1]} have no cleft voxel (nonzero; with --target synapses, "
            f"bit 1), so a {target} target would be empty; label the synaptic clefts in it, or "
            "leave this volume out"
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
    voxel_nm: Sequence[float] | None = None,
    holdout: float = HOLDOUT,
    context: StorageContext = StorageContext(),
    progress: bool = True,
    checkpoint: str | None = None,
) -> int:
    """Check the inputs, train for `minutes`, export to `out` (.onnx), choose segment parameters
    on the validation volume or else on the held-out `holdout` share of each volume (0: none)
    and record them; print the model path, its sha256, the losses and the choice.
    `raw`/`gt` are sources for `load_volume` (or parallel lists); `patch` and `pool` are z,y,x;
    `voxel_nm` is x,y,z (default: the raw layers' resolution); `checkpoint` a local file the
    run is saved to and goes on from (`ml.checkpoint`). Returns the exit code."""
    if target not in TARGETS:
        raise InputError(f"target {target!r} is not one of {', '.join(TARGETS)}")
    if minutes <= 0 or batch < 1:
        raise InputError(f"minutes ({minutes}) and batch ({batch}) must be positive")
    patch, pool = tuple(int(p) for p in patch), tuple(int(p) for p in pool)
    check_patch_shape(patch, pool, depth)
    path = check_output(out)
    require_training_packages()
    voxel_nm = voxel_nm or layers_resolution(raw, context)
    raws, gts = load_pairs(raw, gt, patch, target, context)
    raws, gts, val, held, where = held_out_sets(
        raws, gts, validation, holdout, patch, target, context
    )
    fit_and_export(
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
        voxel_nm=voxel_nm,
        progress=progress,
        checkpoint=None if checkpoint is None else check_output(checkpoint),
    )
    if held and target not in SYNAPSE_TARGETS:  # segment's parameters: boundary/affinity model
        tune_and_record(path, held, voxel_nm, where)
    return print_sha(path)


def held_out_sets(
    raws: list[np.ndarray],
    gts: list[np.ndarray],
    validation: tuple[str, str] | None,
    holdout: float,
    patch: tuple[int, ...],
    target: str,
    context: StorageContext,
) -> tuple[list[np.ndarray], list[np.ndarray], tuple | None, list[tuple], str]:
    """(training raws, gts, validation pair for the loss or None, pairs to tune segment on,
    where they come from): the validation volume when given, else the held-out share."""
    if validation is not None:
        (v_raw,), (v_gt,) = load_pairs(validation[0], validation[1], patch, target, context)
        return raws, gts, (v_raw, v_gt), [(v_raw, v_gt)], "the validation volume"
    if holdout <= 0:
        return raws, gts, None, [], ""
    raws, gts, held, where = hold_out(raws, gts, holdout, patch)
    fits = all(p <= s for p, s in zip(patch, held[0][0].shape))
    return raws, gts, held[0] if fits else None, held, where


def print_sha(path: Path) -> int:
    """Print the model file's SHA-256 (for `model_sha256` in a config); exit code 0."""
    from petavox.tasks.infer.onnx_model import sha256

    print(f"sha256: {sha256(path.read_bytes())}")
    return 0


def fit_and_export(
    raws: list[np.ndarray],
    gts: list[np.ndarray],
    path: Path,
    *,
    patch: tuple[int, ...] = (32, 64, 64),
    depth: int = 3,
    pool: tuple[int, ...] = (2, 2, 2),
    target: str = "boundary",
    voxel_nm: Sequence[float] | None = None,
    domain_raws: list[np.ndarray] | None = None,
    **training,
) -> None:
    """Train on checked (z,y,x) volumes, export to `path` with the training domain (voxel size
    `voxel_nm` x,y,z, intensity statistics of `domain_raws`, default `raws`; predicted membrane
    share); print path, losses and the domain."""
    from petavox.tasks.ml.onnx_export import export_onnx
    from petavox.tasks.ml.training import predicted_membrane_fraction, train_model
    from petavox.tasks.ml.unet import count_parameters, divisor

    model = train_model(raws, gts, target=target, patch=patch, depth=depth, pool=pool, **training)
    fraction = None
    if target not in SYNAPSE_TARGETS:  # what segment compares a boundary map with
        fraction = predicted_membrane_fraction(model, raws, patch, target)
    domain = training_domain(raws if domain_raws is None else domain_raws, voxel_nm, fraction)
    export_onnx(
        model,
        path,
        target=target,
        patch=patch,
        divisor=divisor(pool, depth),
        metadata=domain.metadata(),
    )
    log = model.train_log
    print(f"model: {path}")
    print(
        f"final loss: {log.final_loss:.4f} ({log.steps} steps in {log.seconds:.0f} s, "
        f"{count_parameters(model)} parameters)"
    )
    if log.validation:
        print(f"validation loss: {log.validation[-1][1]:.4f}")
    print(describe_domain(domain))
