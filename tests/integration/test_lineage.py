"""Never "done" over wrong data: the ledger checks who wrote a layer and from what (issue 16).

Each test is a way an operator got a finished-looking run over wrong data before: parameters
changed and changed back, an input edited under the same path, an output that is its own input,
a second ingest into an existing layer, a relabel step run twice.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from ledger_checks import undeclared_writes
from test_mesh import labelled_volume, mesh_config
from test_pipeline_file import config_for, make_stack
from test_segment import segment_config
from test_segment import synthetic as synthetic
from tree_compare import layer_files

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.workflows import pipeline
from petavox.workflows.cli import main
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run, status
from petavox.workflows.provenance import OverwriteRefusedError, current_writer

pytestmark = pytest.mark.integration


def test_parameters_changed_and_changed_back_recompute(tmp_path, synthetic, ray_session):
    folder, _, _ = synthetic
    out = tmp_path / "out"
    runs = {}
    for threshold in (0.6, 0.5, 0.6):
        config = segment_config(out, folder, "seg", [32, 32, 16], merge_threshold=threshold)
        reports = run(config, only=["ingest", "segment"], session=ray_session, progress=False)
        runs.setdefault(threshold, []).append((reports, layer_files(out / "seg")))
    (_, first_files), (again, again_files) = runs[0.6]
    _, other_files = runs[0.5][0]
    assert other_files != first_files  # the two thresholds give different segmentations
    assert again_files == first_files  # the layer holds 0.6's result again
    relabel = next(r for r in again if r.label == "agglomerate seg: relabel")
    assert relabel.ran == relabel.total  # the 0.5 run had replaced every chunk
    rows = [row for row in status(config) if row.total is not None]
    scored = [row for row in rows if row.label.startswith("evaluate")]
    assert all(row.done == row.total for row in rows if row not in scored)
    assert [(row.done, row.note) for row in scored] == [(0, "no report yet")]  # not run


def test_an_edited_input_is_ingested_again_and_downstream_recomputed(tmp_path, ray_session):
    stack = tmp_path / "stack.npy"
    make_stack(stack, seed=1)
    config = config_for(tmp_path, stack)
    run(config, session=ray_session, progress=False)
    edited = make_stack(stack, seed=2)  # same path, new content
    os.utime(stack, ns=(os.stat(stack).st_atime_ns, os.stat(stack).st_mtime_ns + 10**9))
    assert any(row.done < row.total for row in status(config))
    reports = run(config, session=ray_session, progress=False)
    assert all(r.ran == r.total for r in reports)  # ingest and downsample both redone
    raw = Layer.open(f"file://{tmp_path}/out/raw")
    assert np.array_equal(raw.read(raw.bounds(0)), edited)


def test_an_output_that_is_its_own_input_is_refused_before_any_write(tmp_path, ray_session):
    stack = tmp_path / "stack.npy"
    make_stack(stack)
    run(config_for(tmp_path, stack), only=["ingest"], session=ray_session, progress=False)
    before = layer_files(tmp_path / "out" / "raw")
    config = parse_config(
        {
            "output": f"file://{tmp_path}/out",
            "stages": [{"stage": "infer", "input": "raw", "output": "raw"}],
        }
    )
    with pytest.raises(InputError, match=r"output .*raw is also its input"):
        run(config, session=ray_session, progress=False)
    assert layer_files(tmp_path / "out" / "raw") == before


def test_a_second_ingest_from_another_source_is_refused_without_overwrite(tmp_path, ray_session):
    first, second = tmp_path / "first.npy", tmp_path / "second.npy"
    make_stack(first, seed=1)
    replacement = make_stack(second, seed=2)
    run(config_for(tmp_path, first), only=["ingest"], session=ray_session, progress=False)
    before = layer_files(tmp_path / "out" / "raw")
    config = config_for(tmp_path, second)
    with pytest.raises(OverwriteRefusedError, match="made from other inputs") as err:
        run(config, only=["ingest"], session=ray_session, progress=False)
    assert "--overwrite" in str(err.value)
    assert layer_files(tmp_path / "out" / "raw") == before
    forced = config.model_copy(update={"overwrite": True})
    run(forced, only=["ingest"], session=ray_session, progress=False)
    raw = Layer.open(f"file://{tmp_path}/out/raw")
    assert np.array_equal(raw.read(raw.bounds(0)), replacement)
    writer = current_writer(raw.url, "", raw.context)
    assert writer is not None and writer.inputs == (f"file://{second.resolve()}",)


def test_a_layer_petavox_did_not_write_is_not_overwritten(tmp_path, ray_session):
    stack = tmp_path / "stack.npy"
    make_stack(stack)
    config = config_for(tmp_path, stack)
    run(config, only=["ingest"], session=ray_session, progress=False)
    (tmp_path / "out" / "raw" / "provenance").unlink()  # as if another tool had written it
    assert plan_run(config, ["ingest"])  # planning reads; the refusal comes before a write
    with pytest.raises(OverwriteRefusedError, match="petavox did not write"):
        run(config, only=["ingest"], session=ray_session, progress=False)


def test_a_relabel_killed_mid_write_is_repaired_by_the_rerun(tmp_path, synthetic, ray_session):
    """Relabel writes a new layer from one it never changes, so rewriting a chunk is safe."""
    folder, _, _ = synthetic
    out = tmp_path / "out"
    config = segment_config(out, folder, "seg", [32, 32, 16])
    run(config, only=["ingest", "segment"], session=ray_session, progress=False)
    clean = layer_files(out / "seg")
    markers = sorted((out / "ledger" / "agglomerate-relabel").rglob("done/*.npz"))
    chunk_files = sorted(p for p in (out / "seg").rglob("*-*_*-*_*-*") if p.is_file())
    # as a task killed while writing leaves them: a half-written chunk, and no marker
    chunk_files[0].write_bytes(chunk_files[0].read_bytes()[: chunk_files[0].stat().st_size // 2])
    for marker in markers:
        marker.unlink()
    reports = run(config, only=["ingest", "segment"], session=ray_session, progress=False)
    relabel = next(r for r in reports if r.label == "agglomerate seg: relabel")
    assert relabel.ran == relabel.total > 1
    assert layer_files(out / "seg") == clean


def finished_pyramid(tmp_path, ray_session):
    """A finished ingest + downsample run: its config, its raw layer folder and files."""
    stack = tmp_path / "stack.npy"
    make_stack(stack)
    config = config_for(tmp_path, stack)
    run(config, session=ray_session, progress=False)
    raw = tmp_path / "out" / "raw"
    return config, raw, layer_files(raw)


def test_deleted_output_chunks_are_found_and_recomputed(tmp_path, ray_session, capsys):
    """As a bucket lifecycle rule leaves them: objects gone, their markers still there."""
    config, raw, clean = finished_pyramid(tmp_path, ray_session)
    output = f"file://{tmp_path}/out"
    assert main(["verify", output]) == 0
    lost = [sorted((raw / "4_4_40").iterdir())[3], sorted((raw / "8_8_40").iterdir())[0]]
    for path in lost:
        path.unlink()
    assert [row.done < row.total for row in status(config)] == [True, True]
    capsys.readouterr()
    assert main(["verify", output]) == 1
    printed = capsys.readouterr().out
    assert "1 finished chunk(s) lost or changed objects" in printed and "incomplete" in printed
    assert all(f"{path.name} is missing" in printed for path in lost)
    reports = run(config, session=ray_session, progress=False)
    assert [r.ran for r in reports] == [1, 1]  # only the chunks that lost objects
    assert layer_files(raw) == clean
    assert main(["verify", output]) == 0


def test_a_replaced_output_chunk_is_found_by_its_size_and_recomputed(tmp_path, ray_session):
    """An object rewritten since its chunk finished (another tool, a copy gone wrong): the
    marker's recorded size disagrees with the listing."""
    config, raw, clean = finished_pyramid(tmp_path, ray_session)
    inner, edge = raw / "4_4_40" / "0-32_0-32_0-8", raw / "4_4_40" / "128-130_0-32_0-8"
    written = inner.stat().st_size
    inner.write_bytes(edge.read_bytes())  # a valid chunk, of another size
    output = f"file://{tmp_path}/out"
    assert main(["verify", output]) == 1
    rows = status(config)
    assert [row.done for row in rows] == [26, 12]
    assert f"has {edge.stat().st_size} bytes, {written} written" in rows[0].note
    reports = run(config, session=ray_session, progress=False)
    assert [r.ran for r in reports] == [1, 0]
    assert layer_files(raw) == clean


