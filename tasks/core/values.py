"""Voxel value checks: float data must be finite, and in 0-1 where a stage reads it as such.

Integer data is never looked at (nothing to check, no cost). Float data costs one min and one
max pass (NaN propagates through both, ±Inf shows in them); only data that fails is read again,
to count and locate the bad values for the message. Stages call these per chunk on what they
read, so no whole-volume statistics are needed before a run.
"""

from __future__ import annotations

import numpy as np

from petavox.tasks.core.errors import ValueRangeError
from petavox.tasks.core.geometry import Box


def extremes(data: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of float data (NaN if any value is NaN); None for integer or empty data."""
    if data.dtype.kind != "f" or data.size == 0:
        return None
    return float(data.min()), float(data.max())


def nonfinite_counts(data: np.ndarray) -> tuple[int, int]:
    """(NaN, ±Inf) counts of `data`; (0, 0) for integer data, without reading it."""
    if data.dtype.kind != "f":
        return 0, 0
    return int(np.count_nonzero(np.isnan(data))), int(np.count_nonzero(np.isinf(data)))


def _sections(zs: np.ndarray) -> str:
    if len(zs) == 1:
        return f"section {zs[0]}"
    if zs[-1] - zs[0] + 1 == len(zs):
        return f"sections {zs[0]}-{zs[-1]}"
    return f"{len(zs)} sections between {zs[0]} and {zs[-1]}"


def describe_nonfinite(data: np.ndarray, box: Box) -> str:
    """E.g. '3 NaN and 1 infinite values in sections 10-17 (first at voxel x,y,z 4,5,10)' for
    float data (x,y,z or x,y,z,c) holding the voxels of `box`; coordinates are `box`'s."""
    nan, inf = nonfinite_counts(data)
    kinds = " and ".join(k for k, n in ((f"{nan} NaN", nan), (f"{inf} infinite", inf)) if n)
    bad = ~np.isfinite(data)
    if bad.ndim == 4:
        bad = bad.any(axis=3)
    zs = np.flatnonzero(bad.any(axis=(0, 1))) + box.start[2]
    flat = int(np.argmax(bad.ravel(order="F")))  # lowest z, then y, then x
    first = [int(i) + s for i, s in zip(np.unravel_index(flat, bad.shape, order="F"), box.start)]
    noun = "value" if nan + inf == 1 else "values"
    where = ",".join(map(str, first))
    return f"{kinds} {noun} in {_sections(zs)} (first at voxel x,y,z {where})"


def check_finite(data: np.ndarray, where: str, box: Box, fix: str) -> None:
    """Refuse NaN and ±Inf in float `data`, the voxels of `box` read from `where`."""
    found = extremes(data)
    if found is not None and not np.isfinite(found).all():
        raise ValueRangeError(f"{where}: {describe_nonfinite(data, box)}, box {box}; {fix}")


def check_unit_range(
    data: np.ndarray, where: str, box: Box, fix: str, finite_fix: str | None = None
) -> None:
    """Refuse float `data` (the voxels of `box`) outside [0, 1] (`fix`) or not finite
    (`finite_fix`, default `fix`)."""
    found = extremes(data)
    if found is None:
        return
    if not np.isfinite(found).all():
        problem = describe_nonfinite(data, box)
        raise ValueRangeError(f"{where}: {problem}, box {box}; {finite_fix or fix}")
    lo, hi = found
    if lo < 0 or hi > 1:
        outside = int(np.count_nonzero((data < 0) | (data > 1)))
        raise ValueRangeError(
            f"{where}: {outside} of {data.size} values in box {box} lie outside 0-1 "
            f"(min {lo:g}, max {hi:g}); {fix}"
        )


def check_values(
    data: np.ndarray, layer_url: str, box: Box, stage: str, unit_range: bool = False
) -> None:
    """Check what a stage read from an input layer: finite floats, and in 0-1 if `unit_range`.

    Errors name the stage, the layer and the box, so a user knows what to clean or rescale.
    """
    where = f"{stage} input {layer_url}"
    finite_fix = f"{stage} needs finite values: clean the layer (replace NaN/Inf) and run again"
    if unit_range:
        fix = (
            f"{stage} reads float values as 0-1 (uint8 as 0-255): rescale the layer to 0-1, "
            "or write it as uint8"
        )
        check_unit_range(data, where, box, fix, finite_fix)
    else:
        check_finite(data, where, box, finite_fix)
