"""The run report: what a person checks after each stage of a run, collected after `run` from
what the stages wrote (so a resumed run reports as fully as a fresh one).

Per stage: for every layer it wrote, a thumbnail of the middle section and a histogram (segment
sizes or values) with their figures (`tasks.evaluate.layer_figures`: one bounded read per
layer); then what the stage itself measured: the alignment's quality report, the evaluation's
scores, the synapse count per volume, the connectome's totals. A segmentation stage whose
largest segment holds more than half of the labelled voxels gets a warning. Written by
`report_page` as JSON and HTML under ``<output>/report/``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.layers import Layer, read_info
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.evaluate import layer_figures as figures
from petavox.workflows.config import RunConfig
from petavox.workflows.plan import StageSteps
from petavox.workflows.stages import stage_named

SEGMENTING = ("segment", "agglomerate")  # stages whose segmentations are checked for merges
MAX_TABLES = 1000  # synapse tables read for the count; beyond, an estimate from a spread sample


@dataclass(frozen=True)
class Figure:
    """A picture of the report: its file name in the report folder, caption and PNG bytes."""

    name: str
    caption: str
    png: bytes = field(repr=False)


@dataclass
class Section:
    """One stage's part of the report."""

    stage: str
    label: str
    stem: str  # start of its figures' file names (unique in the run)
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add_figure(self, name: str, caption: str, png: bytes) -> None:
        self.figures.append(Figure(f"{self.stem}-{name}.png", caption, png))

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "label": self.label,
            "lines": self.lines,
            "warnings": self.warnings,
            "figures": [{"file": f.name, "caption": f.caption} for f in self.figures],
            "data": self.data,
        }


