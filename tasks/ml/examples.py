"""Training examples for the U-Net: targets from ground truth, random patches, augmentation.

Numpy only (z, y, x arrays); `training` turns the examples into tensors. Affinity convention as
in `petavox.tasks.segment.watershed`: channel c links a voxel to its predecessor along axis c of
the x,y,z order; the first plane along each axis has no predecessor, its target is 0 and the
loss mask leaves it out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from petavox.tasks.core.errors import InputError

Triple = tuple[int, int, int]
TARGETS = {"boundary": 1, "affinities": 3}  # target name -> output channels


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
    """(C,z,y,x) float32 target for `target` ("boundary" or "affinities")."""
    if target == "boundary":
        return boundary_target(gt)[None]
    if target == "affinities":
        return affinity_target(gt)
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


# ---- patches and augmentation -----------------------------------------------------------------
def sample_patch(
    rng: np.random.Generator, raw: np.ndarray, gt: np.ndarray, shape: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """A random (raw, gt) crop of `shape` (z,y,x) at the same place in both volumes."""
    start = [int(rng.integers(0, s - p + 1)) for s, p in zip(raw.shape, shape)]
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
    """float32 in [0, 1] from uint8: contrast and brightness jitter, then gaussian noise."""
    x = raw.astype(np.float32) / 255
    contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
    x = (x - 0.5) * contrast + 0.5 + brightness
    x += rng.normal(0.0, rng.uniform(0.0, 0.05), size=x.shape).astype(np.float32)
    return np.clip(x, 0.0, 1.0, out=x)


def random_example(
    rng: np.random.Generator, raw: np.ndarray, gt: np.ndarray, patch: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """One augmented (raw float32 (z,y,x), gt (z,y,x)) pair of shape `patch`.

    An xy transpose is drawn first: the crop then has y and x sizes swapped so that the
    transposed patch has shape `patch` (z is never swapped: data may be anisotropic). Targets
    are computed afterwards from the augmented gt, so affinities stay consistent.
    """
    transpose = rng.random() < 0.5
    crop = (patch[0], patch[2], patch[1]) if transpose else tuple(patch)
    if any(c > s for c, s in zip(crop, raw.shape)):  # the swapped crop does not fit
        transpose, crop = False, tuple(patch)
    r, g = sample_patch(rng, raw, gt, crop)
    if transpose:
        r, g = r.transpose(0, 2, 1), g.transpose(0, 2, 1)
    r, g = augment_geometry(rng, r, g)
    return augment_resampling(rng, augment_intensity(rng, r)), np.ascontiguousarray(g)


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
