"""Cell classes end to end on a real local Ray: a synthetic volume with cell classes (a seed the
built-in classifier never saw) measured and classified by the stages with the built-in model,
then `petavox analyze`: the classes match the generator's, and the analysis's JSON and figures
say what the tables hold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.morphology.table_reads import read_dataset
from petavox.workflows.analyze import analyze, print_analysis
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run
from petavox.workflows.train_cells import (
    CELL_SEEDS,
    CLASSES,
    MIN_VOXELS,
    cell_volume,
    morphology_stages,
)

pytestmark = pytest.mark.integration

SEED = 521  # held out: the built-in classifier was trained on CELL_SEEDS
SHAPE = (128, 128, 96)


@pytest.fixture(scope="module")
def classified(tmp_path_factory, ray_session):
    assert SEED not in CELL_SEEDS
    root = tmp_path_factory.mktemp("cells")
    volume = cell_volume(SEED, SHAPE)
    np.save(root / "seg.npy", volume.labels.transpose(2, 1, 0))
    np.save(root / "image.npy", volume.aligned_raw.transpose(2, 1, 0))
    classify = {"stage": "classify", "input": "segmentation"}
    stages = [*morphology_stages(root, "segmentation"), classify]
    run(parse_config({"output": f"file://{root}", "stages": stages}), session=ray_session)
    return root, volume


def test_the_built_in_classifier_finds_the_generators_classes(classified):
    root, volume = classified
    table = read_dataset(root / "segmentation" / "morphology")
    classes = read_dataset(root / "segmentation" / "classes")
    assert classes["segment_id"].tolist() == table["segment_id"].tolist()
    big = table["voxels"] >= MIN_VOXELS
    truth = np.array([volume.classes[int(i)] for i in table["segment_id"][big]])
    predicted = classes["class"][big].astype(str)
    assert (truth == predicted).mean() >= 0.9
    for name in CLASSES:
        if (truth == name).sum() >= 5:  # enough of them to tell 0.9 from 0.5
            assert (predicted[truth == name] == name).mean() >= 0.8, name


def test_analyze_writes_the_classes_orientation_and_figures(classified, capsys):
    root, volume = classified
    result = analyze(f"file://{root}", context=StorageContext())
    print_analysis(result)
    written = json.loads((root / "analysis" / "analysis.json").read_text())
    assert written["classes"] == result["classes"]
    total = sum(c["segments"] for c in result["classes"].values())
    assert total == len(np.unique(volume.labels)) - 1
    assert {"neuron", "myelin"} <= set(result["classes"])
    for name in ("classes.png", "orientation.png"):
        assert (root / "analysis" / name).read_bytes()[:4] == b"\x89PNG"
    assert "connections" not in result  # no connectome in this run
    out = capsys.readouterr().out
    assert "  neurons: " in out and "neuron:" in out
    # the orientation is tested over the segments classified neuron, each with an axis
    classes = read_dataset(root / "segmentation" / "classes")
    assert result["orientation"]["count"] == (classes["class"].astype(str) == "neuron").sum() > 0
