"""`agglomerate` from the region graph on a real local Ray: the same segmentation as `segment`
at any threshold, a graph and mapping that do not depend on the chunking, and a sweep whose
scores are those of full runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from segment_runs import EditCase, read_volume

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.evaluate.metrics import evaluate
from petavox.tasks.segment.agglomerate_jobs import read_mapping
from petavox.tasks.segment.equivalence import apply_maps
from petavox.tasks.segment.region_graph import read_columns
from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration

CTX = StorageContext()
LEVELS = 8  # more octree levels than these volumes have: read every part
SEGMENT = {"stage": "segment", "halo": [16, 16, 16], "merge_threshold": 0.6}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_session):
    """A synthetic boundary map and its ground truth, segmented at 0.6 in 32×24×16 chunks."""
    volume = generate(SyntheticParams(shape=(90, 78, 37), seed=5))
    boundary = boundary_from_labels(volume.labels, seed=5)
    folder = tmp_path_factory.mktemp("agglomerate")
    np.save(folder / "boundary.npy", boundary.transpose(2, 1, 0))
    np.save(folder / "gt.npy", volume.labels.transpose(2, 1, 0).astype(np.uint32))
    ingest = {"stage": "ingest", "resolution": [8, 8, 8], "storage_chunk": [8, 8, 8]}
    stages = [
        {**ingest, "input": str(folder / "boundary.npy"), "output": "boundary"},
        {**ingest, "input": str(folder / "gt.npy"), "output": "gt", "layer_type": "segmentation"},
        {**SEGMENT, "chunk_shape": [32, 24, 16]},
    ]
    go(folder, ray_session, stages)
    return folder


def go(folder, session, stages):
    config = parse_config({"output": f"file://{folder}", "stages": stages})
    return run(config, session=session, progress=False)


def test_agglomerate_at_another_threshold_equals_segment_there(run_dir, ray_session):
    reports = go(
        run_dir,
        ray_session,
        [
            {"stage": "agglomerate", "output": "at_0.6", "merge_threshold": 0.6},
            {"stage": "agglomerate", "output": "at_0.45", "merge_threshold": 0.45},
        ],
    )
    # no watershed, stitching or graph step: only merges, mapping tables and relabels
    assert all(r.label.startswith("agglomerate") for r in reports), [r.label for r in reports]
    assert all(r.ran > 0 for r in reports)
    segment = {**SEGMENT, "chunk_shape": [32, 24, 16], "merge_threshold": 0.45}
    go(run_dir, ray_session, [{**segment, "output": "seg_0.45"}])
    np.testing.assert_array_equal(
        read_volume(run_dir, "at_0.6"), read_volume(run_dir, "segmentation")
    )
    at, seg = read_volume(run_dir, "at_0.45"), read_volume(run_dir, "seg_0.45")
    np.testing.assert_array_equal(at, seg)
    assert len(np.unique(at)) > len(np.unique(read_volume(run_dir, "segmentation")))  # merged less
    # the mapping table says the same: supervoxels through it are the segmentation
    svs, segments = read_mapping(f"file://{run_dir}/at_0.45", LEVELS, CTX)
    table = np.stack([svs, segments], axis=1)[np.argsort(svs)]
    supervoxels = read_volume(run_dir, "supervoxels")
    assert len(svs) == len(np.unique(supervoxels[supervoxels > 0]))
    mapped = apply_maps(supervoxels.ravel(), [table]).reshape(supervoxels.shape)
    np.testing.assert_array_equal(mapped, at)
    # a rerun finds it done
    again = go(
        run_dir,
        ray_session,
        [{"stage": "agglomerate", "output": "at_0.45", "merge_threshold": 0.45}],
    )
    assert all(r.ran == 0 for r in again)


def test_a_sweep_scores_each_threshold_as_a_full_run_would(run_dir, ray_session):
    go(
        run_dir,
        ray_session,
        [
            {
                "stage": "agglomerate",
                "output": "sweep",
                "merge_threshold": "0.3:0.6:0.15",
                "ground_truth": "gt",
                "report": "sweep.json",
            },
        ],
    )
    record = json.loads((run_dir / "sweep.json").read_text())
    rows = {r["merge_threshold"]: r for r in record["scores"]}
    assert sorted(rows) == [0.3, 0.45, 0.6]
    assert (run_dir / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run_dir / "sweep").exists()  # no layer written
    gt = read_volume(run_dir, "gt")
    for threshold, name in ((0.6, "segmentation"), (0.45, "seg_0.45")):
        if not (run_dir / name).exists():
            continue  # the other test made it
        full = evaluate(read_volume(run_dir, name), gt)
        assert rows[threshold]["arand"] == pytest.approx(full.arand, abs=1e-12)
        assert rows[threshold]["voi_split"] == pytest.approx(full.voi_split, abs=1e-12)
        assert rows[threshold]["voi_merge"] == pytest.approx(full.voi_merge, abs=1e-12)
    assert rows[0.3]["voi_merge"] <= rows[0.6]["voi_merge"]  # a lower threshold merges less
    assert rows[0.3]["voi_split"] >= rows[0.6]["voi_split"]


def test_several_thresholds_without_ground_truth_are_refused(run_dir):
    from petavox.tasks.core.errors import InputError
    from petavox.workflows.pipeline import plan_run

    config = parse_config(
        {
            "output": f"file://{run_dir}",
            "stages": [{"stage": "agglomerate", "merge_threshold": [0.4, 0.5]}],
        }
    )
    with pytest.raises(InputError, match="need a ground truth"):
        plan_run(config)


def graph_rows(folder, supervoxels: str, translate: dict[int, int] | None = None):
    url = f"file://{folder}/{supervoxels}/region_graph"
    t = read_columns(url, "edges", LEVELS, ("sv_a", "sv_b", "faces", "affinity_sum"), CTX)
    rows = []
    for a, b, f, s in zip(t["sv_a"], t["sv_b"], t["faces"], t["affinity_sum"]):
        a, b = (translate[int(a)], translate[int(b)]) if translate else (int(a), int(b))
        rows.append((min(a, b), max(a, b), int(f), float(s)))
    return sorted(rows)


def test_the_graph_and_mapping_do_not_depend_on_the_chunking(run_dir, ray_session):
    go(run_dir, ray_session, [{**SEGMENT, "chunk_shape": [40, 16, 24], "output": "other"}])
    a, b = read_volume(run_dir, "supervoxels"), read_volume(run_dir, "other_supervoxels")
    pairs = np.unique(np.stack([a.ravel(), b.ravel()], axis=1), axis=0)
    assert len(pairs) == len(np.unique(a)) == len(np.unique(b))  # the same supervoxels
    translate = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    mine, theirs = (
        graph_rows(run_dir, "supervoxels", translate),
        graph_rows(run_dir, "other_supervoxels"),
    )
    assert len(mine) > 100
    assert mine == theirs  # every pair, its contact area and its summed affinity, exactly
    svs_a, seg_a = read_mapping(f"file://{run_dir}/segmentation", LEVELS, CTX)
    svs_b, seg_b = read_mapping(f"file://{run_dir}/other", LEVELS, CTX)
    groups_a = {frozenset(translate[int(s)] for s in svs_a[seg_a == g]) for g in np.unique(seg_a)}
    groups_b = {frozenset(svs_b[seg_b == g].tolist()) for g in np.unique(seg_b)}
    assert groups_a == groups_b


def test_edits_split_one_object_and_join_two_changing_only_those(run_dir, ray_session, tmp_path):
    edit = EditCase.of(run_dir, "segmentation", "supervoxels", 0.6)
    edits = edit.write(tmp_path / "edits.json")
    stage = {"stage": "agglomerate", "output": "edited", "merge_threshold": 0.6}
    go(run_dir, ray_session, [{**stage, "edits": str(edits)}])
    edit.check(read_volume(run_dir, "edited"))
    info = json.loads((run_dir / "edited" / "info").read_text())
    assert info["petavox_agglomeration"]["edits"]["file"] == str(edits)
