"""The `petavox` command line, run as a user would (subprocesses joining the test's Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cc3d
import numpy as np
import pytest
from ledger_checks import recorded_results, undeclared_writes
from segment_runs import EditCase, read_volume
from viewer import DEMO_SIZE

from petavox.tasks.core.layers import Layer
from petavox.tasks.evaluate.metrics import evaluate
from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
from petavox.tasks.synthetic.misalignment import apply, random_misalignment, straight_line_part
from petavox.workflows.cli import main
from petavox.workflows.config import load_config
from petavox.workflows.demo import MAX_SHIFT, WARP, demo_shape, demo_volume

pytestmark = pytest.mark.e2e


def petavox(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"petavox {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def ingest_raw(tmp_path, address: str) -> None:
    """`raw.npy` of tmp_path as the layer `raw` beside it (8 nm voxels, 16³ chunks)."""
    petavox(
        *("ingest", str(tmp_path / "raw.npy"), f"file://{tmp_path}/raw"),
        *("--resolution", "8,8,8", "--storage-chunk", "16,16,16"),
        *("--address", address, "--quiet"),
    )


@pytest.fixture(scope="module")
def address(ray_session) -> str:
    import ray

    return ray.get_runtime_context().gcs_address


def help_of(capsys: pytest.CaptureFixture, *command: str) -> str:
    """`petavox COMMAND --help`, in this process (the entry point is tested once, below)."""
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_command_has_help(capsys):
    out = petavox("--help").stdout  # the command as installed
    for command in (
        "demo",
        "run",
        "status",
        "evaluate",
        "ingest",
        "downsample",
        "align",
        "infer",
        "segment",
        "train",
        "mesh",
        "skeletonize",
        "synapses",
        "connectome",
        "morphology",
        "classify",
        "analyze",
        "view",
    ):
        assert command in out
        text = help_of(capsys, command)
        assert "usage: petavox " + command in text
    ingest = help_of(capsys, "ingest")
    for option in ("--resolution", "--axes", "--layer-type", "--chunk-shape", "--workers"):
        assert option in ingest
    assert "--mips" in help_of(capsys, "downsample")
    segment = help_of(capsys, "segment")
    for option in ("--chunk-shape", "--mode", "--workers", "--merge-threshold", "--halo"):
        assert option in segment
    skeletonize = help_of(capsys, "skeletonize")
    for option in ("SEG_URL", "--sharded", "--dust-threshold", "--teasar-scale", "--chunk-shape"):
        assert option in skeletonize
    synapses = help_of(capsys, "synapses")
    for option in ("RAW_URL SEG_URL OUTPUT_URL", "--halo", "--seed-threshold", "--chunk-shape"):
        assert option in synapses
    assert "--segmentation" not in synapses  # a positional, not also an option
    connectome = help_of(capsys, "connectome")
    for option in ("OUTPUT_URL", "--segmentation", "--shard-bits", "--readers"):
        assert option in connectome
    morphology = help_of(capsys, "morphology")
    for option in ("SEG_URL", "--image", "--connectome", "--table-dir", "--no-skeletons"):
        assert option in morphology


def test_demo_writes_the_synthetic_volume_and_resumes(demo_run, address):
    """The e2e tests' shared demo run (tests/e2e/conftest.py, 96 × 96 × 24), then again."""
    out, first = demo_run.output, demo_run
    assert "raw" in first.stdout and "neuroglancer" in first.stdout.lower()
    volume = demo_volume(DEMO_SIZE, seed=0)
    known = random_misalignment(DEMO_SIZE // 4, MAX_SHIFT, WARP, seed=0)
    raw = Layer.open(f"file://{out}/raw")
    gt = Layer.open(f"file://{out}/ground_truth")
    np.testing.assert_array_equal(raw.read(raw.bounds()), apply(volume.raw, known))
    assert raw.num_mips == 3 and gt.layer_type == "segmentation"
    assert Layer.open(f"file://{out}/aligned").num_mips == 3
    status = petavox("status", str(out / "petavox-demo.yaml")).stdout
    assert "segment" in status and "incomplete" not in status
    # ingest ×3, align ×5 (estimate, solve, render, carry ×2), infer ×2 (boundary, clefts),
    # segment, stitch relabel (a copy: one chunk), graph, agglomerate ×3 (merge, mapping table,
    # relabel), synapses,
    # connectome ×4 (volumes, shuffle, shards, spatial index), downsample ×5, mesh ×2
    # (fragments, manifests), skeletonize ×2 (pieces, merge), morphology ×2 (parts, table),
    # classify ×2 (predict, properties) ... and evaluate, by its report, with the scores
    assert status.count("done") == 35 and "infer" in status and "align" in status
    evaluate_row = next(line for line in status.splitlines() if "evaluate" in line)
    assert "1/1 chunks done" in evaluate_row and "arand" in evaluate_row
    verified = petavox("verify", str(out)).stdout  # exit 0: every stage that wrote is whole
    assert undeclared_writes(load_config(out / "petavox-demo.yaml")) == []
    assert "mesh segmentation: manifests" in verified and "incomplete" not in verified
    assert "adapted Rand error" in first.stdout
    assert "analysis of" in first.stdout and "connected pairs" in first.stdout
    assert (out / "analysis" / "analysis.json").is_file()
    size = str(DEMO_SIZE)
    again = petavox("demo", "--size", size, "--output", str(out), "--address", address, "--quiet")
    assert again.stdout.count("(0 run") == 0  # the demo prints totals only
    assert "in 0.0 s" in again.stdout


def test_the_default_demo_segments_from_raw_within_the_target(tmp_path, address):
    """Misaligned raw → align → built-in U-Net → segment on the default volume: adapted Rand
    ≤ 0.10 (the inference issue's target) against labels carried through the alignment."""
    out = tmp_path / "demo"
    proc = petavox("demo", "--output", str(out), "--address", address, "--quiet")
    report = json.loads((out / "evaluation.json").read_text())
    assert report["arand"] <= 0.10
    assert report["voi_split"] + report["voi_merge"] < 1.0
    line = proc.stdout.split("alignment vs the known misalignment")[1]
    residual = float(line.split("residual ")[1].split(" px")[0])
    # the known misalignment (shifts and warps) was undone, all but the straight line through
    # the shifts that no aligner keeping the content's motion can tell from it
    known = random_misalignment(demo_shape(256)[2], MAX_SHIFT, WARP, seed=0)
    assert residual <= straight_line_part(known) + 1.0
    boundary = Layer.open(f"file://{out}/boundary")
    assert boundary.dtype == np.uint8 and boundary.num_mips == 3
    # every segment has a mesh and a skeleton that cloud-volume reads
    from cloudvolume import CloudVolume

    seg = Layer.open(f"file://{out}/segmentation")
    ids = [int(i) for i in np.unique(seg.read(seg.bounds())) if i]
    cv = CloudVolume(f"file://{out}/segmentation")
    meshes = cv.mesh.get(ids, fuse=False)
    assert len(ids) > 300 and all(len(meshes[i].faces) > 0 for i in ids)
    assert all(len(skel.vertices) > 0 for skel in cv.skeleton.get(ids))
    check_the_synapse_model_beats_the_classical_detector(out, proc.stdout)
    # a proofreader's edits on the demo, through the command line: one merged object split in
    # two, two objects joined into one, nothing else changed
    rule = seg.info["petavox_agglomeration"]
    edit = EditCase.of(out, "segmentation", "supervoxels", rule["merge_threshold"])
    petavox(
        "agglomerate",
        str(out / "supervoxels"),
        str(out / "edited"),
        *("--merge-threshold", str(rule["merge_threshold"])),
        *("--merge-size-penalty", str(rule["merge_size_penalty"])),
        *("--merge-size-floor", str(rule["merge_size_floor"])),
        *("--edits", str(edit.write(tmp_path / "edits.json"))),
        *("--address", address, "--quiet"),
    )
    edit.check(read_volume(out, "edited"))


def check_the_synapse_model_beats_the_classical_detector(out, stdout: str) -> None:
    """The demo's synapses (the built-in synapse model's cleft and side channels on the U-Net's
    segmentation), as it prints them, against the classical detector on the same aligned image
    and segmentation: more synapses found with the right partners and direction, no lower
    precision, and issue 24's bar of 0.9 for precision, recall and direction (the model trained
    on seeds 201-208, its threshold chosen on seeds 1-2 and its presynaptic-evidence cut on
    seeds 1-3; the demo shows seed 0)."""
    from petavox.tasks.core.geometry import Box
    from petavox.tasks.core.storage import StorageContext
    from petavox.tasks.evaluate.synapse_scores import score_synapses
    from petavox.tasks.synapse.detection import DetectorParams, detect
    from petavox.tasks.synapse.outputs import read_chunk_tables
    from petavox.workflows.demo import RESOLUTION

    image, seg, truth, clefts = (
        read_volume(out, name)
        for name in ("aligned", "segmentation", "ground_truth", "ground_truth_clefts")
    )
    pairs = demo_volume(256, seed=0).synapse_table
    box = Box((0, 0, 0), image.shape)

    def scores(table):
        return score_synapses(table, clefts, truth, seg, pairs["pre"], pairs["post"], RESOLUTION)

    channel = scores(read_chunk_tables(f"file://{out}/synapses", StorageContext()))
    classical = scores(detect(image, seg, box, box, box, RESOLUTION, DetectorParams()))
    printed = stdout.split("synapses vs ground truth: ")[1].split("\n")[0]
    assert f"{channel.detected} found" in printed and "synapse model's cleft and side" in printed
    assert f"precision {channel.precision:.2f}, recall {channel.recall:.2f}" in printed
    assert channel.right_direction > classical.right_direction, (channel, classical)
    assert channel.precision >= classical.precision, (channel, classical)
    assert min(channel.precision, channel.recall, channel.direction) >= 0.9, channel


def test_ingest_downsample_and_evaluate_commands(tmp_path, address):
    volume = generate(SyntheticParams(shape=(80, 64, 16), seed=3))
    np.save(tmp_path / "gt.npy", volume.labels.transpose(2, 1, 0))
    seg = volume.labels.copy()
    seg[seg == 2] = 1  # a merge error
    np.save(tmp_path / "seg.npy", seg.transpose(2, 1, 0))
    for name in ("gt", "seg"):
        petavox(
            "ingest",
            str(tmp_path / f"{name}.npy"),
            f"file://{tmp_path}/{name}",
            "--resolution",
            "8,8,40",
            "--layer-type",
            "segmentation",
            "--storage-chunk",
            "32,32,8",
            "--chunk-shape",
            "64,64,8",
            "--address",
            address,
            "--quiet",
        )
    petavox("downsample", f"file://{tmp_path}/gt", "--mips", "1", "--address", address, "--quiet")
    assert Layer.open(f"file://{tmp_path}/gt").num_mips == 2
    line = petavox(
        "evaluate",
        "--seg",
        f"file://{tmp_path}/seg",
        "--gt",
        f"file://{tmp_path}/gt",
        "--address",
        address,
        "--quiet",
    ).stdout
    result = json.loads(line.strip().splitlines()[-1])
    expected = evaluate(seg, volume.labels)
    assert result["arand"] == pytest.approx(expected.arand, abs=1e-12)
    assert result["voi_merge"] == pytest.approx(expected.voi_merge, abs=1e-12)
    assert result["voi_merge"] > 0 and result["voi_split"] == pytest.approx(0, abs=1e-12)


def test_segment_command_stitches_connected_components_exactly(tmp_path, address):
    volume = generate(SyntheticParams(shape=(72, 60, 20), seed=4))
    boundary = (boundary_from_labels(volume.labels, seed=4) * 255).astype(np.uint8)
    np.save(tmp_path / "boundary.npy", boundary.transpose(2, 1, 0))
    petavox(
        "ingest",
        str(tmp_path / "boundary.npy"),
        f"file://{tmp_path}/boundary",
        "--resolution",
        "8,8,8",
        "--storage-chunk",
        "8,8,4",
        "--address",
        address,
        "--quiet",
    )
    out = f"file://{tmp_path}/seg"
    petavox(
        "segment",
        f"file://{tmp_path}/boundary",
        out,
        "--mode",
        "cc",
        "--boundary-threshold",
        "0.3",
        "--chunk-shape",
        "24,16,8",
        "--address",
        address,
        "--quiet",
    )
    seg = Layer.open(out)
    got = seg.read(seg.bounds())
    want = cc3d.connected_components(boundary < 0.3 * 255, connectivity=6)
    pairs = np.unique(np.stack([got.ravel(), want.ravel()], axis=1), axis=0)
    assert len(pairs) == len(np.unique(got)) == len(np.unique(want)) > 5
    assert seg.info["data_type"] == "uint64"


def test_infer_command_writes_a_boundary_map_that_segment_takes_as_is(tmp_path, address):
    from onnx_models import conv_model

    volume = generate(SyntheticParams(shape=(64, 64, 32), seed=6))
    np.save(tmp_path / "raw.npy", volume.raw.transpose(2, 1, 0))
    ingest_raw(tmp_path, address)
    model = conv_model(tmp_path / "model.onnx")
    petavox(
        *("infer", f"file://{tmp_path}/raw", f"file://{tmp_path}/boundary", "--model", str(model)),
        *("--chunk-shape", "32,32,16", "--patch", "32,32,32", "--address", address, "--quiet"),
    )
    boundary = Layer.open(f"file://{tmp_path}/boundary")
    assert boundary.dtype == np.uint8 and boundary.num_channels == 1
    threshold = np.percentile(boundary.read(boundary.bounds()), 40) / 255
    petavox(
        "segment",
        f"file://{tmp_path}/boundary",
        f"file://{tmp_path}/seg",
        "--mode",
        "cc",
        "--boundary-threshold",
        f"{threshold:.3f}",
        "--chunk-shape",
        "32,32,16",
        "--address",
        address,
        "--quiet",
    )
    seg = Layer.open(f"file://{tmp_path}/seg")
    assert len(np.unique(seg.read(seg.bounds()))) > 5
    bad = petavox(
        "infer",
        f"file://{tmp_path}/raw",
        f"file://{tmp_path}/b2",
        "--model",
        str(tmp_path / "none.onnx"),
        "--address",
        address,
        check=False,
    )
    assert bad.returncode == 2 and "none.onnx does not exist" in bad.stderr
    assert not (tmp_path / "b2").exists()


def test_bad_input_exits_2_with_a_named_problem_and_writes_nothing(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output: file://{tmp_path}/out\n"
        "stages:\n"
        "  - stage: ingest\n"
        f"    input: {tmp_path}/missing.npy\n"
        "    resolution: [8, 8, 40]\n"
        "    chunk_shape: [100, 100, 10]\n"
    )
    proc = petavox("run", str(config), check=False)
    assert proc.returncode == 2
    assert "missing.npy" in proc.stderr
    proc = petavox("ingest", "x.npy", f"file://{tmp_path}/o", "--resolution", "8,8", check=False)
    assert proc.returncode == 2 and "--resolution" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()


def test_infer_uses_gpu_actors_when_the_cluster_has_gpus(tmp_path):
    """device: auto on a local Ray that declares one GPU: the model runs in an actor that
    reserves it (no CUDA here, so ONNX Runtime falls back to the CPU inside the actor)."""
    from onnx_models import conv_model

    volume = generate(SyntheticParams(shape=(48, 48, 16), seed=7))
    np.save(tmp_path / "raw.npy", volume.raw.transpose(2, 1, 0))
    model = conv_model(tmp_path / "model.onnx")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"output: file://{tmp_path}/out\n"
        "stages:\n"
        f"  - {{stage: ingest, input: {tmp_path}/raw.npy, resolution: [8, 8, 8],"
        " storage_chunk: [16, 16, 16]}\n"
        f"  - {{stage: infer, model: {model}, chunk_shape: [32, 32, 16]}}\n"
        "ray: {workers: 2, gpus: 1}\n"
    )
    petavox("run", str(config), "--quiet")
    results = recorded_results(tmp_path / "out" / "ledger" / "infer")
    assert len(results) == 4
    assert {r["predictor"] for r in results} == {"ActorPredictor"}


