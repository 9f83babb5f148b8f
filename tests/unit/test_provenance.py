"""The rules for writing over a product (`provenance.decide`) and the provenance file."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from cloudvolume import CloudVolume

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.core.layers import LayerSpec, write_info
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.plan import Output, StagePlan, StageSteps
from petavox.workflows.provenance import (
    OverwriteRefusedError,
    Writer,
    claim,
    current_writer,
    decide,
    epoch_of,
)

OUT = Output("file:///run/seg")


def steps(threshold: float = 0.5, name: str = "segment", inputs=("file:///run/b",)):
    plan = StagePlan(
        label="segment",
        stage="segment",
        version=1,
        spec={"threshold": threshold},
        grid=ChunkGrid(Box((0, 0, 0), (4, 4, 4)), (2, 2, 2)),
        job=None,  # type: ignore[arg-type]
        outputs=(OUT,),
    )
    return StageSteps(name=name, plans=(plan,), inputs=tuple(inputs))


def writer(of: StageSteps, epoch: str = "e1", **fields) -> Writer:
    record = {"stage": of.name, "identity": of.identity, "epoch": epoch, "inputs": of.inputs}
    return Writer.of({**record, **fields})


def test_the_same_stage_resumes_under_its_epoch():
    claim_ = decide(steps(), {OUT: writer(steps())}, {OUT: True}, overwrite=False)
    assert claim_.resumed and claim_.epoch == "e1"


def test_other_parameters_take_the_product_over_with_a_new_epoch():
    claim_ = decide(steps(0.6), {OUT: writer(steps(0.5))}, {OUT: True}, overwrite=False)
    assert not claim_.resumed and claim_.epoch != "e1"


@pytest.mark.parametrize(
    ("found", "problem"),
    [
        ({"stage": "infer"}, "what stage infer wrote"),
        ({"inputs": ("file:///run/other",)}, "made from other inputs"),
    ],
)
def test_another_stage_or_other_inputs_are_refused_unless_overwrite(found, problem):
    existing = writer(steps(), **found)
    with pytest.raises(OverwriteRefusedError, match=problem):
        decide(steps(0.6), {OUT: existing}, {OUT: True}, overwrite=False)
    assert not decide(steps(0.6), {OUT: existing}, {OUT: True}, overwrite=True).resumed


def test_a_layer_without_provenance_is_refused_a_new_one_is_not():
    with pytest.raises(OverwriteRefusedError, match="petavox did not write"):
        decide(steps(), {OUT: None}, {OUT: True}, overwrite=False)
    assert not decide(steps(), {OUT: None}, {OUT: False}, overwrite=False).resumed


def test_claim_records_the_writer_in_cloud_volume_provenance(tmp_path):
    out = Output(f"file://{tmp_path}/seg")
    plan = replace(steps().plans[0], outputs=(out,))
    params = {"stage": "segment", "merge_threshold": 0.5}
    stage = StageSteps(name="segment", plans=(plan,), inputs=("file:///b",), params=params)
    epoch = claim(stage, overwrite=False, context=StorageContext())
    assert epoch is not None and epoch_of(stage, StorageContext()) == epoch
    assert claim(stage, overwrite=False, context=StorageContext()) == epoch  # a resume
    record = json.loads((tmp_path / "seg" / "provenance").read_text())
    assert set(record) == {"description", "sources", "owners", "processing"}
    assert record["sources"] == ["file:///b"] and len(record["processing"]) == 1
    spec = LayerSpec(
        layer_type="segmentation", dtype="uint64", size=Vec3(4, 4, 4), resolution=(8, 8, 8)
    )
    write_info(out.url, spec.to_info())  # a layer for cloud-volume to open
    written = CloudVolume(out.url).provenance.processing[0]  # as igneous reads it
    assert written["parameters"] == params and written["stage"] == "segment"
    assert written["version"][0].isdigit() and written["host"] and written["date"]
    assert written["commit"] is None or len(written["commit"]) == 40
    found = current_writer(out.url, "", StorageContext())
    assert found is not None and found.identity == stage.identity
    again = StageSteps(name="segment", plans=(replace(plan, spec={"t": 1}),), inputs=stage.inputs)
    assert claim(again, overwrite=False, context=StorageContext()) != epoch
    assert epoch_of(stage, StorageContext()) is False  # its markers no longer stand
