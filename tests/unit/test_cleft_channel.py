"""The cleft-channel detector's kernel: the generator's true clefts as a perfect probability
channel, on the ground-truth segmentation and on one whose segments fill the membranes; the
same synapse set for any blocks; the volume's faces and no-data padding; a bad clefts layer
refused by the command line before Ray. Seeds 100-114 chose which cleft voxels cast the rays
(the darker half); these tests use other seeds."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from cleft_volumes import (
    assert_same_whatever_the_blocks,
    bold,
    counts,
    filled,
    perfect,
    split_behind_clefts,
)

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.evaluate.synapse_scores import score_synapses
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.cleft_channel import CleftParams, detect_clefts
from petavox.tasks.synapse.partner_ranker import BUILTIN_PATH, load_ranker, save_ranker
from petavox.tasks.synapse.partners import kept_at_faces, touches_faces
from petavox.workflows.cli import main
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run

SHAPE = (128, 128, 64)
RES = (8.0, 8.0, 8.0)
SEEDS = (4, 5, 6, 7)


@pytest.fixture(scope="module")
def volumes():
    return bold(SEEDS, SHAPE)


def whole(prob, raw, seg, params: CleftParams | None = None) -> synapse_table.Table:
    box = Box((0, 0, 0), seg.shape)
    return detect_clefts(prob, raw, seg, box, box, box, RES, params or CleftParams())


@pytest.mark.parametrize("segmentation", ["ground truth", "membranes filled"])
def test_perfect_clefts_give_the_true_synapses(volumes, segmentation):
    totals = np.zeros(4, int)
    for volume in volumes:
        seg = volume.labels if segmentation == "ground truth" else filled(volume.labels)
        found = whole(perfect(volume), volume.raw, seg)
        truth = volume.synapse_table
        s = score_synapses(
            found, volume.clefts, volume.labels, seg, truth["pre"], truth["post"], RES
        )
        totals += (s.detected, s.true, s.matched, s.right_direction)
        assert np.all((found["confidence"] == 1) & (found["size"] >= 15))
    detected, true, matched, right = totals
    assert true >= 50 and matched / detected >= 0.95 and matched / true >= 0.95, totals
    assert right / matched >= 0.9, totals


def test_float_probability_is_the_same_and_the_threshold_applies(volumes):
    volume = volumes[0]
    prob = perfect(volume)
    as_uint8 = whole(prob, volume.raw, volume.labels)
    as_float = whole(prob.astype(np.float32) / 255, volume.raw, volume.labels)
    for name in synapse_table.COLUMNS:
        np.testing.assert_array_equal(as_uint8[name], as_float[name], err_msg=name)
    faint = (prob // 255 * 100).astype(np.uint8)  # 0.39 everywhere in the clefts
    assert len(whole(faint, volume.raw, volume.labels)["x"]) == 0
    low = whole(faint, volume.raw, volume.labels, CleftParams(threshold=0.3))
    assert len(low["x"]) == len(as_uint8["x"])
    np.testing.assert_allclose(low["confidence"], 100 / 255, rtol=1e-6)


def test_same_synapses_whatever_the_blocks(volumes):
    volume = volumes[1]
    prob, seg = perfect(volume), filled(volume.labels)
    assert_same_whatever_the_blocks(prob, volume.raw, seg, RES)


def two_cells(gap_at: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image, labels and a cleft disk on the membrane (x = gap_at..gap_at+2) between two cells
    of a 40³ volume, the disk at z 0-7: it touches the bottom face."""
    labels = np.zeros((40, 40, 40), np.uint32)
    labels[:gap_at], labels[gap_at + 3 :] = 1, 2
    raw = np.full(labels.shape, 200, np.uint8)
    raw[gap_at : gap_at + 3] = 40
    prob = np.zeros(labels.shape, np.uint8)
    prob[gap_at : gap_at + 3, 14:24, 0:8] = 255
    return raw, labels, prob