def test_a_model_from_petavox_train_runs_in_petavox_infer(tmp_path, address):
    pytest.importorskip("torch")
    volume = generate(SyntheticParams(shape=(64, 48, 32), seed=8))
    np.save(tmp_path / "raw.npy", volume.raw.transpose(2, 1, 0))
    np.save(tmp_path / "gt.npy", volume.labels.transpose(2, 1, 0))
    trained = petavox(
        *("train", "--raw", str(tmp_path / "raw.npy"), "--gt", str(tmp_path / "gt.npy")),
        *("--out", str(tmp_path / "m.onnx"), "--minutes", "0.05", "--patch", "16,16,8"),
        *("--base-channels", "4", "--quiet"),
    )
    assert "sha256:" in trained.stdout
    digest = trained.stdout.split("sha256:")[1].split()[0]
    ingest_raw(tmp_path, address)
    petavox(
        "infer",
        f"file://{tmp_path}/raw",
        f"file://{tmp_path}/boundary",
        "--model",
        str(tmp_path / "m.onnx"),
        "--model-sha256",
        digest,
        "--patch",
        "32,32,16",
        "--address",
        address,
        "--quiet",
    )
    boundary = Layer.open(f"file://{tmp_path}/boundary")
    assert boundary.read(boundary.bounds()).shape == (64, 48, 32)
    bad = petavox(
        "train",
        "--raw",
        str(tmp_path / "raw.npy"),
        "--gt",
        str(tmp_path / "x.npy"),
        "--out",
        str(tmp_path / "n.onnx"),
        check=False,
    )
    assert bad.returncode == 2 and "x.npy" in bad.stderr
