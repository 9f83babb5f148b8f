"""What `petavox plan` prints: a table per stage (and step) with a total, the dollars, and where
every figure and price came from; or all of it as JSON."""

from __future__ import annotations

from typing import Any

from petavox.workflows.costs import figures as fig
from petavox.workflows.costs import storage
from petavox.workflows.costs.cluster import Cluster
from petavox.workflows.costs.estimate import StageEstimate, StepEstimate, Totals, run_totals
from petavox.workflows.costs.prices import Prices, dollars


def plan_report(stages: list[StageEstimate], cluster: Cluster, prices: Prices) -> dict[str, Any]:
    """Everything the plan estimated, as plain data (the JSON form)."""
    total = run_totals(stages)
    used = {s.figure.job: s.figure for st in stages for s in st.steps if s.figure is not None}
    return {
        "cluster": {"cores": cluster.cores, "gpus": cluster.gpus, "source": cluster.source},
        "stages": [
            {
                "name": stage.name,
                "totals": stage.totals.to_dict(),
                "steps": [_step(step) for step in stage.steps],
            }
            for stage in stages
        ],
        "total": total.to_dict(),
        "dollars": {name: dollars(p, total) for name, p in prices.providers().items()},
        "prices": prices.model_dump(),
        "figures": {
            job: {"mvx_per_core_s": f.mvx_per_core_s, "source": str(f.source), "note": f.note}
            for job, f in sorted(used.items())
        },
        "runner": {
            "task_overhead_s": fig.TASK_OVERHEAD_S,
            "step_overhead_s": fig.STEP_OVERHEAD_S,
            "cold_start_s": fig.COLD_START_S,
            "source": str(fig.RUNNER),
        },
        "notes": [storage.RATIO_NOTE],
    }


def _step(step: StepEstimate) -> dict[str, Any]:
    shape = step.shape
    return {
        "label": step.label,
        "step": step.step,
        "job": shape.job,
        "basis": shape.basis,
        "basis_voxels": shape.basis_voxels,
        "totals": step.totals.to_dict(),
        "traffic": [t.to_dict() for t in shape.traffic],
        "notes": step.notes,
    }


# ---- the table ------------------------------------------------------------------------------
def count(n: float) -> str:
    """1234 → "1.23 k"; small counts as they are."""
    for size, unit in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g}" if isinstance(n, float) else str(n)


def size(n: float) -> str:
    """Bytes in binary units."""
    for power, unit in ((5, "PiB"), (4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if abs(n) >= 1024**power:
            return f"{n / 1024**power:.3g} {unit}"
    return f"{int(n)} B"


def duration(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.3g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.2g} s"


COLUMNS = (
    ("tasks", lambda t: count(t.tasks)),
    ("voxels", lambda t: count(t.voxels)),
    ("read", lambda t: size(t.bytes_read)),
    ("written", lambda t: size(t.bytes_written)),
    (
        "objects",
        lambda t: (
            count(t.objects) + (f" +~{count(t.objects_estimated)}" * bool(t.objects_estimated))
        ),
    ),
    ("GET", lambda t: count(t.gets)),
    ("PUT", lambda t: count(t.puts)),
    ("LIST", lambda t: count(t.lists)),
    ("mem/task", lambda t: size(t.peak_memory)),
    ("core-h", lambda t: f"{t.core_hours:.3g}"),
    ("GPU-h", lambda t: f"{t.gpu_hours:.3g}"),
    ("wall", lambda t: duration(t.seconds)),
)


def _rows(stages: list[StageEstimate], steps: bool) -> list[list[str]]:
    rows = []
    for stage in stages:
        rows.append([stage.name, *(fmt(stage.totals) for _, fmt in COLUMNS)])
        if steps and len(stage.steps) > 1:
            for step in stage.steps:
                rows.append(["  " + step.label[:44], *(fmt(step.totals) for _, fmt in COLUMNS)])
    total: Totals = run_totals(stages)
    rows.append(["total", *(fmt(total) for _, fmt in COLUMNS)])
    return rows


def table(stages: list[StageEstimate], *, steps: bool = False) -> str:
    header = ["stage", *(name for name, _ in COLUMNS)]
    rows = [header, *_rows(stages, steps)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]
        lines.append("  ".join(cells))
        if n == 0 or n == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def money(value: float) -> str:
    """$ to the cent, with thousands separated; under a cent, two significant digits."""
    return f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.2g}"


def dollars_table(report: dict[str, Any]) -> str:
    lines = ["cost in US$    compute spot  compute on demand      requests  storage/month"]
    for name, d in report["dollars"].items():
        lines.append(
            f"{name.upper():<14} {money(d['compute_spot']):>12}  "
            f"{money(d['compute_on_demand']):>17}  {money(d['requests']):>12}  "
            f"{money(d['storage_per_month']):>13}"
        )
    return "\n".join(lines)


def sources(report: dict[str, Any]) -> str:
    lines = ["figures (MVx/s per core of each step's basis voxels):"]
    for job, f in report["figures"].items():
        lines.append(f"  {job}: {f['mvx_per_core_s']:g}  ({f['source']})")
    runner = report["runner"]
    lines.append(
        f"  runner: {runner['task_overhead_s'] * 1000:g} ms per task, "
        f"{runner['step_overhead_s'] * 1000:g} ms per step, {runner['cold_start_s']:g} s worker "
        f"start-up  ({runner['source']})"
    )
    lines.append(f"prices: {report['prices']['date']} (workflows/costs/prices.py names the pages)")
    return "\n".join(lines)


def print_plan(report: dict[str, Any], stages: list[StageEstimate], steps: bool) -> None:
    cluster = report["cluster"]
    gpus = f", {cluster['gpus']} GPUs" if cluster["gpus"] else ""
    print(f"cluster: {cluster['cores']} cores{gpus} ({cluster['source']})")
    print(table(stages, steps=steps))
    print(
        "objects: exact (volume chunks and shard files) +~ estimated (work files, meshes, "
        "skeletons, tables); PUTs include the ledger's segments"
    )
    print(dollars_table(report))
    print(sources(report))
