"""Training a small 3D U-Net on (raw, ground truth) volumes (export: `onnx_export`). No Ray.

Volumes here are numpy arrays indexed (z, y, x): raw uint8, ground truth integer labels with
0 = boundary (membrane or unknown). The network sees raw uint8 / 255 as float32, nothing else;
the exported ONNX graph takes that (N, 1, Z, Y, X) input and returns probabilities in [0, 1]:
"boundary" (N, 1, Z, Y, X), "affinities" (N, 3, Z, Y, X), channel c = x, y, z, or "clefts"
(N, 1, Z, Y, X): the probability that a voxel is in a synaptic cleft, trained on a cleft label
volume (nonzero = cleft) in place of the ground truth, half the patches placed around a cleft.

Affinity convention (as in `petavox.tasks.segment.watershed`): channel c links a voxel to its
predecessor along axis c of the x,y,z order, e.g. the x-affinity at [z, y, x] links [z, y, x]
and [z, y, x - 1]. The first plane along each axis has no predecessor: its target is 0 and the
loss ignores it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from petavox.tasks.core.errors import InputError
from petavox.tasks.ml.checkpoint import CHECKPOINT_EVERY, Checkpoint, resume, run_settings
from petavox.tasks.ml.examples import (
    TARGETS,
    ZOOM_RANGE,
    focus_voxels,
    loss_mask,
    make_target,
    random_example,
)
from petavox.tasks.ml.unet import UNet3d

Triple = tuple[int, int, int]
MAX_THREADS = 2
VALIDATE_EVERY = 60.0  # seconds between validation passes (and one at the end)


# ---- batches ------------------------------------------------------------------------------
def make_batch(
    rng: np.random.Generator,
    volumes: Sequence[tuple[np.ndarray, np.ndarray]],
    patch: Sequence[int],
    batch: int,
    target: str,
    zoom: tuple[float, float] = ZOOM_RANGE,
    focus: Sequence[np.ndarray] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw (N,1,z,y,x), target (N,C,z,y,x), mask (N,C,z,y,x)) tensors of augmented patches.
    `focus`: per volume, the flat indices of the voxels some patches are placed around (the
    "clefts" target: `cleft_voxels`, computed here when not given)."""
    if focus is None:
        focus = focus_voxels([gt for _, gt in volumes], target)
    sizes = np.array([r.size for r, _ in volumes], dtype=np.float64)
    xs, ys = [], []
    for _ in range(batch):
        index = int(rng.choice(len(volumes), p=sizes / sizes.sum()))
        raw, gt = volumes[index]
        x, g = random_example(rng, raw, gt, patch, zoom, None if focus is None else focus[index])
        xs.append(x[None])
        ys.append(make_target(g, target))
    mask = np.broadcast_to(loss_mask(patch, target), (batch, TARGETS[target], *patch))
    return (
        torch.from_numpy(np.stack(xs)),
        torch.from_numpy(np.stack(ys)),
        torch.from_numpy(np.ascontiguousarray(mask)),
    )


