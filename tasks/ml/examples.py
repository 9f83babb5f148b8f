"""Training examples for the U-Net: targets from ground truth, random patches, augmentation.

Numpy only (z, y, x arrays); `training` turns the examples into tensors. Affinity convention as
in `petavox.tasks.segment.watershed`: channel c links a voxel to its predecessor along axis c of
the x,y,z order; the first plane along each axis has no predecessor, its target is 0 and the
loss mask leaves it out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from petavox.tasks.core.errors import InputError

Triple = tuple[int, int, int]
TARGETS = {"boundary": 1, "affinities": 3, "clefts": 1, "synapses": 3}  # name -> output channels
# "synapses" ground truth: bit flags per voxel (`synapse_targets`): cleft, presynaptic side,
# postsynaptic side, each a channel of the target
SYNAPSE_BITS = (1, 2, 4)
# the targets of synapse detection: segment does not read them, they have nothing to tune
SYNAPSE_TARGETS = ("clefts", "synapses")
# clefts are rare (well under 1 % of voxels): this share of patches is placed around a cleft voxel
CLEFT_CHANCE = 0.5
# zoom augmentation: structures drawn 0.6-2× their size (a 3.3× range of voxel sizes, wider
# than the 2× a new dataset may differ by), on three patches in four
ZOOM_RANGE = (0.6, 2.0)
ZOOM_CHANCE = 0.75


# ---- targets ----------------------------------------------------------------------------------
def boundary_target(gt: np.ndarray) -> np.ndarray:
    """float32 (z,y,x): 1 where gt == 0 (boundary or unknown), else 0."""
    return (np.asarray(gt) == 0).astype(np.float32)


def affinity_target(gt: np.ndarray) -> np.ndarray:
    """float32 (3,z,y,x): channel c (x, y, z) is 1 where a voxel and its predecessor along c share
    a nonzero label; the first plane along each axis is 0."""
    gt = np.asarray(gt)
    affs = np.zeros((3, *gt.shape), dtype=np.float32)
    for channel, axis in enumerate((2, 1, 0)):  # x, y, z are array axes 2, 1, 0
        here = [slice(None)] * 3
        prev = [slice(None)] * 3
        here[axis], prev[axis] = slice(1, None), slice(None, -1)
        a, b = gt[tuple(here)], gt[tuple(prev)]
        affs[(channel, *here)] = (a == b) & (a != 0)
    return affs


def make_target(gt: np.ndarray, target: str) -> np.ndarray:
    """(C,z,y,x) float32 target for `target`: "boundary", "affinities", "clefts" (then `gt` is
    a cleft label volume and the target is 1 on its nonzero voxels) or "synapses" (`gt` holds
    `SYNAPSE_BITS` flags, one channel each)."""
    if target == "boundary":
        return boundary_target(gt)[None]
    if target == "affinities":
        return affinity_target(gt)
    if target == "clefts":
        return (np.asarray(gt) != 0).astype(np.float32)[None]
    if target == "synapses":
        return np.stack([(np.asarray(gt) & bit) > 0 for bit in SYNAPSE_BITS]).astype(np.float32)
    raise InputError(f"target {target!r} is not one of {sorted(TARGETS)}")


def loss_mask(shape: Sequence[int], target: str) -> np.ndarray:
    """(C,z,y,x) float32 weights: 1, except 0 on each affinity channel's first plane."""
    mask = np.ones((TARGETS[target], *shape), dtype=np.float32)
    if target == "affinities":
        for channel, axis in enumerate((2, 1, 0)):
            first = [slice(None)] * 3
            first[axis] = slice(0, 1)
            mask[(channel, *first)] = 0
    return mask


def cleft_voxels(gt: np.ndarray, target: str = "clefts") -> np.ndarray:
    """Flat indices of the cleft voxels of a "clefts" (nonzero) or "synapses" (cleft bit) ground
    truth: what `random_example` places crops around."""
    flat = np.asarray(gt).ravel()
    return np.flatnonzero(flat & SYNAPSE_BITS[0] if target == "synapses" else flat)


def focus_voxels(gts: Sequence[np.ndarray], target: str) -> list[np.ndarray] | None:
    """Per volume, the voxels some patches are placed around: clefts for a "clefts" or
    "synapses" target, none (None) for the others."""
    if target not in SYNAPSE_TARGETS:
        return None
    return [cleft_voxels(gt, target) for gt in gts]


