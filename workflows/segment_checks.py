"""The checks of `segment`: inputs it refuses before planning, and two guards (warnings only)
against a boundary map that merges everything into one segment.

Before the segment step dispatches, `check_boundary` samples the input (`tasks.core.sampling`)
and warns when its share of membrane voxels is far from what the model predicted on its own
training data (`info["petavox_model"]`, written by `infer`), or, without that record, when it
is implausibly faint or dense. After the relabel into the output, `LargestSegments` sums each
chunk's largest labels (`tasks.segment.label_counts`) and `report_sizes` says how much of the
labelled volume the largest segment holds, loudly when it is most of it. Both only warn.
"""

from __future__ import annotations

import heapq
import logging
import math
from dataclasses import dataclass
from functools import partial

import numpy as np

from petavox.tasks.core.errors import InputError, LayerMismatchError, PetavoxError
from petavox.tasks.core.geometry import Chunk, Vec3
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.sampling import sample_values, unit_values
from petavox.tasks.evaluate.layer_figures import DOMINANT
from petavox.tasks.ml.examples import SYNAPSE_TARGETS
from petavox.tasks.segment.label_counts import LabelCounts
from petavox.workflows.domain_fit import INFO_KEY
from petavox.workflows.plan import DriverHooks

log = logging.getLogger("petavox")

MEMBRANE = 0.5  # a voxel is membrane at boundary ≥ this (affinities: 1 − their mean)
TOLERANCE = 2.0  # a sampled fraction within this factor of the model's own is fine
FAINT, DENSE = 0.03, 0.6  # without the model's figure: plausible membrane fractions
CAPACITY = 4096  # segment ids the driver keeps counts of
RETRAIN = 'README "New data"'

#: the parameter that sets how much merges (merge_threshold, boundary_threshold) and its value
Knob = tuple[str, float]


def check_input(layer: Layer) -> None:
    record = layer.info.get(INFO_KEY)
    if isinstance(record, dict) and record.get("target") in SYNAPSE_TARGETS:
        raise LayerMismatchError(
            f"{layer.url} is a cleft probability map (made by infer with the cleft model "
            f"{record.get('model')}); segment takes a boundary map or affinities: infer with a "
            "boundary model (the default) and segment that; the cleft map is for synapse detection"
        )
    if layer.num_channels not in (1, 3):
        raise LayerMismatchError(
            f"{layer.url} has {layer.num_channels} channels; segment takes a boundary map "
            "(1 channel) or affinities (3 channels)"
        )
    if layer.dtype.name not in ("uint8", "float32", "float64"):
        raise LayerMismatchError(
            f"{layer.url} holds {layer.dtype}; segment takes float32 in [0, 1] or uint8 0-255"
        )


def check_halo(mode: str, halo_xyz: tuple[int, int, int]) -> Vec3:
    """The halo the chunks are read with: none in cc mode, ≥ 2 per axis in watershed mode."""
    if mode != "watershed":
        return Vec3(0, 0, 0)
    halo = Vec3.of(halo_xyz)
    if min(halo) < 2:
        raise InputError(
            f"segment halo {tuple(halo)}: watershed mode matches objects across chunk faces "
            "in the halo, so every axis needs a halo of at least 2 (16 or more is better)"
        )
    return halo


def pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def membrane_stats(values: np.ndarray) -> tuple[float, float]:
    """(share of voxels with boundary ≥ 0.5, mean boundary) of sampled values (n, channels):
    1 channel is a boundary map; 3 are affinities, whose boundary is 1 − their mean."""
    unit = unit_values(values)
    boundary = unit[:, 0] if unit.shape[1] == 1 else 1.0 - unit.mean(axis=1)
    finite = boundary[np.isfinite(boundary)]
    mean = float(finite.mean()) if finite.size else math.nan
    return float(np.mean(boundary >= MEMBRANE)), mean