def test_lost_meshes_and_skeletons_are_found_and_recomputed(tmp_path, ray_session):
    """Objects that are not voxels (mesh fragments, skeleton shard files) are checked too."""
    data = mesh_config(tmp_path, labelled_volume(seed=12), chunk_shape=[32, 32, 16]).model_dump(
        mode="json", exclude_unset=True
    )
    data["stages"].append(
        {"stage": "skeletonize", "input": "seg", "sharded": True, "shard_bits": 1}
    )
    config = parse_config(data)
    run(config, session=ray_session, progress=False)
    assert undeclared_writes(config) == []
    seg = tmp_path / "seg"
    clean = layer_files(seg)
    fragment = sorted((seg / "mesh").glob("*:0:*"))[5]
    fragment.unlink()
    shard = sorted((seg / "skeletons").glob("*.shard"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    notes = [row.note for row in status(config) if row.done < row.total]
    assert len(notes) == 2
    assert f"{fragment.name} is missing" in notes[0] and f"{shard.name} has 100 bytes" in notes[1]
    reports = run(config, session=ray_session, progress=False)
    redone = {r.label: r.ran for r in reports if r.ran}
    assert len(redone) == 2 and set(redone.values()) == {1}  # one mesh task, one shard task
    assert layer_files(seg) == clean
    assert main(["verify", f"file://{tmp_path}"]) == 0


def test_the_drivers_own_storage_calls_are_retried(tmp_path, ray_session, monkeypatch):
    """A storage hiccup while the driver plans or claims (an outage) is retried like a task's."""
    stack = tmp_path / "stack.npy"
    make_stack(stack)
    config = config_for(tmp_path, stack)
    failures = {"plan_stages": 1, "claim": 1}
    for name in failures:
        real = getattr(pipeline, name)

        def flaky(*args, _real=real, _name=name, **kwargs):
            if failures[_name]:
                failures[_name] -= 1
                raise ConnectionResetError("connection reset by peer (simulated)")
            return _real(*args, **kwargs)

        monkeypatch.setattr(pipeline, name, flaky)
    reports = run(config, session=ray_session, progress=False)
    assert failures == {"plan_stages": 0, "claim": 0}
    assert all(r.ran == r.total for r in reports)