# ---- patches and augmentation -----------------------------------------------------------------
def sample_patch(
    rng: np.random.Generator,
    raw: np.ndarray,
    gt: np.ndarray,
    shape: Sequence[int],
    around: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A random (raw, gt) crop of `shape` (z,y,x) at the same place in both volumes; with
    `around` (a voxel z,y,x) one that holds that voxel, at a random place in the crop."""
    if around is None:
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(raw.shape, shape)]
    else:
        start = [
            min(max(int(v) - int(rng.integers(0, p)), 0), s - p)
            for v, s, p in zip(around, raw.shape, shape)
        ]
    box = tuple(slice(a, a + p) for a, p in zip(start, shape))
    return raw[box], gt[box]


def augment_geometry(
    rng: np.random.Generator, raw: np.ndarray, gt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips on every axis, the same for raw and gt."""
    for axis in range(3):
        if rng.random() < 0.5:
            raw, gt = np.flip(raw, axis), np.flip(gt, axis)
    return raw, gt


def augment_intensity(rng: np.random.Generator, raw: np.ndarray) -> np.ndarray:
    """float32 in [0, 1] from uint8: contrast (×0.6-1.6 about the patch mean), brightness
    (±0.15), gamma (0.7-1.4), sometimes a blur (σ up to 1.2 voxels), then gaussian noise. Wide
    on purpose: a new microscope's contrast and sharpness differ from the training data's."""
    from scipy import ndimage

    x = raw.astype(np.float32) / 255
    if rng.random() < 0.3:
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 1.2))
    mean = float(x.mean())
    contrast = math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    x = (x - mean) * contrast + mean + rng.uniform(-0.15, 0.15)
    np.clip(x, 0.0, 1.0, out=x)
    x **= np.float32(math.exp(rng.uniform(math.log(0.7), math.log(1.4))))
    x += rng.normal(0.0, rng.uniform(0.0, 0.05), size=x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0, out=x)


def draw_zoom(
    rng: np.random.Generator, shape: Sequence[int], patch: Sequence[int], zoom: tuple[float, float]
) -> tuple[float, float, float]:
    """Output voxels per input voxel (z, y, x), log-uniform in `zoom` (z within ×1.25 of y, x)
    for three patches in four, else 1; never so small that the crop outgrows the volume."""
    if zoom == (1.0, 1.0) or rng.random() >= ZOOM_CHANCE:
        return (1.0, 1.0, 1.0)
    xy = math.exp(rng.uniform(math.log(zoom[0]), math.log(zoom[1])))
    z = xy * math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    # a transposed crop swaps y and x, so y and x must both fit the smaller of the two sides
    floor_xy = max(patch[1], patch[2]) / min(shape[1], shape[2])
    return (max(z, patch[0] / shape[0]), max(xy, floor_xy), max(xy, floor_xy))


def zoom_to(x: np.ndarray, g: np.ndarray, patch: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Resample a crop to `patch` (z,y,x): the image linearly, the labels by nearest label."""
    if tuple(x.shape) == tuple(patch):
        return x, g
    from scipy import ndimage

    step = np.array(x.shape, np.float64) / np.array(patch, np.float64)
    offset = 0.5 * step - 0.5  # output voxel centres onto input voxel centres
    x = ndimage.affine_transform(
        x, step, offset, output_shape=tuple(patch), order=1, mode="nearest"
    )
    g = ndimage.affine_transform(
        g, step, offset, output_shape=tuple(patch), order=0, mode="nearest"
    )
    return x, g


def random_example(
    rng: np.random.Generator,
    raw: np.ndarray,
    gt: np.ndarray,
    patch: Sequence[int],
    zoom: tuple[float, float] = ZOOM_RANGE,
    focus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (raw float32 (z,y,x), gt (z,y,x)) pair of shape `patch`.

    A zoom is drawn first (`draw_zoom`: structures drawn larger or smaller, as on data at
    another voxel size), then an xy transpose: the crop has the size the zoom needs, with y and x
    swapped when transposed. Targets are computed afterwards from the augmented gt, so
    affinities stay consistent. `focus` (flat indices of rare voxels, e.g. `cleft_voxels`): in
    `CLEFT_CHANCE` of the examples the crop is placed around one of them, drawn at random.
    """
    factors = draw_zoom(rng, raw.shape, patch, zoom)
    need = tuple(min(s, math.ceil(p / f)) for p, f, s in zip(patch, factors, raw.shape))
    transpose = rng.random() < 0.5
    crop = (need[0], need[2], need[1]) if transpose else need
    if any(c > s for c, s in zip(crop, raw.shape)):  # the swapped crop does not fit
        transpose, crop = False, need
    around = None
    if focus is not None and len(focus) and rng.random() < CLEFT_CHANCE:
        around = np.unravel_index(int(focus[rng.integers(len(focus))]), raw.shape)
    r, g = sample_patch(rng, raw, gt, crop, around)
    if transpose:
        r, g = r.transpose(0, 2, 1), g.transpose(0, 2, 1)
    r, g = augment_geometry(rng, r, g)
    x, g = zoom_to(augment_intensity(rng, r), np.ascontiguousarray(g), patch)
    return augment_resampling(rng, x), np.ascontiguousarray(g)


def augment_resampling(rng: np.random.Generator, x: np.ndarray, chance: float = 0.5) -> np.ndarray:
    """Half the time, shift each section by a random sub-pixel amount (bilinear): the blur and
    the small section-to-section jitter of an aligned (resampled) stack."""
    if rng.random() >= chance:
        return x
    from scipy import ndimage

    out = np.empty_like(x)
    for z, section in enumerate(x):
        shift = rng.uniform(-0.5, 0.5, 2)
        out[z] = ndimage.shift(section, shift, order=1, mode="nearest")
    return out