def model_record(info: dict) -> tuple[float | None, str | None]:
    """(membrane fraction the model predicted on its training data, model URL) from the info's
    ``petavox_model`` record; None for what it does not hold (or holds as no usable number)."""
    record = info.get(INFO_KEY)
    if not isinstance(record, dict):
        return None, None
    fraction, model = record.get("membrane_fraction"), record.get("model")
    usable = isinstance(fraction, int | float) and not isinstance(fraction, bool)
    usable = usable and math.isfinite(fraction) and fraction > 0
    return (float(fraction) if usable else None), (model if isinstance(model, str) else None)


def boundary_warning(
    url: str, fraction: float, mean: float, expected: float | None, model: str | None, knob: Knob
) -> str | None:
    """The warning for a sampled membrane `fraction`, or None when it looks right: within a
    factor 2 of the model's `expected` fraction, or without one within 3-60 %."""
    name, value = knob
    seen = (
        f"boundary map {url}: {pct(fraction)} of sampled voxels are membrane "
        f"(≥ {MEMBRANE}; mean boundary {mean:.2f})"
    )
    if expected is not None:
        if expected / TOLERANCE <= fraction <= expected * TOLERANCE:
            return None
        faint = fraction < expected
        return (
            f"{seen} where the model{f' {model}' if model else ''} predicted {pct(expected)} "
            "on its training data: the input looks unlike the training data (contrast or voxel "
            f"size); expect {'merged' if faint else 'split'} neurons. Check infer's "
            f"intensity/resampling note, retrain on this data ({RETRAIN}) or "
            f"{'lower' if faint else 'raise'} {name} (now {value:g})"
        )
    if FAINT <= fraction <= DENSE:
        return None
    if fraction < FAINT:
        return (
            f"{seen}, under {pct(FAINT)}: the map is faint or gappy; expect merged neurons "
            "(one segment may fill most of the volume). Check the map in a viewer, retrain on "
            f"this data ({RETRAIN}) or lower {name} (now {value:g})"
        )
    return (
        f"{seen}, over {pct(DENSE)}: most voxels read as membrane; expect split neurons. Check "
        "that high values mean membrane (affinities: high = connected), retrain on this data "
        f"({RETRAIN}) or raise {name} (now {value:g})"
    )


def check_boundary(layer: Layer, knob: Knob, fill_missing: bool = False) -> list[str]:
    """The segment step's `before` hook: sample the input, return the warning if any. A sample
    it cannot read (missing or bad chunks) is no warning: the tasks report those."""
    try:
        values = sample_values(layer, fill_missing)
    except PetavoxError as exc:
        log.info("boundary map %s not checked: %s", layer.url, exc)
        return []
    fraction, mean = membrane_stats(values)
    expected, model = model_record(layer.info)
    log.info(
        "boundary map %s: %s of %d sampled voxels are membrane (model: %s)",
        layer.url,
        pct(fraction),
        len(values),
        "unrecorded" if expected is None else pct(expected),
    )
    warning = boundary_warning(layer.url, fraction, mean, expected, model, knob)
    return [warning] if warning else []


@dataclass(frozen=True)
class SegmentSizes:
    """What `report_sizes` says, for callers (`StageReport.summary` of the output's relabel).

    `largest` is a lower bound of the largest segment's voxels unless `exact`; `segments` (the
    number of distinct segments) is given only when known exactly."""

    labelled: int  # non-zero voxels of the chunks counted
    largest_id: int
    largest: int
    exact: bool
    segments: int | None
    chunks: int  # chunks counted (those relabelled in this run)
    total_chunks: int

    @property
    def share(self) -> float:
        return self.largest / self.labelled if self.labelled else 0.0


