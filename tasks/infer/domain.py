"""What a model was trained on (voxel size, intensity statistics, how much it calls membrane),
and the two corrections `infer` makes from it: an intensity map and a resampling factor.

`petavox train` writes the domain into the ONNX file's metadata; `infer` reads it, measures the
input (`petavox.tasks.core.sampling`) and decides, before any task runs, to normalise the
input's intensities to the training statistics and to resample it to the training voxel size.
Both decisions are plain numbers that enter the stage's identity, so every task applies the
same correction whatever the chunking.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

Xyz = tuple[float, float, float]

VOXEL_KEY = "petavox.voxel_nm"  # "x,y,z" in nm
INTENSITY_KEY = "petavox.intensity"  # "mean,std" of the model input (raw / 255)
MEMBRANE_KEY = "petavox.membrane_fraction"  # share of training voxels predicted boundary
SEGMENT_KEY = "petavox.segment"  # JSON: segment parameters chosen on held-out ground truth

# below these the input is taken as it is: the model's own augmentation covers the difference
SCALE_TOLERANCE = 1.2  # voxel sizes within this factor of the model's are not resampled
CONTRAST_TOLERANCE = 1.1  # std ratio
BRIGHTNESS_TOLERANCE = 0.03  # mean difference, 0-1 units
MAX_CONTRAST_GAIN = 4.0  # an input flatter than this would be noise stretched, not contrast


@dataclass(frozen=True)
class ModelDomain:
    """A model's training domain; each part is None when the model does not record it."""

    voxel_nm: Xyz | None = None
    intensity: tuple[float, float] | None = None  # (mean, std) of raw / 255
    membrane_fraction: float | None = None  # voxels > 0.5 in its own prediction on training data
    segment: dict[str, Any] | None = None

    def metadata(self) -> dict[str, str]:
        """ONNX metadata entries (strings) for the recorded parts."""
        meta = {}
        if self.voxel_nm is not None:
            meta[VOXEL_KEY] = ",".join(f"{v:g}" for v in self.voxel_nm)
        if self.intensity is not None:
            meta[INTENSITY_KEY] = ",".join(f"{v:.6f}" for v in self.intensity)
        if self.membrane_fraction is not None:
            meta[MEMBRANE_KEY] = f"{self.membrane_fraction:.6f}"
        if self.segment is not None:
            meta[SEGMENT_KEY] = json.dumps(self.segment, sort_keys=True)
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelDomain:
        def floats(key: str) -> tuple[float, ...] | None:
            return tuple(float(v) for v in meta[key].split(",")) if meta.get(key) else None

        voxel, intensity = floats(VOXEL_KEY), floats(INTENSITY_KEY)
        membrane = floats(MEMBRANE_KEY)
        return cls(
            voxel_nm=voxel if voxel and len(voxel) == 3 else None,  # type: ignore[arg-type]
            intensity=intensity if intensity and len(intensity) == 2 else None,  # type: ignore[arg-type]
            membrane_fraction=membrane[0] if membrane else None,
            segment=json.loads(meta[SEGMENT_KEY]) if meta.get(SEGMENT_KEY) else None,
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what `infer` copies into the output layer's info)."""
        return {
            "voxel_nm": list(self.voxel_nm) if self.voxel_nm else None,
            "intensity": list(self.intensity) if self.intensity else None,
            "membrane_fraction": self.membrane_fraction,
            "segment": self.segment,
        }


def intensity_stats(values: np.ndarray) -> tuple[float, float]:
    """(mean, std) of image values already in 0-1 units."""
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std())


@dataclass(frozen=True)
class IntensityMap:
    """x → clip(scale · x + offset, 0, 1) on model input in 0-1: moves the input's mean and
    standard deviation onto the training data's."""

    scale: float = 1.0
    offset: float = 0.0

    @classmethod
    def between(cls, found: tuple[float, float], wanted: tuple[float, float]) -> IntensityMap:
        """The map taking (mean, std) `found` to `wanted`; identity within the tolerances or
        when the input has no contrast to stretch; the gain is capped at `MAX_CONTRAST_GAIN`."""
        (m_in, s_in), (m_out, s_out) = found, wanted
        if s_in <= 1e-6:
            return cls()
        scale = min(max(s_out / s_in, 1 / MAX_CONTRAST_GAIN), MAX_CONTRAST_GAIN)
        close = abs(m_out - m_in) <= BRIGHTNESS_TOLERANCE
        if close and max(scale, 1 / scale) <= CONTRAST_TOLERANCE:
            return cls()
        return cls(round(scale, 6), round(m_out - scale * m_in, 6))

    @property
    def identity(self) -> bool:
        return self.scale == 1.0 and self.offset == 0.0

    def apply(self, data: np.ndarray) -> np.ndarray:
        """float32 model input in 0-1 → mapped, in place when possible."""
        if self.identity:
            return data
        data = data * np.float32(self.scale)
        data += np.float32(self.offset)
        return np.clip(data, 0.0, 1.0, out=data)

    def __str__(self) -> str:
        return f"x · {self.scale:.3f} {'+' if self.offset >= 0 else '−'} {abs(self.offset):.3f}"


def resampling_scale(layer_nm: Xyz, model_nm: Xyz | None) -> Xyz | None:
    """Per axis, model voxels per layer voxel (layer nm / model nm), or None when every axis is
    within `SCALE_TOLERANCE` of the model's voxel size (or the model records none)."""
    if model_nm is None:
        return None
    scale = tuple(float(a) / float(b) for a, b in zip(layer_nm, model_nm))
    if all(abs(math.log(s)) <= math.log(SCALE_TOLERANCE) for s in scale):
        return None
    return scale  # type: ignore[return-value]
