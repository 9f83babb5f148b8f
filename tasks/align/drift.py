"""Misalignment apart from the content's own motion through z.

Neighbouring sections are matched, so a solve finds every motion of the content from section
to section: the misalignment (cutting, imaging, stage jitter: independent from section to
section) and the content's own motion (neurites running obliquely through the sections, a
block cut at a slant: smooth along z). Undoing both straightens the stack: on a real,
registered FIB-SEM stack the content moves ~0.27 px per section, 30 px over 120 sections.

So each parameter of the solved transforms (affine entries, mesh nodes) is split along z into a
smooth part, the content's motion, which is kept, and the rest, the misalignment, which is
undone. The smooth part is a Whittaker smoother (penalised second differences: the
Hodrick-Prescott filter): it follows a steady trend to both ends of the stack, a straight line
is all smooth, and it is one banded solve, linear in the number of sections. Its reach,
`window` sections, is a period: motion that varies over more sections than that is kept,
faster motion undone (half of each at exactly that period; λ = (window / 2π)⁴). Unless
given, it is chosen per stack from the translations by generalised cross-validation (GCV,
with the usual 1.4 factor against under-smoothing), among the windows whose smooth part takes
at most `LEAK_PX` of the misalignment beyond a straight line: large independent shifts give a
long window (little more than a straight line), a nearly aligned stack a short one (more of
the content's motion is kept).

What it cannot tell apart: a slow real drift of the microscope looks exactly like smooth
content motion and is kept, as is a steady shear of the whole stack; and the slow components
of random shifts (over 120 sections of ±15 px shifts, a straight line through them has a
slope of ~0.02 px per section) are taken for content motion. Only images are matched, and no
image says which is which.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg, sparse

from petavox.tasks.align.displacement import SectionAffines

GCV_FACTOR = 1.4  # modified GCV (Cummins, Filloon & Nychka 2001): plain GCV under-smooths
SHORTEST, LONGEST = 6.0, 2500.0  # sections: the windows GCV chooses from
#: px: how much of the misalignment the smooth part may take, RMS (its share of the jitter's
#: variance is the smoother's degrees of freedom over the sections). GCV alone chooses short
#: windows when its score is flat, and those take high-frequency misalignment for content
#: motion: the demo's adapted Rand error was 0.134 with GCV's own choice (a 49-section
#: window), 0.100 with 100 and 0.085 with 190
LEAK_PX = 0.5
CHOICES = 24
#: px per section: the prior scale of the content's mean motion, the RMS of what three real
#: 10 nm FIB-SEM stacks show: neuroproof_sample1 0.29, gala train 0.58, gala test 0.08
CONTENT_SLOPE = 0.4


def _second_differences(n: int) -> np.ndarray:
    """DᵀD (D: second differences along n sections) in upper banded storage (3, n)."""
    d = sparse.diags([1.0, -2.0, 1.0], [0, 1, 2], shape=(n - 2, n))
    squared = (d.T @ d).tocsr()
    bands = np.zeros((3, n))
    for k in range(3):
        bands[2 - k, k:] = squared.diagonal(k)
    return bands


def _stiffness(window: float) -> float:
    """λ whose smoother passes half of a motion with a period of `window` sections: its gain
    is 1 / (1 + λ ω⁴) at ω = 2π / window (in radians per section)."""
    return (window / (2 * np.pi)) ** 4


def smooth_part(series: np.ndarray, window: float) -> np.ndarray:
    """The Whittaker-smoothed `series` along axis 0 (sections): motion slower than a period of
    `window` sections."""
    n = len(series)
    if n < 3:
        return series.astype(np.float64)  # fewer than 3 sections: any motion is a straight line
    flat = series.reshape(n, -1).astype(np.float64)
    bands = _stiffness(window) * _second_differences(n)
    bands[2] += 1.0  # I + λ DᵀD
    smooth = linalg.solveh_banded(bands, flat, check_finite=False)
    return smooth.reshape(series.shape)


def choose_window(series: np.ndarray) -> float:
    """The window (sections) with the least modified GCV score for the translations `series`
    (sections, 2) among those whose smooth part takes at most `LEAK_PX` of the misalignment."""
    n = len(series)
    if n < 4:
        return LONGEST
    flat = series.reshape(n, -1).astype(np.float64)
    eigen = np.clip(linalg.eigvals_banded(_second_differences(n)), 0.0, None)
    best, score = LONGEST, np.inf
    for window in np.geomspace(SHORTEST, LONGEST, CHOICES):
        trace = float((1.0 / (1.0 + _stiffness(float(window)) * eigen)).sum())
        rss = float(((flat - smooth_part(flat, window)) ** 2).sum())
        jitter = rss / max(n - trace, 1.0)  # per section, summed over the components
        if np.sqrt(jitter * max(trace - 2.0, 0.0) / n) > LEAK_PX:
            continue  # the smooth part would take up too much of the misalignment
        gcv = n * rss / max(n - GCV_FACTOR * trace, 1e-9) ** 2
        if gcv < score:
            best, score = float(window), gcv
    return best


def trend_weight(translations: np.ndarray, smooth: np.ndarray) -> float:
    """How much of the smooth part's straight-line trend to keep, in (0, 1]: the trend is a
    slope measured through the jitter, with a standard error of σ/√(Σ(z − z̄)²); one whose
    error is large against the content motion real stacks show (`CONTENT_SLOPE`) is mostly
    the jitter's own and is shrunk towards no motion (the Bayes estimate with that prior)."""
    n = len(translations)
    z = np.arange(n) - (n - 1) / 2
    jitter = float(((translations - smooth) ** 2).mean())  # per component
    error = jitter / float((z**2).sum())
    return CONTENT_SLOPE**2 / (CONTENT_SLOPE**2 + error)


def _shrink_trend(smooth: np.ndarray, weight: float) -> np.ndarray:
    n = len(smooth)
    z = (np.arange(n) - (n - 1) / 2).reshape((n,) + (1,) * (smooth.ndim - 1))
    slope = (z * smooth).sum(axis=0) / float((z**2).sum())
    return smooth - (1.0 - weight) * slope * z


def keep_content_motion(
    affines: SectionAffines, nodes: np.ndarray, window: float | str | None
) -> tuple[SectionAffines, np.ndarray, float | None]:
    """The transforms less their smooth part along z over `window` sections ("auto": chosen
    from the translations; None: as solved, every motion undone), and the window used."""
    if window is None:
        return affines, nodes, None
    translations = affines.matrices[:, :, 2]
    window = choose_window(translations) if window == "auto" else float(window)
    if len(nodes) < 3:
        return affines, nodes, window
    smooth_matrices = smooth_part(affines.matrices, window)
    weight = trend_weight(translations, smooth_matrices[:, :, 2])
    matrices = affines.matrices - _shrink_trend(smooth_matrices, weight)
    kept = SectionAffines(affines.centre, affines.scale, np.ascontiguousarray(matrices))
    return kept, nodes - _shrink_trend(smooth_part(nodes, window), weight), window