class LargestSegments:
    """Voxel counts per segment id summed over chunks from each chunk's top-k labels
    (`LabelCounts`), in bounded memory: at most 2 × `capacity` ids, the smallest dropped down to
    `capacity` when there are more.

    The approximation: a count only ever adds true voxels of its id, so every count is a lower
    bound. The largest segment's count is exact whenever it is in the top-k of every chunk where
    it has voxels and was never dropped; `exact` says that every chunk listed all its labels and
    none was dropped, so that every count (and the number of ids, over all chunks) is exact.
    """

    def __init__(self, total_chunks: int, capacity: int = CAPACITY) -> None:
        self.total_chunks, self.capacity = total_chunks, capacity
        self.reset()

    def reset(self) -> None:
        self.counts: dict[int, int] = {}
        self.labelled = self.chunks = 0
        self.exact = True

    def add(self, chunk: Chunk, result: LabelCounts) -> None:
        """An `on_result` hook: one chunk's top labels."""
        self.chunks += 1
        self.labelled += result.labelled
        self.exact = self.exact and result.complete
        for segment, count in zip(result.ids, result.counts, strict=True):
            self.counts[segment] = self.counts.get(segment, 0) + count
        if len(self.counts) > 2 * self.capacity:
            kept = heapq.nlargest(self.capacity, self.counts.items(), key=lambda item: item[1])
            self.counts = dict(kept)
            self.exact = False

    def sizes(self) -> SegmentSizes | None:
        """The figures so far; None before any chunk."""
        if not self.chunks:
            return None
        largest_id, largest = max(self.counts.items(), key=lambda i: (i[1], -i[0]), default=(0, 0))
        everything = self.exact and self.chunks == self.total_chunks
        return SegmentSizes(
            labelled=self.labelled,
            largest_id=largest_id,
            largest=largest,
            exact=self.exact,
            segments=len(self.counts) if everything else None,
            chunks=self.chunks,
            total_chunks=self.total_chunks,
        )


def sizes_line(url: str, sizes: SegmentSizes) -> str:
    """What the end of the stage prints, e.g. `segmentation URL: 412 segments; the largest (id
    7) holds 37.2 % of the labelled voxels`."""
    if not sizes.labelled:
        line = f"segmentation {url}: no labelled voxels"
    else:
        count = "" if sizes.segments is None else f"{sizes.segments} segments; "
        count = "1 segment; " if sizes.segments == 1 else count
        least = "" if sizes.exact else "at least "
        line = (
            f"segmentation {url}: {count}the largest (id {sizes.largest_id}) holds {least}"
            f"{pct(sizes.share)} of the labelled voxels"
        )
    if sizes.chunks < sizes.total_chunks:
        line += f" (counted over the {sizes.chunks} of {sizes.total_chunks} chunks written now)"
    return line


def dominance_warning(url: str, sizes: SegmentSizes, knob: Knob) -> str | None:
    """The warning when one segment holds more than half of the labelled voxels."""
    if sizes.share <= DOMINANT:
        return None
    name, value = knob
    return (
        f"segmentation {url}: one segment (id {sizes.largest_id}) holds {pct(sizes.share)} of "
        f"the labelled voxels: the boundary map is too faint or {name} (now {value:g}) too "
        'high. Lower it, or fix the boundary map (see the boundary check and README "Segmentation")'
    )


def report_sizes(url: str, knob: Knob, counter: LargestSegments) -> SegmentSizes | None:
    """The output relabel's `on_done` hook: print the largest segment's share (above any
    progress bar), warn when it dominates, return the figures; the counter starts over."""
    from tqdm import tqdm

    sizes = counter.sizes()
    counter.reset()
    if sizes is None:
        return None
    tqdm.write(sizes_line(url, sizes))
    warning = dominance_warning(url, sizes, knob)
    if warning:
        log.warning("%s", warning)
    return sizes


def size_hooks(url: str, knob: Knob, total_chunks: int) -> DriverHooks:
    """The hooks of the relabel that writes the output layer at `url`."""
    counter = LargestSegments(total_chunks)
    return DriverHooks(on_result=counter.add, on_done=partial(report_sizes, url, knob, counter))
