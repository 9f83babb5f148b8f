"""The scores file of the `evaluate` stage: where it goes, its contents, and reading it back."""

from __future__ import annotations

import json
from typing import Any

from petavox.tasks.core.objects import get, put_json
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.evaluate.metrics import Scores


def report_location(root: str, report: str) -> tuple[str, str]:
    """(folder URL, key) of the scores file: a key under the run output, or a full URL."""
    url = report if "://" in report else join_url(root, report)
    folder, _, key = url.rpartition("/")
    return folder, key


def write_report(
    folder: str,
    key: str,
    *,
    segmentation: str,
    ground_truth: str,
    ignore: list[int],
    scores: Scores,
    context: StorageContext,
) -> None:
    record = {
        "segmentation": segmentation,
        "ground_truth": ground_truth,
        "ignore": ignore,
        **scores.to_dict(),
    }
    put_json(folder, key, record, context)


def read_report(folder: str, key: str, context: StorageContext) -> dict[str, Any] | None:
    """The scores as written (with `arand`, `voi_split`, `voi_merge`), or None if absent."""
    data = get(folder, key, context)
    return json.loads(data) if data else None