def test_a_cleft_on_the_volume_face_needs_both_partners():
    raw, labels, prob = two_cells(gap_at=18)
    found = whole(prob, raw, labels)
    assert len(found["x"]) == 1 and {found["pre_id"][0], found["post_id"][0]} == {1, 2}
    # the same cleft with the cell on one side cut off by the volume's face at x = 0
    raw, labels, prob = two_cells(gap_at=0)
    assert set(np.unique(labels)) == {0, 2}
    assert len(whole(prob, raw, labels)["x"]) == 0
    # inside, the same: one partner missing (cell 1 not segmented), dropped at the face...
    raw, labels, prob = two_cells(gap_at=18)
    labels[labels == 1] = 0
    assert len(whole(prob, raw, labels)["x"]) == 0
    # ...and kept away from the faces (as the table had it before: pre or post 0)
    prob[:, :, :8], prob[18:21, 14:24, 10:18] = 0, 255
    kept = whole(prob, raw, labels)
    assert len(kept["x"]) == 1 and sorted([kept["pre_id"][0], kept["post_id"][0]]) == [0, 2]


def test_faces_rule_and_no_synapse_from_padding():
    volume = Box((0, 0, 0), (10, 10, 10))
    inside, on_face = np.array([[3, 4, 5], [4, 4, 5]]), np.array([[3, 4, 5], [3, 9, 5]])
    assert not touches_faces(inside, volume) and touches_faces(on_face, volume)
    for pre, post, kept in ((1, 2, True), (1, 0, False), (0, 0, False), (3, 3, False)):
        assert kept_at_faces({"pre_id": pre, "post_id": post}, on_face, volume) == kept
        assert kept_at_faces({"pre_id": pre, "post_id": post}, inside, volume)
    # padding (no data: image 0 over whole squares) has no segment and no cleft there
    raw, labels, prob = two_cells(gap_at=18)
    prob[18:21, 14:24, 10:18] = 255  # a second cleft, away from the faces
    assert len(whole(prob, raw, labels)["x"]) == 2
    raw[:, :, 9:20] = 0  # sections 9-19 missing
    found = whole(prob, raw, labels)
    assert len(found["x"]) == 1 and found["z"][0] < 8 * RES[2]


def write_layer(url: str, layer_type: str, dtype: str, size=(64, 64, 32), channels=1, extra=()):
    spec = LayerSpec(
        extra=extra,
        layer_type=layer_type,
        dtype=dtype,
        size=Vec3.of(size),
        resolution=RES,
        chunk_size=Vec3(32, 32, 16),
        num_channels=channels,
    )
    Layer.create(url, spec)


MODEL_OUTPUT = (("petavox_model", {"model": "petavox:unet.onnx", "target": "boundary"}),)


class NoRay:
    """Stands in for the pipeline's `RaySession`: a refusal must come before any Ray session."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("a Ray session was started for a bad input")


@pytest.mark.parametrize(
    ("clefts", "message"),
    [
        ("two", r"two is a 2-channel image layer; synapses --clefts takes the cleft probability"),
        ("small", r"small covers .* but .*raw covers .*same bounds and resolution"),
        ("seg", r"seg is a 1-channel segmentation layer"),
        ("wide", r"holds uint16; synapses reads the cleft probability as uint8"),
        ("boundary", r"boundary is the boundary output of a model .*not a cleft probability"),
    ],
)
def test_a_bad_clefts_layer_is_exit_2_before_ray(tmp_path, capsys, monkeypatch, clefts, message):
    monkeypatch.setattr("petavox.workflows.pipeline.RaySession", NoRay)
    root = f"file://{tmp_path}"
    write_layer(f"{root}/raw", "image", "uint8")
    write_layer(f"{root}/seg", "segmentation", "uint32")
    write_layer(f"{root}/two", "image", "uint8", channels=2)
    write_layer(f"{root}/small", "image", "uint8", size=(64, 32, 32))
    write_layer(f"{root}/wide", "image", "uint16")
    write_layer(f"{root}/boundary", "image", "uint8", extra=MODEL_OUTPUT)
    before = sorted(p.name for p in tmp_path.iterdir())
    args = [f"{root}/raw", f"{root}/seg", f"{root}/out", "--clefts", f"{root}/{clefts}"]
    assert main(["synapses", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_a_partner_split_next_to_the_cleft_keeps_the_synapse(volumes):
    """Cutting each postsynaptic object 3 voxels behind its cleft neither loses synapses nor
    breaks their partners: the piece at the cleft stands for the object it is part of."""
    totals = np.zeros(4, int)
    for volume in volumes[:2]:
        seg = split_behind_clefts(filled(volume.labels), volume, depth=3.0)
        assert len(np.unique(seg)) > len(np.unique(volume.labels))
        totals += counts(whole(perfect(volume), volume.raw, seg), volume, seg, RES)
    detected, true, matched, right = totals
    assert matched / true >= 0.95 and matched / detected >= 0.95, totals
    assert right / matched >= 0.9, totals


def write_run_layers(folder) -> str:
    """Empty layers for planning synapses runs: raw, seg, a cleft channel (cleft) and a synapse
    model's three channels (sides); the folder's URL."""
    root = f"file://{folder}"
    write_layer(f"{root}/raw", "image", "uint8")
    write_layer(f"{root}/seg", "segmentation", "uint32")
    write_layer(f"{root}/cleft", "image", "uint8")
    sides = (("petavox_model", {"model": "petavox:s.onnx", "target": "synapses"}),)
    write_layer(f"{root}/sides", "image", "uint8", channels=3, extra=sides)
    return root


def synapses_spec(root: str, **stage) -> dict:
    """The spec of a synapses run on `write_run_layers`' layers."""
    config = {"stage": "synapses", "input": "raw", "segmentation": "seg", **stage}
    (plan,) = plan_run(parse_config({"output": root, "stages": [config]}))
    return plan.spec