def layer_name(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def pct(share: float) -> str:
    return f"{100 * share:.1f} %"


def describe_layer(section: Section, url: str, primary: str, context: StorageContext) -> None:
    """Figures, thumbnail and histogram of one layer the stage wrote (`primary`: the name of
    the stage's `output`, the one warned about)."""
    layer = Layer.open(url, context)
    view = figures.overview(layer)
    name = layer_name(url)
    if layer.layer_type == "segmentation":
        found = figures.segment_sizes(view)
        section.lines.append(f"{name}: {sizes_text(found)}")
        if found["dominant"] and name == primary:
            section.warnings.append(
                f"{name}: one segment (id {found['largest_id']}) holds "
                f"{pct(found['largest_share'])} of the labelled voxels: most of the volume is "
                "merged into one object. The boundary map is too faint or the merge threshold "
                'too high (see README "Segmentation")'
            )
        caption = "segment sizes"
    else:
        found = figures.value_figures(view)
        if section.stage != "infer":  # a share above 0.5 means something in a probability map
            found.pop("above_half", None)
        section.lines.append(f"{name}: {values_text(found)}")
        caption = "values"
    section.data[name] = {"url": url, "layer_type": layer.layer_type, **found}
    png = figures.thumbnail_png(view, layer.layer_type)
    section.add_figure(f"{name}-section", f"{name}: middle section", png)
    png = figures.histogram_png(view, layer.layer_type, f"{name}: {caption}")
    section.add_figure(f"{name}-histogram", f"{name}: {caption} ({view.source})", png)


def sizes_text(found: dict[str, Any]) -> str:
    if not found["segments"]:
        return f"no labelled voxels ({found['source']})"
    return (
        f"{plural(found['segments'], 'segment')}, median {found['median_voxels']:,} voxels (90th "
        f"percentile {found['p90_voxels']:,}); the largest (id {found['largest_id']}) holds "
        f"{pct(found['largest_share'])} of the labelled voxels ({found['source']})"
    )


def values_text(found: dict[str, Any]) -> str:
    text = (
        f"values median {found['median']:g} (1-99 %: {found['p1']:g}-{found['p99']:g}), "
        f"{pct(found['zero_fraction'])} zero"
    )
    if "above_half" in found:
        text += f", {pct(found['above_half'])} at or above 0.5 (membrane)"
    return f"{text} ({found['source']})"


# ---- what stages measured themselves ---------------------------------------------------------
def read_json(url: str, context: StorageContext) -> Any:
    folder, _, key = url.rpartition("/")
    data = objects.get(folder, key, context)
    return json.loads(data) if data else None


def copy_png(section: Section, url: str, name: str, caption: str, context: StorageContext) -> None:
    folder, _, key = url.rpartition("/")
    data = objects.get(folder, key, context)
    if data:
        section.add_figure(name, caption, data)


def alignment(section: Section, steps: StageSteps, context: StorageContext) -> None:
    for plan in steps.plans:
        report = read_json(plan.report, context) if plan.report else None
        if not report or "summary" not in report:
            continue
        s = report["summary"]
        flagged = ", ".join(f"{z} ({' '.join(f)})" for z, f in s["flagged"].items()) or "none"
        section.lines.append(
            f"{s['sections']} sections: match residual median {s['residual_median_px']} px "
            f"(max {s['residual_max_px']} px), patches matched (median) {s['matched_median']}; "
            f"sections flagged: {flagged}"
        )
        section.data["alignment"] = s
        png = plan.report.rsplit(".", 1)[0] + ".png"
        copy_png(section, png, "alignment", "per-section alignment quality", context)


def scores(section: Section, steps: StageSteps, context: StorageContext) -> None:
    for plan in steps.plans:
        report = read_json(plan.report, context) if plan.report else None
        if not report:
            continue
        rows = report.get("scores", [report])  # a sweep holds one row per threshold
        for row in rows:
            if "arand" not in row:
                continue
            at = f"merge threshold {row['merge_threshold']:g}: " if "merge_threshold" in row else ""
            section.lines.append(
                f"{at}adapted Rand error {row['arand']:.4f}, VOI split {row['voi_split']:.4f}, "
                f"VOI merge {row['voi_merge']:.4f}"
            )
        section.data["scores"] = rows
        if "scores" in report:
            png = plan.report.rsplit(".", 1)[0] + ".png"
            copy_png(section, png, "threshold-sweep", "scores per merge threshold", context)


def synapse_count(section: Section, steps: StageSteps, context: StorageContext) -> None:
    """The synapse count (from the chunk tables' Parquet footers) and its density."""
    import pyarrow.parquet as pq

    (output,) = [o.url for o in steps.outputs if o.part == ""]
    keys = sorted(
        k for k in objects.list_keys(output, "chunks/", context) if k.endswith(".parquet")
    )
    chosen = (
        keys
        if len(keys) <= MAX_TABLES
        else [keys[int(i)] for i in np.linspace(0, len(keys) - 1, MAX_TABLES)]
    )
    rows = sum(
        pq.read_metadata(io.BytesIO(objects.get(output, k, context) or b"")).num_rows
        for k in chosen
    )
    count = rows * len(keys) / max(len(chosen), 1)
    about = "" if len(chosen) == len(keys) else "about "
    volume = volume_um3(steps.inputs, context)
    density = f", {count / volume:.2f} per µm³ of {volume:,.1f} µm³" if volume else ""
    section.lines.append(f"{about}{count:,.0f} synapses{density}")
    section.data["synapses"] = {"count": round(count), "exact": not about, "volume_um3": volume}


def volume_um3(inputs: Iterable[str], context: StorageContext) -> float | None:
    """The volume of the first input layer, in µm³."""
    for url in inputs:
        info = read_info(url, context)
        if info and "scales" in info:
            layer = Layer(url, info, context)
            nm3 = float(np.prod(layer.resolution(0))) * float(layer.bounds(0).shape.prod())
            return nm3 / 1e9
    return None


def connectome(section: Section, steps: StageSteps, context: StorageContext) -> None:
    from petavox.tasks.synapse.outputs import summarize

    for output in steps.outputs:
        s = summarize(output.url, top=5, context=context)
        strongest = ", ".join(f"{a} -> {b} ({n})" for a, b, n, _ in s["strongest"]) or "none"
        section.lines.append(
            f"{s['synapses']} synapses ({s['connections']} with both partners), "
            f"{s['segments']} segments with synapses, {s['edges']} edges; strongest: {strongest}"
        )
        section.data["connectome"] = s


def pyramid(section: Section, steps: StageSteps, context: StorageContext) -> None:
    for url in dict.fromkeys(o.url for o in steps.outputs):
        info = read_info(url, context) or {}
        scales = [s["key"] for s in info.get("scales", [])]
        section.lines.append(f"{layer_name(url)}: {len(scales)} mips ({', '.join(scales)} nm)")


def classes(section: Section, steps: StageSteps, context: StorageContext) -> None:
    """Segments per class and the cross-validated accuracy, from the classes' summary."""
    from petavox.tasks.classify.classify_jobs import SUMMARY_KEY

    output = steps.outputs[0]  # the classes table (the second: the segment properties)
    data = objects.get(join_url(output.url, output.part), SUMMARY_KEY, context)
    if data is None:
        return
    summary = json.loads(data)
    counts = ", ".join(f"{c} {n}" for c, n in sorted(summary["classes"].items()))
    section.lines.append(f"{summary['segments']} segments: {counts or 'none'}")
    scores = summary.get("cross_validation")
    if scores:
        section.lines.append(
            f"cross-validated accuracy {scores['accuracy']:.3f} ({scores['folds']} folds, "
            f"{scores['rows']} labelled segments)"
        )
    section.data["classes"] = summary


def products(section: Section, steps: StageSteps, context: StorageContext) -> None:
    for output in steps.outputs:
        section.lines.append(f"{output.part} of {output.url}")


STAGE_FIGURES: dict[str, Callable[[Section, StageSteps, StorageContext], None]] = {
    "align": alignment,
    "evaluate": scores,
    "agglomerate": scores,
    "synapses": synapse_count,
    "connectome": connectome,
    "downsample": pyramid,
    "mesh": products,
    "skeletonize": products,
    "morphology": products,
    "classify": classes,
}


def stage_section(steps: StageSteps, index: int, context: StorageContext) -> Section:
    """The report's section of one stage (numbered `index` in the run, for file names)."""
    label = steps.label.split(":")[0]  # the stage, without the step ("align raw: estimate ...")
    section = Section(stage=steps.name, label=label, stem=f"{index:02d}-{steps.name}")
    primary = ""
    if steps.name in SEGMENTING:
        params = stage_named(steps.name).params.model_validate(steps.params)
        primary = layer_name(params.output)  # type: ignore[attr-defined]
    for url in layer_outputs(steps, context):
        describe_layer(section, url, primary, context)
    extra = STAGE_FIGURES.get(steps.name)
    if extra is not None:
        extra(section, steps, context)
    return section


def layer_outputs(steps: StageSteps, context: StorageContext) -> list[str]:
    """The volume layers a stage wrote (whole layers, not pyramids or meshes of others)."""
    urls = []
    for output in steps.outputs:
        info = read_info(output.url, context) if output.part == "" else None
        if info and "scales" in info:
            urls.append(output.url)
    return urls


def build_report(config: RunConfig, stages: list[StageSteps]) -> list[Section]:
    context = config.storage.context()
    return [stage_section(steps, i, context) for i, steps in enumerate(stages, start=1)]


def report_url(config: RunConfig) -> str:
    return join_url(config.output, "report")
