"""The run report written and printed: ``<output>/report/report.json``, ``index.html`` with
its PNGs beside it, and the lines `petavox run` prints at its end (what each stage made, the
warnings, the layers and the `petavox view` command)."""

from __future__ import annotations

import html
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from petavox.tasks.core import objects
from petavox.tasks.core.layers import read_info
from petavox.tasks.core.storage import StorageContext, join_url, local_path
from petavox.workflows.config import RunConfig
from petavox.workflows.plan import StageSteps
from petavox.workflows.provenance import software
from petavox.workflows.run_report import Section, build_report, plural, report_url
from petavox.workflows.view import ANNOTATIONS

PAGE, JSON = "index.html", "report.json"
STYLE = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
    "li{margin:.2em 0}.warning{color:#b00000;font-weight:bold}"
    "figure{display:inline-block;margin:.4em;vertical-align:top}"
    "img{max-width:520px;border:1px solid #ccc}figcaption{font-size:small}"
    "td{padding:.1em .8em}pre{background:#f4f4f4;padding:.6em;white-space:pre-wrap}"
)


@dataclass(frozen=True)
class ShownLayer:
    """A layer the run wrote, as `petavox view` takes it."""

    url: str
    kind: str  # image, segmentation or annotation
    detail: str

    @property
    def name(self) -> str:
        """The layer's folder; an annotation layer's `annotations` folder by the one above."""
        parts = self.url.rstrip("/").rsplit("/", 2)
        return parts[-2] if self.kind == "annotation" and parts[-1] == "annotations" else parts[-1]


def shown_layers(stages: Sequence[StageSteps], context: StorageContext) -> list[ShownLayer]:
    """The image, segmentation and annotation layers the stages wrote, in run order."""
    found: dict[str, ShownLayer] = {}
    for steps in stages:
        for url in dict.fromkeys(o.url for o in steps.outputs):
            info = read_info(url, context)
            if info is None:  # a folder of tables: its annotation layer, if it has one
                url = join_url(url, "annotations")
                info = read_info(url, context)
            if not info or url in found:
                continue
            if "scales" in info and info.get("type") in ("image", "segmentation"):
                found[url] = ShownLayer(url, info["type"], plural(len(info["scales"]), "mip"))
            elif info.get("@type") == ANNOTATIONS:
                found[url] = ShownLayer(url, "annotation", "synapse lines")
    return list(found.values())


def view_command(layers: Sequence[ShownLayer], config: RunConfig) -> str:
    """The `petavox view` command for the layers (local ones served on port 8000)."""
    paths = [local_path(layer.url) or layer.url for layer in layers]
    words = ["petavox", "view"]
    if any(local_path(layer.url) for layer in layers):
        words += ["--port", "8000"]
    if config.storage.s3_endpoint:
        words += ["--s3-endpoint", config.storage.s3_endpoint]
    return " ".join(shlex.quote(w) for w in [*words, *paths])


def write_run_report(config: RunConfig, stages: Sequence[StageSteps]) -> RunReport:
    """Build the report of `stages` (after they ran) and write it under the output."""
    context = config.storage.context()
    sections = build_report(config, list(stages))
    layers = shown_layers(stages, context)
    report = RunReport(
        output=config.output,
        url=report_url(config),
        sections=sections,
        layers=layers,
        view=view_command(layers, config),
    )
    for section in sections:
        for figure in section.figures:
            objects.put(report.url, figure.name, figure.png, context, "image/png")
    objects.put_json(report.url, JSON, report.to_dict(), context)
    page = report.html().encode()
    objects.put(report.url, PAGE, page, context, "text/html; charset=utf-8")
    return report


@dataclass(frozen=True)
class RunReport:
    output: str
    url: str
    sections: list[Section]
    layers: list[ShownLayer]
    view: str

    @property
    def page(self) -> str:
        return join_url(self.url, PAGE)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "software": software(),
            "stages": [s.to_dict() for s in self.sections],
            "layers": [vars(layer) for layer in self.layers],
            "view": self.view,
        }

    def lines(self) -> list[str]:
        """What the terminal shows at the end of the run."""
        out = ["what the stages made:"]
        for section in self.sections:
            if not section.lines and not section.warnings:
                continue
            out.append(f"  {section.label}")
            out += [f"    {line}" for line in section.lines]
            out += [f"    WARNING: {warning}" for warning in section.warnings]
        out.append("layers:")
        width = max((len(layer.name) for layer in self.layers), default=0)
        for layer in self.layers:
            out.append(f"  {layer.name:<{width}}  {layer.url}  ({layer.kind}, {layer.detail})")
        out.append(f"report: {self.page}")
        out.append(f"view: {self.view}")
        return out

    def html(self) -> str:
        e = html.escape
        parts = [
            f"<!doctype html><html><head><meta charset='utf-8'><title>petavox run report: "
            f"{e(self.output)}</title><style>{STYLE}</style></head><body>",
            f"<h1>petavox run report</h1><p>output: <code>{e(self.output)}</code></p>",
        ]
        for n, section in enumerate(self.sections, start=1):
            parts.append(f"<h2 id='stage-{n}'>{n}. {e(section.label)}</h2>")
            parts += [f"<p class='warning'>WARNING: {e(w)}</p>" for w in section.warnings]
            if section.lines:
                parts.append("<ul>" + "".join(f"<li>{e(x)}</li>" for x in section.lines) + "</ul>")
            for f in section.figures:
                parts.append(
                    f"<figure><img src='{e(f.name)}' alt='{e(f.caption)}'>"
                    f"<figcaption>{e(f.caption)}</figcaption></figure>"
                )
        parts.append("<h2>Layers</h2><table>")
        for layer in self.layers:
            parts.append(f"<tr><td>{e(layer.kind)}</td><td><code>{e(layer.url)}</code></td></tr>")
        parts.append(f"</table><h2>View</h2><pre>{e(self.view)}</pre></body></html>")
        return "\n".join(parts)