def test_the_presynaptic_rule_is_in_the_identity_of_side_channel_runs_only(tmp_path):
    """Runs on a synapse model's three channels hash `min_presynaptic` (their output changed
    when the rule came); runs on one cleft channel, which it does not touch, keep their
    identity, and so do classical runs."""
    root = write_run_layers(tmp_path)

    assert synapses_spec(root, clefts="sides")["min_presynaptic"] == 0.35
    assert synapses_spec(root, clefts="sides", min_presynaptic=0.5)["min_presynaptic"] == 0.5
    assert "min_presynaptic" not in synapses_spec(root, clefts="cleft")
    assert "min_presynaptic" not in synapses_spec(root)


def test_the_partner_ranker_is_in_the_identity_of_side_channel_runs_by_its_weights(tmp_path):
    """Side-channel runs hash the ranker's checksum (its weights), not its path: a copy of the
    shipped file elsewhere is the same run, other weights another; cleft-channel and classical
    runs have no ranker in their identity."""
    root = write_run_layers(tmp_path)
    copy = tmp_path / "copy.json"
    shutil.copy(BUILTIN_PATH, copy)
    other = tmp_path / "other.json"
    record = json.loads(BUILTIN_PATH.read_text())
    save_ranker(other, np.asarray(record["weights"]) * -1, {"demos": []})

    shipped = synapses_spec(root, clefts="sides")
    assert shipped["partner_ranker"] == load_ranker().checksum
    assert synapses_spec(root, clefts="sides", partner_ranker=str(copy)) == shipped
    assert (
        synapses_spec(root, clefts="sides", partner_ranker=str(other))["partner_ranker"]
        != shipped["partner_ranker"]
    )
    assert "partner_ranker" not in synapses_spec(root, clefts="cleft")
    assert "partner_ranker" not in synapses_spec(root)


@pytest.mark.parametrize(
    ("clefts", "ranker", "message"),
    [
        ("sides", "missing.json", r"cannot read the partner ranker .*missing\.json"),
        ("sides", "raw/info", r"is not a partner ranker .*train_partner_ranker"),
        ("sides", "s3://bucket/ranker.json", r"not a local file; .*copy it there"),
        ("cleft", "builtin.json", r"partner_ranker picks partners .*one channel"),
        (None, "builtin.json", r"partner_ranker .*needs a clefts layer"),
    ],
)
def test_a_bad_partner_ranker_is_exit_2_before_ray(
    tmp_path, capsys, monkeypatch, clefts, ranker, message
):
    monkeypatch.setattr("petavox.workflows.pipeline.RaySession", NoRay)
    root = write_run_layers(tmp_path)
    shutil.copy(BUILTIN_PATH, tmp_path / "builtin.json")
    before = sorted(p.name for p in tmp_path.iterdir())
    where = ranker if "://" in ranker else str(tmp_path / ranker)
    args = [f"{root}/raw", f"{root}/seg", f"{root}/out", "--partner-ranker", where]
    if clefts:
        args += ["--clefts", f"{root}/{clefts}"]
    assert main(["synapses", *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
