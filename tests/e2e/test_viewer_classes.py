"""A classified segmentation in the real Neuroglancer (headless Chromium): the viewer reads the
segment properties `classify` wrote, and its segment list filtered by a class tag (``#large``)
lists only the segments of that class, each with its class and probability as its label."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import neuroglancer
import numpy as np
import pytest
from viewer import neuroglancer_browser

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.morphology.table_reads import read_dataset
from petavox.workflows.config import parse_config
from petavox.workflows.file_server import FileServer
from petavox.workflows.pipeline import run
from petavox.workflows.view import open_view_layers, viewer_state

pytestmark = pytest.mark.e2e

LIST_TIMEOUT_S = 60.0


def classified_copy(demo: Path, root: Path, ray_session) -> Path:
    """The demo's segmentation, copied, classified again by a size rule learnt from labels."""
    seg = root / "segmentation"
    shutil.copytree(demo / "segmentation", seg)
    table = read_dataset(seg / "morphology")
    median = np.median(table["voxels"])
    rows = [
        f"{i},{'large' if v > median else 'small'}"
        for i, v in zip(*map(table.get, ("segment_id", "voxels")))
    ]
    (root / "labels.csv").write_text("segment_id,class\n" + "\n".join(rows) + "\n")
    stage = {"stage": "classify", "input": "segmentation", "labels": str(root / "labels.csv")}
    # the demo classified it with the built-in model: these labels replace its classes
    stages = [{**stage, "folds": 3}]
    config = parse_config({"output": f"file://{root}", "stages": stages, "overwrite": True})
    run(config, session=ray_session, progress=False)
    return seg


# each entry's id and label, read in one go: two reads could straddle the list's update
ENTRIES_JS = """() => Array.from(document.querySelectorAll('.neuroglancer-segment-list-entry'))
  .map(e => [e.querySelector('.neuroglancer-segment-list-entry-id')?.innerText ?? '',
             e.querySelector('.neuroglancer-segment-list-entry-name')?.innerText ?? ''])"""


def listed(page, tag: str, seconds: float) -> tuple[list[int], list[str]]:
    """The ids and labels of the segment list's entries, once it shows entries and they are
    its answer to the query for `tag` (the list before it may still be on the page: the
    last entries seen are returned when time runs out, for the test to show them)."""
    deadline = time.monotonic() + seconds
    rows: list[tuple[int, str]] = []
    while time.monotonic() < deadline:
        rows = [(int(i), n) for i, n in page.evaluate(ENTRIES_JS) if i.strip().isdigit()]
        if rows and all(n.startswith(f"{tag} ") for _, n in rows):
            break
        time.sleep(0.5)
    if not rows:
        raise TimeoutError("Neuroglancer's segment list stayed empty")
    return [i for i, _ in rows], [n for _, n in rows]


def test_neuroglancer_filters_the_segment_list_by_class_tag(demo, tmp_path, ray_session):
    seg = classified_copy(demo, tmp_path, ray_session)
    classes = read_dataset(seg / "classes")
    of = dict(zip(classes["segment_id"].tolist(), classes["class"].tolist()))
    assert {"large", "small"} <= set(of.values())
    layers = open_view_layers([str(seg)], StorageContext())
    roots = {layer.name: layer.local_path for layer in layers}
    with (
        neuroglancer_browser(viewport=(1200, 900)) as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        for tag in ("large", "small"):
            state = viewer_state(layers, server.url)
            layer = state["layers"][0]
            layer.update(tab="segments", segmentQuery=f"#{tag}")
            state["selectedLayer"] = {"layer": layer["name"], "visible": True, "size": 600}
            browser.viewer.set_state(neuroglancer.ViewerState(state))
            ids, entries = listed(browser.page, tag, LIST_TIMEOUT_S)
            assert {of[i] for i in ids} == {tag}, f"#{tag} lists other classes"
            assert len(ids) >= min(5, sum(c == tag for c in of.values()))
            assert all(n.startswith(f"{tag} ") and f"#{tag}" in n for n in entries), entries
