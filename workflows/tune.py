"""`petavox tune`: choose `segment`'s parameters for a model on held-out ground truth and record
them in the model, so `infer` hands them to `segment` as its defaults.

In this process (no Ray): the model predicts each held-out volume as `infer` would (the same
patch grid and blending, the intensity map onto the training statistics), then
`petavox.tasks.segment.tuning.sweep` tries distance-seeded watersheds and merge thresholds and
keeps the setting with the lowest VOI (averaged over the volumes). `petavox train` runs this
on the part of the ground truth it holds out (`--holdout`).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.infer.domain import SEGMENT_KEY, IntensityMap, ModelDomain, intensity_stats
from petavox.tasks.infer.no_data_fill import no_data_value
from petavox.tasks.infer.onnx_model import ModelRef, OnnxPredictor, inspect, open_session, sha256
from petavox.tasks.infer.whole_volume import predict_volume
from petavox.tasks.segment.tuning import Trial, best, size_floor, sweep
from petavox.workflows.stages.infer import InferParams

HOLDOUT = 0.3  # share of each training volume kept back to choose segment's parameters on
MIN_HELD_OUT = 16  # voxels along the split axis: less is too thin to judge a segmentation
AXES = "zyx"
# the infer stage's default patch and overlap (x, y, z): tuning predicts as a default run does
INFER_PATCH = Vec3.of(InferParams.model_fields["patch"].default)
INFER_OVERLAP = Vec3.of(InferParams.model_fields["overlap"].default)


def hold_out(
    raws: Sequence[np.ndarray], gts: Sequence[np.ndarray], fraction: float, patch: Sequence[int]
) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[np.ndarray, np.ndarray]], str]:
    """(training raws, training gts, held-out (raw, gt) pairs, where): each z,y,x volume split
    along its longest axis, the last `fraction` held out; InputError when either part is too
    small (the training part must hold a patch)."""
    if not 0 < fraction < 1:
        raise InputError(f"holdout {fraction} must be between 0 and 1 (0 turns it off)")
    fit_raws, fit_gts, held, cuts = [], [], [], []
    for i, (raw, gt) in enumerate(zip(raws, gts)):
        axis = int(np.argmax(raw.shape))
        cut = round(raw.shape[axis] * (1 - fraction))
        if raw.shape[axis] - cut < MIN_HELD_OUT or cut < patch[axis]:
            raise InputError(
                f"volume {i} of {raw.shape} (z,y,x) voxels is too small to hold out {fraction:.0%}"
                f" along {AXES[axis]} (at least {MIN_HELD_OUT} voxels held out and a patch of "
                f"{patch[axis]} left to train on): give --val-raw/--val-gt, or --holdout 0"
            )
        head = tuple(slice(0, cut) if a == axis else slice(None) for a in range(3))
        tail = tuple(slice(cut, None) if a == axis else slice(None) for a in range(3))
        fit_raws.append(np.ascontiguousarray(raw[head]))
        fit_gts.append(np.ascontiguousarray(gt[head]))
        held.append((np.ascontiguousarray(raw[tail]), np.ascontiguousarray(gt[tail])))
        cuts.append(f"{AXES[axis]} ≥ {cut}")
    where = f"the held-out {fraction:.0%} of the ground truth ({', '.join(cuts)})"
    return fit_raws, fit_gts, held, where


def predict_held_out(
    path: Path, raw: np.ndarray, intensity: Callable[[ModelDomain], IntensityMap] | None = None
) -> np.ndarray:
    """The model's map of `raw` (z,y,x uint8) as `infer` makes it: x,y,z (,c) float32 0-1.
    The intensity map is `intensity(the model's domain)`, or from `raw`'s own statistics
    (`infer` samples a few boxes of its input instead)."""
    data = path.read_bytes()
    info = inspect(open_session(data, str(path)), str(path))
    image = raw.transpose(2, 1, 0).astype(np.float32) / 255
    mapping = None
    if intensity is not None:
        mapping = intensity(info.domain)
    elif info.domain.intensity is not None:
        mapping = IntensityMap.between(intensity_stats(image), info.domain.intensity)
    predictor = OnnxPredictor(ModelRef(url=str(path.resolve()), sha256=sha256(data)))
    return predict_volume(
        predictor,
        image,
        patch=INFER_PATCH,
        overlap=INFER_OVERLAP,
        divisor=info.divisor,
        channels=info.channels,
        intensity=mapping,
        no_data_value=no_data_value(info.target, info.domain),
    )


def tune(
    path: Path, pairs: Sequence[tuple[np.ndarray, np.ndarray]], voxel_size: Sequence[float]
) -> tuple[Trial, list[Trial]]:
    """(best setting, every setting with its VOI and ARAND averaged over the pairs) for the
    model at `path` on (raw, gt) z,y,x pairs; `voxel_size` is relative (x, y, z)."""
    if not pairs:
        raise InputError("tuning needs at least one held-out (raw, ground truth) pair")
    runs: dict[tuple, list[Trial]] = defaultdict(list)
    floor = size_floor([gt for _, gt in pairs])
    for raw, gt in pairs:
        data = predict_held_out(path, raw)
        for trial in sweep(data, gt.transpose(2, 1, 0), floor=floor, voxel_size=voxel_size):
            runs[tuple(trial.segment_params().values())].append(trial)
    averaged = [
        Trial(
            *key,
            arand=float(np.mean([t.arand for t in trials])),
            voi_split=float(np.mean([t.voi_split for t in trials])),
            voi_merge=float(np.mean([t.voi_merge for t in trials])),
            largest_share=float(np.max([t.largest_share for t in trials])),
        )
        for key, trials in runs.items()
    ]
    return best(averaged), averaged


def tune_and_record(
    path: Path, pairs: Sequence[tuple[np.ndarray, np.ndarray]], voxel_nm, where: str
) -> list[Trial]:
    """Tune the model at `path` on `pairs` (voxel size `voxel_nm` x,y,z or None: isotropic),
    record the choice in it and print it; every setting tried comes back."""
    relative = [v / min(voxel_nm) for v in voxel_nm] if voxel_nm else (1.0, 1.0, 1.0)
    chosen, trials = tune(path, pairs, relative)
    record_segment(path, chosen, where)
    print(describe_choice(chosen, where))
    return trials


def record_segment(path: Path, chosen: Trial, where: str) -> str:
    """Write `chosen`'s segment parameters (and its held-out scores) into the model's metadata;
    return the file's new SHA-256. The file is replaced atomically."""
    import onnx

    proto = onnx.load(str(path))
    meta = {p.key: p.value for p in proto.metadata_props}
    meta[SEGMENT_KEY] = json.dumps(
        {
            **chosen.segment_params(),
            "held_out": where,
            "held_out_arand": round(chosen.arand, 4),
            "held_out_voi": round(chosen.voi, 4),
        },
        sort_keys=True,
    )
    onnx.helper.set_model_props(proto, meta)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)
    return sha256(path.read_bytes())


