"""The plain alignment residual: an aligned stack against the original it was made from.

Per section, the offset of the aligned section's central region against the original's
(phase correlation to 1/20 px); less the median offset over the stack (where the block sits is
not observable), and nothing else: a bend or shear of the stack counts in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROP, MARGIN = 130, 16  # central region (px), clipped to the section less these margins


@dataclass(frozen=True)
class AlignmentScore:
    offsets: np.ndarray  # (sections, 2) x, y pixels, less their median
    rms: float  # RMS of the offsets' lengths
    worst: float  # the longest
    drift: float  # change of a straight line through the offsets from first to last section


def section_offsets(aligned: np.ndarray, original: np.ndarray) -> np.ndarray:
    """(sections, 2): how far each aligned section's centre sits from the original's (x, y)."""
    from skimage.registration import phase_cross_correlation

    nx, ny, nz = original.shape
    cx, cy = min(CROP, nx - 2 * MARGIN), min(CROP, ny - 2 * MARGIN)
    box = np.s_[(nx - cx) // 2 : (nx - cx) // 2 + cx, (ny - cy) // 2 : (ny - cy) // 2 + cy]
    offsets = np.zeros((nz, 2))
    for z in range(nz):
        a = original[(*box, z)].astype(np.float64)
        b = aligned[(*box, z)].astype(np.float64)
        shift, _, _ = phase_cross_correlation(a, b, upsample_factor=20, normalization=None)
        offsets[z] = shift
    return offsets


def alignment_score(aligned: np.ndarray, original: np.ndarray) -> AlignmentScore:
    """The plain residual of `aligned` against `original`, both (x, y, z)."""
    offsets = section_offsets(aligned, original)
    offsets -= np.median(offsets, axis=0)
    lengths = np.linalg.norm(offsets, axis=1)
    z = np.arange(len(offsets), dtype=np.float64)
    slope = np.polyfit(z, offsets, 1)[0] if len(z) > 1 else np.zeros(2)
    return AlignmentScore(
        offsets=offsets,
        rms=float(np.sqrt((lengths**2).mean())),
        worst=float(lengths.max()),
        drift=float(np.linalg.norm(slope) * (len(z) - 1)),
    )
