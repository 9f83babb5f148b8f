"""`classify --labels` on a real local Ray and file:// layers: a forest trained on labelled
segments of a morphology table, its cross-validated accuracy, a class for every segment, the
segment properties in the layer's info; a rerun reruns nothing, new labels retrain; bad input
is refused (before any task, or inside the training task with exit status 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from petavox.tasks.classify.forest import fit
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.morphology.table_reads import read_dataset
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.cli import exit_status
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run
from petavox.workflows.runner import ChunkFailedError
from petavox.workflows.stages.classify import print_summary

pytestmark = pytest.mark.integration

SHAPE = (96, 96, 48)
SPACING = 8.0  # neurites closer than the generator's default: more segments to label
RESOLUTION = (8, 8, 8)


def stages(root: Path, **classify) -> list[dict]:
    ingest = {"resolution": list(RESOLUTION), "storage_chunk": [16, 16, 16]}
    return [
        {"stage": "ingest", "input": str(root / "seg.npy"), "output": "seg", **ingest}
        | {"layer_type": "segmentation"},
        {"stage": "ingest", "input": str(root / "image.npy"), "output": "image", **ingest},
        {"stage": "skeletonize", "input": "seg", "dust_threshold": 0},
        {"stage": "morphology", "input": "seg", "image": "image", "shard_bits": 2},
        {"stage": "classify", "input": "seg", "folds": 3, "trees": 30, **classify},
    ]


def write_labels(root: Path, table: dict, name: str, rule) -> Path:
    """Every 2nd segment labelled by `rule(row)`."""
    lines = ["segment_id,class"]
    for row in range(0, len(table["segment_id"]), 2):
        lines.append(f"{table['segment_id'][row]},{rule(table, row)}")
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def classified(tmp_path_factory, ray_session):
    root = tmp_path_factory.mktemp("classify")
    volume = generate(SyntheticParams(shape=SHAPE, seed=4, neurite_spacing=SPACING))
    np.save(root / "seg.npy", volume.labels.transpose(2, 1, 0))
    np.save(root / "image.npy", volume.aligned_raw.transpose(2, 1, 0))
    config = parse_config({"output": f"file://{root}", "stages": stages(root)[:4]})
    run(config, session=ray_session, progress=False)
    table = read_dataset(root / "seg" / "morphology")
    median = float(np.median(table["voxels"]))

    def by_size(t, row):
        return "large" if t["voxels"][row] > median else "small"

    labels = write_labels(root, table, "labels.csv", by_size)
    config = parse_config({"output": f"file://{root}", "stages": stages(root, labels=str(labels))})
    reports = run(config, session=ray_session, progress=False)
    return root, table, median, labels, reports


def test_every_segment_gets_a_class_and_the_viewer_its_properties(classified, capsys):
    root, table, median, _, _ = classified
    classes = read_dataset(root / "seg" / "classes")
    assert classes["segment_id"].tolist() == table["segment_id"].tolist()
    truth = np.where(table["voxels"] > median, "large", "small")
    assert (classes["class"] == truth).mean() > 0.9
    assert ((classes["probability"] >= 0.5) & (classes["probability"] <= 1)).all()
    np.testing.assert_allclose(classes["p_large"] + classes["p_small"], 1.0)
    summary = json.loads((root / "seg" / "classes" / "_summary.json").read_text())
    assert summary["cross_validation"]["accuracy"] > 0.9
    assert summary["cross_validation"]["rows"] == len(range(0, len(truth), 2))
    assert sum(summary["classes"].values()) == len(truth)
    info = json.loads((root / "seg" / "info").read_text())
    assert info["segment_properties"] == "segment_properties"
    props = json.loads((root / "seg" / "segment_properties" / "info").read_text())
    assert props["@type"] == "neuroglancer_segment_properties"
    inline = props["inline"]
    assert inline["ids"] == [str(i) for i in table["segment_id"]]
    tags = next(p for p in inline["properties"] if p["type"] == "tags")
    shown = [tags["tags"][v[0]] for v in tags["values"]]
    assert shown == classes["class"].tolist()
    print_summary(f"file://{root}/seg", StorageContext())
    out = capsys.readouterr().out
    assert "cross-validated accuracy (3 folds" in out and "segments per class: large" in out


def test_a_trained_model_classifies_a_copy_into_another_folder(
    classified, tmp_path, ray_session, capsys
):
    """--model with the _model.json of a --labels run, into --classes-dir: the same classes,
    and the summary reads the folder the layer's info names."""
    import shutil

    root = classified[0]
    shutil.copytree(root / "seg", tmp_path / "seg")
    shutil.rmtree(tmp_path / "seg" / "classes")  # only the new folder holds a summary
    model = root / "seg" / "classes" / "_model.json"
    stage = {"stage": "classify", "input": "seg", "model": str(model), "classes_dir": "again"}
    run(
        parse_config({"output": f"file://{tmp_path}", "stages": [stage], "overwrite": True}),
        session=ray_session,
        progress=False,
    )
    first = read_dataset(root / "seg" / "classes")
    again = read_dataset(tmp_path / "seg" / "again")
    assert again["class"].tolist() == first["class"].tolist()
    print_summary(f"file://{tmp_path}/seg", StorageContext())
    large = int((again["class"] == "large").sum())
    assert f"segments per class: large {large}," in capsys.readouterr().out


