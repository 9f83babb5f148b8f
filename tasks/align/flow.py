"""Displacement between two sections on a grid of patches, coarse to fine, with a confidence.

`estimate_pair(ref, moving)` answers: by how much is the content of `moving` displaced
relative to `ref`, at each patch centre (moving(q) ≈ ref(q − d)). First the whole region at
1/`coarse` resolution (phase correlation), then each patch at full resolution, cut from
`moving` where the coarse shift says its content went, to sub-pixel precision (scikit-image's
upsampled phase correlation). Confidence is the normalised cross-correlation of the two patches
once aligned (0 where a patch is blank or leaves the section).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_PADDING = 0.02  # patches with more exact-0 pixels than this are padding, not data


@dataclass(frozen=True, kw_only=True)
class FlowParams:
    patch: int = 64  # side of a patch (pixels)
    spacing: int = 32  # distance between patch centres
    coarse: int = 4  # downsampling of the coarse step
    upsample: int = 20  # sub-pixel precision 1/upsample


@dataclass(kw_only=True)
class PairFlow:
    """Patch centres (n, 2), displacements (n, 2) and confidences (n,), all x, y."""

    points: np.ndarray
    displacement: np.ndarray
    confidence: np.ndarray

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {
            "points": self.points,
            "displacement": self.displacement,
            "confidence": self.confidence,
        }


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    nx, ny = (s // factor * factor for s in image.shape)
    cut = image[:nx, :ny]
    return cut.reshape(nx // factor, factor, ny // factor, factor).mean(axis=(1, 3))


def _phase_shift(ref: np.ndarray, moving: np.ndarray, upsample: int) -> np.ndarray:
    """Displacement s of moving's content: moving(x) ≈ ref(x − s)."""
    from skimage.registration import phase_cross_correlation

    shift, _, _ = phase_cross_correlation(ref, moving, upsample_factor=upsample, normalization=None)
    return -np.asarray(shift, np.float64)


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-9 else 0.0


def _centred(image: np.ndarray, factor: int) -> np.ndarray:
    """Block means minus their mean, with blocks that hold padding (exact 0) set to the mean:
    the edge of a padded band would otherwise dominate the correlation."""
    small = _block_mean(image, factor)
    valid = _block_mean((image != 0).astype(np.float32), factor) > 0.99
    mean = small[valid].mean() if valid.any() else small.mean()
    return np.where(valid, small, mean) - mean


def coarse_shift(ref: np.ndarray, moving: np.ndarray, factor: int) -> np.ndarray:
    """Whole-region displacement of moving's content, in full-resolution pixels."""
    return _phase_shift(_centred(ref, factor), _centred(moving, factor), 1) * factor


def patch_centres(shape: tuple[int, int], params: FlowParams) -> np.ndarray:
    half = params.patch // 2
    axes = [np.arange(half, s - half + 1, params.spacing) for s in shape]
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 2), np.int64)
    gx, gy = np.meshgrid(*axes, indexing="ij")
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def estimate_pair(ref: np.ndarray, moving: np.ndarray, params: FlowParams) -> PairFlow:
    """Displacements of `moving` relative to `ref` (2-D x, y arrays of the same region)."""
    ref, moving = ref.astype(np.float32), moving.astype(np.float32)
    guess = np.rint(coarse_shift(ref, moving, params.coarse)).astype(np.int64)
    points = patch_centres(ref.shape, params)
    half = params.patch // 2
    shift = np.zeros((len(points), 2))
    conf = np.zeros(len(points))
    for k, p in enumerate(points):
        a = ref[p[0] - half : p[0] + half, p[1] - half : p[1] + half]
        q = p + guess
        if q.min() < half or q[0] + half > moving.shape[0] or q[1] + half > moving.shape[1]:
            continue  # the content went out of the section
        b = moving[q[0] - half : q[0] + half, q[1] - half : q[1] + half]
        if min(a.std(), b.std()) < 1e-3 or max((a == 0).mean(), (b == 0).mean()) > MAX_PADDING:
            continue  # blank or padded (damage, edge of the data): nothing to match
        s = _phase_shift(a - a.mean(), b - b.mean(), params.upsample)  # b(x) ≈ a(x − s)
        shift[k] = guess + s
        conf[k] = max(0.0, _aligned_ncc(a, b, np.rint(s).astype(np.int64)))
    return PairFlow(points=points.astype(np.float64), displacement=shift, confidence=conf)


def _aligned_ncc(a: np.ndarray, b: np.ndarray, s: np.ndarray) -> float:
    """NCC of b(x) against a(x − s) over their overlap."""
    n = a.shape[0]
    sx, sy = -int(s[0]), -int(s[1])
    if abs(sx) >= n // 2 or abs(sy) >= n // 2:
        return 0.0
    a_cut = a[max(sx, 0) : n + min(sx, 0), max(sy, 0) : n + min(sy, 0)]
    b_cut = b[max(-sx, 0) : n + min(-sx, 0), max(-sy, 0) : n + min(-sy, 0)]
    return ncc(a_cut, b_cut)
