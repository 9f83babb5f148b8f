"""`infer` fits the input to the model's training domain, and says so.

The model records its training voxel size and intensity statistics (`ModelDomain`). Two
corrections follow, the same for every task:

- resampling to the training voxel size, decided when the stage is planned (it needs only the
  input's resolution, known even for a layer an earlier stage of the run will write);
- an intensity map onto the training mean and standard deviation, decided on the driver just
  before the first task (`intensity_binding`): it samples the input (`sample_values`, a few
  reads), which an earlier stage of the same run may only then have written.

Both are printed for the operator; what cannot be corrected is a warning. The stage's identity
holds the rules (`normalise`, `resample`) and the resampling factor; the intensity map is a
function of the input's data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from petavox.tasks.core.layers import Layer
from petavox.tasks.core.sampling import sample_values, unit_values
from petavox.tasks.infer.domain import (
    MAX_CONTRAST_GAIN,
    IntensityMap,
    ModelDomain,
    intensity_stats,
    resampling_scale,
)
from petavox.tasks.infer.resample import Resampling

if TYPE_CHECKING:  # the segment stage imports this module
    from petavox.workflows.stages.segment import SegmentParams

log = logging.getLogger("petavox")

INFO_KEY = "petavox_model"  # the output layer's record of the model and the corrections
# beyond this the model's scale augmentation no longer covers the difference
UNFIXABLE_SCALE = 1.5


@dataclass(frozen=True)
class ScalePlan:
    """The resampling one infer stage applies (None: none), with a note and warnings."""

    resampling: Resampling | None
    note: str
    warnings: tuple[str, ...] = ()

    def spec(self) -> dict[str, Any]:
        """What enters the stage identity (nothing when the input is not resampled)."""
        return {} if self.resampling is None else {"model_scale": list(self.resampling.scale)}


def plan_scale(source: Layer, domain: ModelDomain, enabled: bool) -> ScalePlan:
    """Resample `source` to the model's voxel size when they differ beyond the tolerance."""
    layer_nm = tuple(float(v) for v in source.resolution(0))
    if domain.voxel_nm is None:
        return ScalePlan(
            None,
            "",
            (
                "the model records no training voxel size: the input is not resampled (train "
                "with --voxel-nm, or from layers, to record it)",
            ),
        )
    scale = resampling_scale(layer_nm, domain.voxel_nm)  # type: ignore[arg-type]
    sizes = f"input voxels {_nm(layer_nm)}, the model's {_nm(domain.voxel_nm)}"
    if scale is None:
        return ScalePlan(None, f"{sizes}: not resampled (within ×1.2)")
    if not enabled:
        worst = max(max(s, 1 / s) for s in scale)
        warnings = (
            (
                f"{sizes} differ {worst:.2f}× and resample is off: expect a poor boundary "
                "map (set resample: auto)",
            )
            if worst > UNFIXABLE_SCALE
            else ()
        )
        return ScalePlan(None, f"{sizes}: not resampled (resample: off)", warnings)
    factor = ", ".join(f"{s:.2f}" for s in scale)
    return ScalePlan(
        Resampling(bounds=source.bounds(0), scale=scale),
        f"{sizes}: resampled in each task (× {factor} in x, y, z) and the prediction back",
    )


def fit_intensity(
    source: Layer, domain: ModelDomain, enabled: bool, fill_missing: bool = False
) -> tuple[IntensityMap, str, tuple[str, ...]]:
    """(map, note, warnings): the input's sampled mean and std onto the model's."""
    if domain.intensity is None:
        warning = (
            "the model records no training intensity statistics: the input is used as it is "
            "(a model from petavox train records them)"
        )
        return IntensityMap(), "", (warning,)
    found = intensity_stats(unit_values(sample_values(source, fill_missing)))
    wanted = domain.intensity
    figures = (
        f"input intensity mean {found[0]:.3f} std {found[1]:.3f}, the model's training data "
        f"{wanted[0]:.3f} / {wanted[1]:.3f} (raw / 255)"
    )
    if not enabled:
        return IntensityMap(), f"{figures}: not normalised (normalise: off)", ()
    mapping = IntensityMap.between(found, wanted)
    warnings: tuple[str, ...] = ()
    if found[1] * MAX_CONTRAST_GAIN < wanted[1]:
        warnings = (
            f"the input has almost no contrast (std {found[1]:.3f}): it cannot be stretched to "
            f"the model's {wanted[1]:.3f}; check the layer (blank? wrong channel or dtype?)",
        )
    if mapping.identity:
        return mapping, f"{figures}: close enough, not normalised", warnings
    return mapping, f"{figures}: normalised, {mapping}", warnings


def intensity_binding(
    source: Layer,
    domain: ModelDomain,
    enabled: bool,
    fill_missing: bool,
    then: Callable[[Any], AbstractContextManager[Any]] | None = None,
    notes: tuple[str, ...] = (),
) -> Callable[[Any], AbstractContextManager[Any]]:
    """A job binding that fits the intensity map on the driver, prints `notes` and its own
    note, logs warnings, and hands the job with its map on to `then` (e.g. the GPU actors)."""

    @contextmanager
    def bind(job: Any) -> Iterator[Any]:
        from tqdm import tqdm

        mapping, note, warnings = fit_intensity(source, domain, enabled, fill_missing)
        for line in (*notes, note):
            if line:
                tqdm.write(f"infer: {line}")
        for warning in warnings:
            log.warning("infer: %s", warning)
        fitted = replace(job, intensity=mapping)
        with (then or nullcontext)(fitted) as bound:
            yield bound

    return bind


TUNED_FIELDS = (
    "seeds",
    "seed_threshold",
    "seed_radius",
    "merge_threshold",
    "merge_size_penalty",
    "merge_size_floor",
)


def tuned_segment_fields(info: dict, fields_set: set[str], mode: str) -> dict[str, Any]:
    """The watershed parameters the model behind a boundary layer chose on held-out ground
    truth (`petavox train`/`tune`; `infer` copies them into the layer's info), for the fields a
    segment config leaves unset (`fields_set` holds those it sets: the config always wins)."""
    chosen = (info.get(INFO_KEY) or {}).get("segment") or {}
    if mode != "watershed":
        return {}
    return {k: chosen[k] for k in TUNED_FIELDS if k in chosen and k not in fields_set}


def with_model_defaults(params: SegmentParams, source: Layer) -> tuple[SegmentParams, str]:
    """The params with what the input's model recorded for the fields the config leaves unset
    (`tuned_segment_fields`), and a note for the stage's label ("" when nothing came from it)."""
    update = tuned_segment_fields(source.info, params.model_fields_set, params.mode)
    if not update:
        return params, ""
    tuned = type(params).model_validate({**params.model_dump(exclude_unset=True), **update})
    return tuned, ", " + ", ".join(f"{k} {v}" for k, v in update.items()) + " from the model"


def _nm(values: Any) -> str:
    return "×".join(f"{v:g}" for v in values) + " nm"
