"""The plain alignment residual: an aligned stack against the original it was made from.

Per section, the offset of the aligned section's central region against the original's
(phase correlation to 1/20 px); less the median offset over the stack (where the block sits is
not observable), and nothing else: a bend or shear of the stack counts in full.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

CROP, MARGIN = 130, 16  # central region (px), clipped to the section less these margins


@dataclass(frozen=True)
class AlignmentScore:
    offsets: np.ndarray  # (sections, 2) x, y pixels, less their median; NaN: blank
    rms: float  # RMS of the offsets' lengths
    worst: float  # the longest
    drift: float  # change of a straight line through the offsets from first to last section
    blank: int  # sections whose crop holds one value (moved out of it): left out


def section_offsets(aligned: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(sections, 2): how far each aligned section's centre sits from the original's (x, y);
    NaN where the aligned crop is blank (one value: the section was moved out of it)."""
    from skimage.registration import phase_cross_correlation

    nx, ny, nz = original.shape
    cx, cy = min(CROP, nx - 2 * MARGIN), min(CROP, ny - 2 * MARGIN)
    box = np.s_[(nx - cx) // 2 : (nx - cx) // 2 + cx, (ny - cy) // 2 : (ny - cy) // 2 + cy]
    offsets = np.full((nz, 2), np.nan)
    for z in range(nz):
        a = original[(*box, z)].astype(np.float64)
        b = aligned[(*box, z)].astype(np.float64)
        if b.min() == b.max():
            continue
        with warnings.catch_warnings():  # a nearly blank crop: "could not determine RMS error"
            warnings.simplefilter("ignore", UserWarning)
            shift, _, _ = phase_cross_correlation(a, b, upsample_factor=20, normalization=None)
        offsets[z] = shift
    return offsets


def score_offsets(offsets: np.ndarray) -> AlignmentScore:
    """The plain residual of per-section `offsets` (`section_offsets`)."""
    seen = np.isfinite(offsets).all(axis=1)
    z = np.arange(len(offsets), dtype=np.float64)[seen]
    kept = offsets[seen] - np.median(offsets[seen], axis=0)
    lengths = np.linalg.norm(kept, axis=1)
    slope = np.polyfit(z, kept, 1)[0] if len(z) > 1 else np.zeros(2)
    relative = np.full_like(offsets, np.nan)
    relative[seen] = kept
    return AlignmentScore(
        offsets=relative,
        rms=float(np.sqrt((lengths**2).mean())),
        worst=float(lengths.max()),
        drift=float(np.linalg.norm(slope) * (len(offsets) - 1)),
        blank=int((~seen).sum()),
    )


def alignment_score(aligned: np.ndarray, original: np.ndarray) -> AlignmentScore:
    """The plain residual of `aligned` against `original`, both (x, y, z)."""
    return score_offsets(section_offsets(aligned, original))