def describe_choice(chosen: Trial, where: str) -> str:
    guard = (
        f", merge_size_penalty {chosen.merge_size_penalty:g} above {chosen.merge_size_floor} voxels"
        if chosen.merge_size_penalty
        else ", no size penalty"
    )
    return (
        f"segment parameters chosen on {where}: distance seeds, seed_threshold "
        f"{chosen.seed_threshold:g}, seed_radius {chosen.seed_radius:g}, merge_threshold "
        f"{chosen.merge_threshold:g}{guard} (held-out adapted Rand {chosen.arand:.3f}, VOI "
        f"{chosen.voi_split:.3f} + {chosen.voi_merge:.3f}); recorded in the model: infer "
        "passes them to segment as its defaults"
    )


def run_tune(
    model: str,
    raw: Sequence[str],
    gt: Sequence[str],
    *,
    out: str | None = None,
    voxel_nm: Sequence[float] | None = None,
    context=None,
) -> int:
    """`petavox tune`: choose segment parameters for the local ONNX `model` on (raw, gt)
    sources (as `petavox train` reads them), record them in `out` (default: the model itself),
    print the best settings and the choice. Returns the exit code."""
    import shutil

    from petavox.tasks.core.storage import StorageContext
    from petavox.workflows.train import check_output, load_pairs
    from petavox.workflows.train_domain import layers_resolution

    context = context or StorageContext()
    source = Path(model.removeprefix("file://"))
    if not source.is_file():
        raise InputError(f"model {model}: no such file; give the .onnx written by petavox train")
    target = check_output(out) if out else source
    raws, gts = load_pairs(list(raw), list(gt), (1, 1, 1), "affinities", context)
    voxel_nm = voxel_nm or layers_resolution(list(raw), context)
    if target != source:
        shutil.copyfile(source, target)
    trials = tune_and_record(target, list(zip(raws, gts)), voxel_nm, f"{len(raws)} volume(s)")
    for trial in sorted(trials, key=lambda t: t.voi)[:5]:
        print(
            f"  seed_threshold {trial.seed_threshold:g}, seed_radius {trial.seed_radius:g}, "
            f"merge_threshold {trial.merge_threshold:g}, size penalty "
            f"{trial.merge_size_penalty:g}: adapted Rand {trial.arand:.3f}, VOI "
            f"{trial.voi:.3f}, largest segment {trial.largest_share:.1%}"
        )
    print(f"model: {target}\nsha256: {sha256(target.read_bytes())}")
    return 0
