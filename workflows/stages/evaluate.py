"""Plan the `evaluate` stage: stream contingency tables over chunks, write the scores as JSON."""

from __future__ import annotations

from petavox.tasks.core.objects import put_json
from petavox.tasks.core.storage import join_url
from petavox.tasks.evaluate.metrics import Contingency, scores
from petavox.workflows.catalog import Catalog
from petavox.workflows.config import EvaluateParams
from petavox.workflows.evaluate import TableSum, plan_evaluate
from petavox.workflows.runner import StagePlan


def report_location(root: str, report: str) -> tuple[str, str]:
    """(folder URL, key) of the scores file: a key under the run output, or a full URL."""
    url = report if "://" in report else join_url(root, report)
    folder, _, key = url.rpartition("/")
    return folder, key


def plan_evaluate_stage(params: EvaluateParams, catalog: Catalog) -> StagePlan:
    seg = catalog.layer(catalog.url(params.input))
    gt = catalog.layer(catalog.url(params.ground_truth))
    plan = plan_evaluate(seg, gt, tuple(params.ignore))
    folder, key = report_location(catalog.root, params.report)
    tables = TableSum()

    def write_report() -> None:
        result = scores(tables.total())
        put_json(
            folder,
            key,
            {
                "segmentation": seg.url,
                "ground_truth": gt.url,
                "ignore": list(params.ignore),
                **result.to_dict(),
            },
            catalog.context,
        )
        tables.tables = [Contingency.empty()]

    plan.label = f"evaluate {params.input} against {params.ground_truth}"
    plan.on_result, plan.finalize = tables.add, write_report
    plan.resources = params.resources
    return plan