def test_a_rerun_runs_nothing_and_new_labels_retrain(classified, ray_session):
    root, table, median, labels, _ = classified
    again = run(
        parse_config({"output": f"file://{root}", "stages": stages(root, labels=str(labels))}),
        session=ray_session,
        progress=False,
    )
    assert all(r.ran == 0 for r in again)
    flipped = write_labels(
        root, table, "flipped.csv", lambda t, r: "small" if t["voxels"][r] > median else "large"
    )
    config = parse_config({"output": f"file://{root}", "stages": stages(root, labels=str(flipped))})
    retrained = run(config, session=ray_session, progress=False)
    assert [r.ran for r in retrained if "classify" in r.label] == [1, 4, 1]
    classes = read_dataset(root / "seg" / "classes")
    assert (classes["class"] == np.where(table["voxels"] > median, "small", "large")).mean() > 0.9


def test_bad_input_is_refused(classified, ray_session, tmp_path):
    root, _, _, labels, _ = classified

    def plan(**classify):
        cfg = {"output": f"file://{root}", "stages": stages(root, **classify)}
        return plan_run(parse_config(cfg))

    with pytest.raises(InputError, match="not both"):
        plan(labels=str(labels), model="petavox:cells-synthetic.json")
    with pytest.raises(InputError, match="no morphology table 'other'"):
        plan(labels=str(labels), table_dir="other")
    with pytest.raises(InputError, match="does not exist"):
        plan(labels=str(tmp_path / "none.csv"))
    # a model trained on a table with synapses does not classify a table without them
    x = np.random.default_rng(0).normal(size=(20, 2))
    forest = fit(x, np.arange(20) % 2, ("a", "b"), ("log_volume", "log_synapses"), trees=2)
    model = tmp_path / "model.json"
    model.write_bytes(
        forest.__class__(
            forest.classes, forest.features, forest.trees, {"inputs": ["connectome"]}
        ).to_json()
    )
    with pytest.raises(InputError, match="without connectome"):
        plan(model=str(model))
    # labelled ids that the segmentation does not have: found by the training task
    strangers = tmp_path / "strangers.csv"
    strangers.write_text(
        "segment_id,class\n" + "".join(f"{9000 + i},{'ab'[i % 2]}\n" for i in range(6))
    )
    config = parse_config(
        {"output": f"file://{root}", "stages": stages(root, labels=str(strangers))}
    )
    with pytest.raises(ChunkFailedError, match="labelled segments are not in") as err:
        run(config, session=ray_session, progress=False)
    assert exit_status(err.value) == 2