# ---- loss -------------------------------------------------------------------------------------
def balanced_bce(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Class-balanced binary cross entropy: per channel, the mean loss over target-1 voxels and
    the mean over target-0 voxels count equally (a class absent from the batch is left out);
    the channels are averaged. `mask` (0/1) drops voxels."""
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    mask = torch.ones_like(target) if mask is None else mask
    dims = [d for d in range(bce.ndim) if d != 1]  # all but the channel axis
    per_channel = []
    for weight in (target * mask, (1 - target) * mask):
        count = weight.sum(dim=dims)
        per_channel.append(((bce * weight).sum(dim=dims) / count.clamp(min=1), count > 0))
    (pos, has_pos), (neg, has_neg) = per_channel
    classes = has_pos.float() + has_neg.float()
    return ((pos + neg) / classes.clamp(min=1)).mean()


def weighted_bce(
    logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, pos_weight: float
) -> torch.Tensor:
    """Binary cross entropy with target-1 voxels weighted `pos_weight`, over the mask."""
    weight = mask * (1 + (pos_weight - 1) * target)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (bce * weight).sum() / weight.sum().clamp(min=1)


# Clefts are ~0.1 % of voxels. The class-balanced loss weights them ~1000× and so marks every
# dark structure that might be cleft (measured: a tenth of its components were clefts); a fixed
# weight keeps the probability close to calibrated, and the detector's threshold does the rest.
CLEFT_POS_WEIGHT = 5.0


def synapse_loss(logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The "synapses" target's loss: the cleft channel's as a clefts model's, averaged with the
    sides' weighted BCE in which every voxel of either side weighs `CLEFT_POS_WEIGHT` in both
    side channels. Weighted as clefts are (positives only), a side channel barely paid for
    marking the other side (a few negatives among millions), and a 30-minute model marked both
    sides alike (presynaptic channel 0.34 on its side, 0.38 on the other)."""
    cleft = weighted_bce(logits[:, :1], y[:, :1], m[:, :1], CLEFT_POS_WEIGHT)
    near = torch.clamp(y[:, 1:2] + y[:, 2:3], max=1)
    weight = m[:, 1:] * (1 + (CLEFT_POS_WEIGHT - 1) * near)
    bce = nn.functional.binary_cross_entropy_with_logits(logits[:, 1:], y[:, 1:], reduction="none")
    return (cleft + (bce * weight).sum() / weight.sum().clamp(min=1)) / 2


def loss_of(target: str, logits: torch.Tensor, y: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """The training loss of a target: class-balanced BCE, weighted BCE for clefts, or
    `synapse_loss`."""
    if target == "clefts":
        return weighted_bce(logits, y, m, CLEFT_POS_WEIGHT)
    if target == "synapses":
        return synapse_loss(logits, y, m)
    return balanced_bce(logits, y, m)


# ---- training ---------------------------------------------------------------------------------
@dataclass
class TrainLog:
    """What a training run did; attached to the returned model as `model.train_log`."""

    target: str
    patch: Triple
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    zoom: tuple[float, float] = ZOOM_RANGE

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last 20 steps (nan before any step)."""
        tail = self.losses[-20:]
        return float(np.mean(tail)) if tail else math.nan


def _as_volumes(
    raw: np.ndarray | Sequence[np.ndarray], gt: np.ndarray | Sequence[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(raw, gt)] pairs from one volume each or parallel lists; checks the shapes."""
    raws = [raw] if isinstance(raw, np.ndarray) else list(raw)
    gts = [gt] if isinstance(gt, np.ndarray) else list(gt)
    if len(raws) != len(gts) or not raws:
        raise InputError(f"{len(raws)} raw volumes but {len(gts)} ground truths; pair them up")
    for i, (r, g) in enumerate(zip(raws, gts)):
        if r.ndim != 3 or r.shape != g.shape:
            raise InputError(
                f"volume {i}: raw {r.shape} and gt {g.shape} must be 3D (z,y,x) of the same shape"
            )
    return list(zip(raws, gts))


def check_patch(
    volumes: Sequence[tuple[np.ndarray, np.ndarray]], patch: Sequence[int], div: Sequence[int]
) -> None:
    """Raise InputError unless `patch` is a multiple of `div` and fits in every volume."""
    if any(p < 1 or p % d for p, d in zip(patch, div)):
        raise InputError(
            f"patch {tuple(patch)} (z,y,x) must be a positive multiple of {tuple(div)}; "
            "change the patch or the pooling"
        )
    for i, (r, _) in enumerate(volumes):
        if any(p > s for p, s in zip(patch, r.shape)):
            raise InputError(
                f"volume {i} of {r.shape} (z,y,x) voxels is smaller than the patch "
                f"{tuple(patch)}; use a smaller patch or a bigger volume"
            )


def _lr(base: float, fraction: float) -> float:
    """Cosine decay from `base` to `base / 10` over the run."""
    return base * (0.1 + 0.45 * (1 + math.cos(math.pi * min(fraction, 1.0))))


def _validation_batches(
    validation: tuple, patch: Sequence[int], target: str, model: UNet3d, n: int = 8
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Up to `n` fixed, unaugmented patches (a corner and the centre of each validation
    volume), checked against the patch and the model's divisor."""
    volumes = _as_volumes(*validation)
    check_patch(volumes, patch, model.divisor)
    out = []
    for raw, gt in volumes:
        for start in ((0, 0, 0), tuple((s - p) // 2 for s, p in zip(raw.shape, patch))):
            box = tuple(slice(a, a + p) for a, p in zip(start, patch))
            x = torch.from_numpy(raw[box].astype(np.float32)[None, None] / 255)
            y = torch.from_numpy(make_target(gt[box], target)[None])
            out.append((x, y, torch.from_numpy(loss_mask(patch, target)[None])))
    return out[:n]


def validation_loss(model: nn.Module, batches: Sequence[tuple], target: str = "boundary") -> float:
    """Mean training loss (`loss_of`) of `model` (in eval mode) over fixed batches."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        losses = [float(loss_of(target, model(x), y, m)) for x, y, m in batches]
    model.train(was_training)
    return float(np.mean(losses))


def train_model(
    raw: np.ndarray | Sequence[np.ndarray],
    gt: np.ndarray | Sequence[np.ndarray],
    *,
    target: str = "boundary",
    minutes: float,
    patch: Triple = (32, 64, 64),
    batch: int = 2,
    seed: int = 0,
    base_channels: int = 8,
    depth: int = 3,
    pool: Triple = (2, 2, 2),
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    progress: bool = True,
    lr: float = 1e-3,
    max_steps: int | None = None,
    zoom: tuple[float, float] = ZOOM_RANGE,
    checkpoint: str | Path | None = None,
) -> UNet3d:
    """Train a U-Net with Adam on random augmented patches until `minutes` of wall clock (or
    `max_steps`) are used; return it in eval mode with `model.train_log` (a `TrainLog`).

    With `checkpoint` (a path) the run is saved there as it goes (`ml.checkpoint`); if the file
    exists, the run goes on from it, with the same settings, until `minutes` in all.

    `raw` (uint8) and `gt` (integer, 0 = boundary) are (z,y,x) volumes or parallel lists of
    them; `validation` is an optional (raw, gt) pair scored every minute and at the end.
    Runs are reproducible from `seed` up to torch's own nondeterminism, except that the number
    of steps depends on the wall clock (set `max_steps` with a large `minutes` to fix it).
    """
    if target not in TARGETS:
        raise InputError(f"target {target!r} is not one of {sorted(TARGETS)}")
    if minutes <= 0 or batch < 1:
        raise InputError(f"minutes ({minutes}) and batch ({batch}) must be positive")
    volumes = _as_volumes(raw, gt)
    patch = tuple(int(p) for p in patch)  # type: ignore[assignment]
    torch.manual_seed(seed)
    torch.set_num_threads(min(MAX_THREADS, torch.get_num_threads()))
    model = UNet3d(TARGETS[target], base_channels, depth, pool)
    check_patch(volumes, patch, model.divisor)
    val = [] if validation is None else _validation_batches(validation, patch, target, model)
    log = TrainLog(target, patch, zoom=tuple(zoom))  # type: ignore[arg-type]
    _fit(
        model,
        volumes,
        log,
        np.random.default_rng(seed),
        minutes * 60,
        batch,
        lr,
        max_steps,
        val,
        progress,
        checkpoint,
    )
    model.eval()
    model.train_log = log
    return model


def _fit(
    model: UNet3d,
    volumes: Sequence[tuple[np.ndarray, np.ndarray]],
    log: TrainLog,
    rng: np.random.Generator,
    budget: float,
    batch: int,
    lr: float,
    max_steps: int | None,
    val: Sequence[tuple],
    progress: bool,
    path: str | Path | None = None,
) -> None:
    """The training loop (updates `log` in place); from and to a checkpoint at `path`."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    settings = run_settings(model, log, batch, lr)
    checkpoint = None if path is None else Checkpoint(Path(path), settings)
    prior = resume(checkpoint, model, optimizer, log, rng, budget)
    focus = focus_voxels([gt for _, gt in volumes], log.target)
    model.train()
    start = last_val = last_save = time.monotonic() - prior
    bar = _progress_bar(log.target, budget, prior, progress)
    shown = round(prior)
    try:
        while True:
            elapsed = time.monotonic() - start
            fraction = max(elapsed / budget, log.steps / max_steps if max_steps else 0.0)
            if fraction >= 1:
                break
            for group in optimizer.param_groups:
                group["lr"] = _lr(lr, fraction)
            x, y, m = make_batch(rng, volumes, log.patch, batch, log.target, log.zoom, focus)
            loss = loss_of(log.target, model(x), y, m)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            log.steps += 1
            log.losses.append(loss.item())
            now = time.monotonic()
            if val and now - last_val >= VALIDATE_EVERY:
                log.validation.append((log.steps, validation_loss(model, val, log.target)))
                last_val = now
            if checkpoint is not None and now - last_save >= CHECKPOINT_EVERY:
                checkpoint.save(model, optimizer, log, rng, now - start)
                last_save = now
            shown = _advance(bar, shown, now - start)
            bar.set_postfix(step=log.steps, loss=f"{log.final_loss:.4f}", refresh=False)
    except KeyboardInterrupt:  # stopped: keep what was trained
        if checkpoint is not None:
            checkpoint.save(model, optimizer, log, rng, time.monotonic() - start)
        raise
    log.seconds = time.monotonic() - start
    if val:
        log.validation.append((log.steps, validation_loss(model, val, log.target)))
        bar.set_postfix(
            step=log.steps, loss=f"{log.final_loss:.4f}", val=f"{log.validation[-1][1]:.4f}"
        )
    bar.close()
    if checkpoint is not None:
        checkpoint.save(model, optimizer, log, rng, log.seconds)


def _advance(bar, shown: int, seconds: float) -> int:
    """Move the progress bar from `shown` to `seconds` (within its total); the new position."""
    position = min(round(seconds), bar.total)
    bar.update(position - shown)
    return position


def _progress_bar(target: str, budget: float, prior: float, progress: bool):
    """The training progress bar over the wall-clock budget (seconds), from `prior`."""
    from tqdm import tqdm

    return tqdm(
        initial=round(prior),
        total=round(budget),
        desc=f"train {target}",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}{postfix}",
        file=sys.stderr,
        disable=not progress,
        dynamic_ncols=True,
        mininterval=1.0,
    )


def predicted_membrane_fraction(
    model: nn.Module, volumes: Sequence[np.ndarray], patch: Sequence[int], target: str
) -> float:
    """Share of voxels the model calls boundary (≥ 0.5; affinities: 1 − their mean ≥ 0.5) on
    fixed unaugmented patches of its training images: what `segment` compares a new boundary
    map with."""
    was_training = model.training
    model.eval()
    hits = total = 0
    with torch.no_grad():
        for raw in volumes:
            for start in ((0, 0, 0), tuple((s - p) // 2 for s, p in zip(raw.shape, patch))):
                box = tuple(slice(a, a + p) for a, p in zip(start, patch))
                x = torch.from_numpy(raw[box].astype(np.float32)[None, None] / 255)
                prob = torch.sigmoid(model(x))[0]
                boundary = prob[0] if target == "boundary" else 1 - prob.mean(dim=0)
                hits += int((boundary >= 0.5).sum())
                total += boundary.numel()
    model.train(was_training)
    return hits / max(total, 1)
