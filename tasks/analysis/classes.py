"""How many segments of each class there are and how big: counts, total and quantiles of the
volume (µm³), from the classes and morphology tables read partition by partition."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

QUANTILES = (0.1, 0.5, 0.9)


def class_sizes(parts: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """Each class's volumes (µm³), from (class names, volumes) per partition."""
    found: dict[str, list[np.ndarray]] = {}
    for names, volumes in parts:
        names, volumes = np.asarray(names).astype(str), np.asarray(volumes, np.float64)
        for name in np.unique(names).tolist():
            found.setdefault(name, []).append(volumes[names == name])
    return {name: np.concatenate(v) for name, v in sorted(found.items())}


def class_summary(sizes: dict[str, np.ndarray]) -> dict[str, dict]:
    """Per class: segments, total volume and the volume's quantiles."""
    out = {}
    for name, volumes in sizes.items():
        q = np.quantile(volumes, QUANTILES) if len(volumes) else [float("nan")] * len(QUANTILES)
        out[name] = {
            "segments": len(volumes),
            "volume_um3": float(volumes.sum()),
            **{f"volume_p{round(100 * p)}_um3": float(v) for p, v in zip(QUANTILES, q)},
        }
    return out
