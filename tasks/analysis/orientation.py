"""Is there a preferred direction among a set of axes (each a unit vector with no sign, as a
principal axis is)? Bingham's test of uniformity on the sphere, then the subset that departs.

The orientation tensor T = mean(a aᵀ) of n axes has eigenvalues 1/3 each for uniform axes;
Bingham's statistic S = (15 n / 2) Σ (λᵢ − 1/3)² is χ² with 5 degrees of freedom under
uniformity (Mardia & Jupp, Directional Statistics, 10.7.1). The preferred direction starts as
T's first eigenvector and is refined to that of the axes within `cone` degrees of it (the
others, if uniform, only pull it askew), until it settles. The subset is those axes. How often
uniform axes give as large a subset is found by Monte Carlo: the same search on `TRIALS` sets
of as many uniform axes (a binomial tail would ignore that the cone was put where the axes
are densest, and come out several times too small).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

TRIALS = 2000


@dataclass(frozen=True)
class Orientation:
    count: int
    direction: tuple[float, float, float]  # the aligned subset's axis (largest part > 0)
    eigenvalues: tuple[float, float, float]  # descending, summing to 1
    statistic: float  # Bingham's S
    p_value: float  # of S under uniform axes
    cone_degrees: float
    aligned: int  # axes within the cone of `direction`
    expected_aligned: float  # under uniformity
    aligned_p_value: float  # P(a subset as large | uniform), Monte Carlo

    def as_dict(self) -> dict:
        return asdict(self)


def orientation_test(axes: np.ndarray, cone: float = 20.0, trials: int = TRIALS) -> Orientation:
    """The tests on `axes` (n, 3), each normalised here (rows of zeros or NaN left out);
    `trials` uniform sets calibrate the subset's p-value."""
    a = np.asarray(axes, np.float64).reshape(-1, 3)
    norm = np.linalg.norm(a, axis=1)
    a = a[np.isfinite(norm) & (norm > 0)] / norm[np.isfinite(norm) & (norm > 0), None]
    n = len(a)
    if n < 3:
        nan = float("nan")
        return Orientation(n, (nan, nan, nan), (nan, nan, nan), nan, 1.0, cone, 0, 0.0, 1.0)
    values, direction = _principal(a)
    statistic = 15 * n / 2 * float(((values - 1 / 3) ** 2).sum())
    direction, aligned = _densest_cone(a, direction, np.cos(np.radians(cone)))
    return Orientation(
        count=n,
        direction=tuple(float(v) for v in direction),
        eigenvalues=tuple(float(v) for v in values),
        statistic=statistic,
        p_value=float(stats.chi2.sf(statistic, 5)),
        cone_degrees=cone,
        aligned=aligned,
        expected_aligned=n * (1 - np.cos(np.radians(cone))),
        aligned_p_value=_subset_p_value(n, aligned, cone, trials),
    )


def _densest_cone(a: np.ndarray, start: np.ndarray, cos: float) -> tuple[np.ndarray, int]:
    """The axis of the axes within the cone, moved there from `start` until it settles, and
    how many axes the cone then holds."""
    direction = start
    for _ in range(10):
        within = np.abs(a @ direction) >= cos
        if within.sum() < 3:
            break
        _, refined = _principal(a[within])
        if abs(refined @ direction) > 1 - 1e-12:
            break
        direction = refined
    return direction, int((np.abs(a @ direction) >= cos).sum())


def _subset_p_value(n: int, aligned: int, cone: float, trials: int = TRIALS) -> float:
    """P(the search finds `aligned` or more in its cone | n uniform axes), by simulation (a
    fixed seed: the same answer every time)."""
    rng = np.random.default_rng(0)
    cos = np.cos(np.radians(cone))
    hits = 0
    for _ in range(trials):
        v = rng.normal(size=(n, 3))
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        hits += _densest_cone(v, _principal(v)[1], cos)[1] >= aligned
    return (hits + 1) / (trials + 1)


def _principal(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The orientation tensor's eigenvalues (descending) and first eigenvector (its largest
    component positive) of unit axes `a`."""
    values, vectors = np.linalg.eigh(a.T @ a / len(a))
    first = vectors[:, 2] * np.sign(vectors[np.argmax(np.abs(vectors[:, 2])), 2])
    return values[::-1], first


def angle_degrees(a: np.ndarray, b: np.ndarray) -> float:
    """The angle between two axes (signs ignored), degrees."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    cos = abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.degrees(np.arccos(min(cos, 1.0))))
