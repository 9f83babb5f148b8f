"""What `petavox train` records about its training data in the model (`ModelDomain`): voxel
size, intensity statistics, and how much of it the trained model calls boundary."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.infer.domain import ModelDomain

LAYER_SCHEMES = ("file://", "s3://", "gs://")


def is_layer(source: str) -> bool:
    """A precomputed layer URL, or a local folder holding a precomputed `info` file."""
    return source.startswith(LAYER_SCHEMES) or (Path(source) / "info").is_file()


def layers_resolution(
    sources: str | Sequence[str], context: StorageContext
) -> tuple[float, float, float] | None:
    """The mip-0 resolution (nm, x,y,z) shared by the raw layers among `sources`; None when no
    source is a layer; an InputError when layers disagree (the model would learn two scales)."""
    from petavox.tasks.core.layers import Layer

    found = {
        tuple(float(v) for v in Layer.open(src, context).resolution(0))
        for src in ([sources] if isinstance(sources, str) else sources)
        if is_layer(src)
    }
    if len(found) > 1:
        raise InputError(
            f"the raw layers have different voxel sizes {sorted(found)} nm; resample them to one "
            "(downsample) or train one model per voxel size"
        )
    return found.pop() if found else None  # type: ignore[return-value]


def training_domain(
    raws: Sequence[np.ndarray], voxel_nm: Sequence[float] | None, membrane_fraction: float | None
) -> ModelDomain:
    """What the model records about its training data: voxel size, intensity mean and standard
    deviation (raw / 255, over every training voxel), and the share it predicts as boundary
    (None for a model that predicts no boundary: clefts)."""
    count = sum(r.size for r in raws)
    mean = sum(float(r.mean(dtype=np.float64)) * r.size for r in raws) / count / 255
    square = sum(float(np.square(r, dtype=np.float64).mean()) * r.size for r in raws) / count
    std = math.sqrt(max(square / 255**2 - mean**2, 0.0))
    return ModelDomain(
        voxel_nm=tuple(float(v) for v in voxel_nm) if voxel_nm else None,  # type: ignore[arg-type]
        intensity=(round(mean, 6), round(std, 6)),
        membrane_fraction=None if membrane_fraction is None else round(membrane_fraction, 6),
    )


def describe_domain(domain: ModelDomain) -> str:
    """One line on what the model records, and what is missing."""
    assert domain.intensity is not None
    voxel = (
        "x".join(f"{v:g}" for v in domain.voxel_nm) + " nm voxels"
        if domain.voxel_nm
        else "no voxel size (give --voxel-nm, or train from layers: infer cannot resample)"
    )
    mean, std = domain.intensity
    share = domain.membrane_fraction
    return f"domain recorded: {voxel}; intensity mean {mean:.3f} std {std:.3f} (raw / 255)" + (
        "" if share is None else f"; {share:.1%} of training voxels predicted boundary"
    )
