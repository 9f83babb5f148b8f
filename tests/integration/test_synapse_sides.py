"""A synapse model's three channels (cleft, presynaptic side, postsynaptic side) through the
real stages on a local Ray and file:// layers: `synapses --clefts` on perfect side channels
(from the generator's partners) over a segmentation that fills the membranes, under two chunk
shapes and with another partner ranker; and a `--target synapses` model through `infer`, whose
three-channel layer `synapses` takes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cleft_volumes import bold, filled, perfect_sides

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.evaluate.synapse_scores import score_synapses
from petavox.tasks.synapse import table as synapse_table
from petavox.tasks.synapse.outputs import read_chunk_tables
from petavox.tasks.synapse.partner_ranker import load_ranker, save_ranker
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run
from petavox.workflows.stages.synapses import print_summary

pytestmark = pytest.mark.integration

SHAPE = (128, 128, 64)
RES = (8.0, 8.0, 8.0)
SEED = 24  # seeds 21-23: the kernel's unit tests
CHUNKS = ([64, 64, 32], [96, 32, 48])
SIDES_RECORD = {"model": "perfect sides", "target": "synapses"}


def write(url: str, data: np.ndarray, layer_type: str = "image", extra=()) -> None:
    channels = data.shape[3] if data.ndim == 4 else 1
    spec = LayerSpec(
        layer_type=layer_type,
        dtype=data.dtype.name,
        size=Vec3.of(data.shape[:3]),
        resolution=RES,
        chunk_size=Vec3(32, 32, 16),
        num_channels=channels,
        extra=extra,
    )
    layer = Layer.create(url, spec)
    layer.write(layer.bounds(0), data)


def synapses(name: str, chunk_shape: list[int], clefts: str = "sides") -> dict:
    return {
        "stage": "synapses",
        "input": "raw",
        "segmentation": "seg",
        "clefts": clefts,
        "output": name,
        "chunk_shape": chunk_shape,
    }


def test_perfect_sides_through_the_stage_under_two_chunk_shapes(tmp_path, ray_session, capsys):
    (volume,) = bold([SEED], SHAPE)
    seg = filled(volume.labels)
    root = f"file://{tmp_path}"
    write(f"{root}/raw", volume.raw)
    write(f"{root}/seg", seg.astype(np.uint32), "segmentation")
    write(f"{root}/sides", perfect_sides(volume), extra=(("petavox_model", SIDES_RECORD),))
    stages = [synapses(f"syn{k}", shape) for k, shape in enumerate(CHUNKS)]
    reversed_ranker = tmp_path / "reversed.json"  # every pair scored as the shipped one's reverse
    weights = np.asarray(load_ranker().weights)
    save_ranker(reversed_ranker, -weights, {"volumes": []})
    stages.append({**synapses("reversed", CHUNKS[0]), "partner_ranker": str(reversed_ranker)})
    run(parse_config({"output": root, "stages": stages}), session=ray_session, progress=False)
    a, b = (read_chunk_tables(f"{root}/syn{k}", StorageContext()) for k in range(2))
    assert len(a["synapse_id"]) > 5
    for name in synapse_table.COLUMNS:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    truth = volume.synapse_table
    s = score_synapses(a, volume.clefts, volume.labels, seg, truth["pre"], truth["post"], RES)
    assert s.precision >= 0.95 and s.recall >= 0.95 and s.direction >= 0.97, s
    record = json.loads((tmp_path / "syn0" / "detector.json").read_text())
    assert record["detector"] == "cleft channel" and record["clefts"] == f"{root}/sides"
    assert record["partner_ranker"] == load_ranker().checksum
    print_summary(f"{root}/syn0", StorageContext())
    assert f"partners by the ranker {record['partner_ranker']}" in capsys.readouterr().out
    # another ranker's weights reach the workers: other partners for the same clefts (a cleft
    # at the volume's faces whose reversed pick has a side without probability is dropped)
    other = read_chunk_tables(f"{root}/reversed", StorageContext())
    both = np.isin(a["synapse_id"], other["synapse_id"])
    assert both.mean() >= 0.8 and np.isin(other["synapse_id"], a["synapse_id"]).all()
    mine = np.isin(other["synapse_id"], a["synapse_id"][both])
    pairs = [(t["pre_id"][k], t["post_id"][k]) for t, k in ((other, mine), (a, both))]
    same = (pairs[0][0] == pairs[1][0]) & (pairs[0][1] == pairs[1][1])
    assert same.mean() < 0.5, same.mean()
    record = json.loads((tmp_path / "reversed" / "detector.json").read_text())
    assert record["partner_ranker"] == load_ranker(str(reversed_ranker)).checksum


def test_a_synapse_model_through_infer_then_synapses(tmp_path, ray_session):
    """Seconds of training make a poor model; what is checked is the path: three channels
    written with the model's record, taken by `synapses --clefts`."""
    pytest.importorskip("torch")
    from petavox.tasks.ml.synapse_targets import volume_flags
    from petavox.workflows.train import run_train

    (volume,) = bold([SEED], (96, 96, 32))
    flags = volume_flags(volume)
    np.save(tmp_path / "raw.npy", volume.raw.transpose(2, 1, 0))
    np.save(tmp_path / "flags.npy", flags.transpose(2, 1, 0))
    model = tmp_path / "synapses.onnx"
    args = {"minutes": 0.05, "target": "synapses", "patch": (16, 32, 32), "base_channels": 4}
    run_train(
        str(tmp_path / "raw.npy"),
        str(tmp_path / "flags.npy"),
        str(model),
        **args,
        voxel_nm=RES,
        holdout=0,
        progress=False,
    )
    root = f"file://{tmp_path}/out"
    write(f"{root}/raw", volume.raw)
    write(f"{root}/seg", filled(volume.labels).astype(np.uint32), "segmentation")
    stages = [
        {"stage": "infer", "input": "raw", "output": "sides", "model": str(model)},
        synapses("syn", [64, 64, 32]),
    ]
    run(parse_config({"output": root, "stages": stages}), session=ray_session, progress=False)
    layer = Layer.open(f"{root}/sides")
    assert layer.num_channels == 3 and layer.info["petavox_model"]["target"] == "synapses"
    probabilities = layer.read(layer.bounds(0))
    assert probabilities.shape == (*volume.raw.shape, 3)
    record = json.loads((tmp_path / "out" / "syn" / "detector.json").read_text())
    assert record["detector"] == "cleft channel"
    assert (tmp_path / "out" / "syn" / "chunks").is_dir()
