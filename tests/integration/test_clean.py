"""`petavox clean OUTPUT_URL` on real runs: a synthetic boundary map ingested and segmented on
the test session's Ray (the segment stage keeps its work under ``intermediate/segment`` and
``intermediate/agglomerate``), then cleaned; and the same on a real S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError
from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
from petavox.tasks.synthetic.misalignment import random_misalignment
from petavox.workflows.clean import clean_output
from petavox.workflows.cli import main
from petavox.workflows.config import RunConfig, dump_config, parse_config
from petavox.workflows.demo import MAX_SHIFT, WARP, demo_config, demo_volume, write_stacks
from petavox.workflows.failures import RunIncompleteError
from petavox.workflows.lease import DriverLease
from petavox.workflows.pipeline import plan_run, run

pytestmark = pytest.mark.integration

SHAPE = (64, 64, 16)
SEGMENT = {"stage": "segment", "halo": [16, 16, 16], "chunk_shape": [32, 32, 16]}
SEGMENT |= {"smoothing": 0.0, "merge_threshold": 0.7}
LEASE = ("ledger/driver.lease.json", "ledger/driver.lease.lock")  # clean takes the lease


def config_for(folder: Path, output: str | None = None, **segment) -> RunConfig:
    """Ingest `folder`/boundary.npy (written once), then segment it, into `output`."""
    source = folder / "boundary.npy"
    if not source.exists():
        volume = generate(SyntheticParams(shape=SHAPE, seed=5))
        np.save(source, boundary_from_labels(volume.labels, seed=5).transpose(2, 1, 0))
    ingest = {"stage": "ingest", "resolution": [8, 8, 8], "storage_chunk": [8, 8, 8]}
    stages = [{**ingest, "input": str(source), "output": "boundary"}, {**SEGMENT, **segment}]
    return parse_config({"output": output or f"file://{folder}/out", "stages": stages})


@pytest.fixture
def finished(tmp_path, ray_session) -> tuple[RunConfig, Path]:
    """A finished run (its config and output folder)."""
    config = config_for(tmp_path)
    run(config, session=ray_session, progress=False)
    return config, tmp_path / "out"


def files(root: Path, *, work: bool = True) -> dict[str, bytes]:
    """Every file under `root` with its bytes (`work`: with those under ``intermediate/``), but
    the driver lease's record and lock, which clean rewrites as a run does."""
    found = {}
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_file() and name not in LEASE and (work or not name.startswith("intermediate/")):
            found[name] = path.read_bytes()
    return found


def work_folders(out: Path) -> dict[str, int]:
    """``intermediate/<stage>/<id>`` -> bytes of the files in it."""
    sizes: dict[str, int] = {}
    for path in (out / "intermediate").rglob("*"):
        if path.is_file():
            folder = "/".join(path.relative_to(out).parts[:3])
            sizes[folder] = sizes.get(folder, 0) + path.stat().st_size
    return sizes


def test_clean_removes_the_work_of_finished_stages_and_a_rerun_needs_none(finished, capsys):
    config, out = finished
    work = work_folders(out)
    assert {f.split("/")[1] for f in work} == {"segment", "agglomerate"}
    kept = files(out, work=False)

    assert main(["clean", str(out)]) == 0
    printed = capsys.readouterr().out
    for folder, size in work.items():
        assert f"removed {folder}: " in printed and f"({size:,} bytes); work of segment" in printed
    assert f"({sum(work.values()):,} bytes) in 2 folder(s)" in printed.split("freed ")[1]
    assert not (out / "intermediate").exists()
    assert files(out) == kept  # layers and ledger as they were

    assert main(["verify", str(out)]) == 0
    assert main(["clean", str(out)]) == 0 and "no work files to remove" in capsys.readouterr().out
    reports = run(config, progress=False)  # a finished rerun starts no Ray
    assert [r.ran for r in reports] == [0] * len(reports) and reports[-1].skipped
    assert files(out, work=False) == kept
    # the rerun writes the infos of the stage's layers again, its work layer's too: no data
    assert all(p.name == "info" for p in (out / "intermediate").rglob("*") if p.is_file())
    path = out.parent / "run.yaml"
    path.write_text(dump_config(config))
    assert main(["run", str(path), "--quiet"]) == 0


def test_dry_run_removes_nothing(finished, capsys, monkeypatch):
    _, out = finished
    before = {**files(out), **{n: (out / n).read_bytes() for n in LEASE if (out / n).exists()}}
    work = work_folders(out)
    monkeypatch.chdir(out.parent)
    assert main(["clean", "out", "--dry-run"]) == 0  # a path, from the current directory
    printed = capsys.readouterr().out
    assert all(f"would remove {folder}: " in printed for folder in work)
    assert f"({sum(work.values()):,} bytes)" in printed.split("would free ")[1]
    after = {**files(out), **{n: (out / n).read_bytes() for n in LEASE if (out / n).exists()}}
    assert after == before  # not even the lease is taken


def test_clean_refuses_while_a_stage_that_needs_its_work_is_unfinished(tmp_path, ray_session):
    """A chunk of segment's input goes missing and segment stops with that chunk failed (within
    its budget): its fragments are in the work folder, and the resume needs them."""
    config = config_for(tmp_path, max_failures=1)
    out = tmp_path / "out"
    run(config, only=["ingest"], session=ray_session, progress=False)
    (out / "boundary" / "8_8_8" / "48-56_48-56_8-16").unlink()
    with pytest.raises(RunIncompleteError, match="1 of 4 chunks failed"):
        run(config, only=["segment"], session=ray_session, progress=False)
    assert work_folders(out)
    before = files(out)

    for dry_run in ([], ["--dry-run"]):
        assert main(["clean", str(out), *dry_run]) == 2
    assert files(out) == before  # nothing removed
    with pytest.raises(InputError, match="3/4 chunks done") as refused:
        clean_output(config.output, config.storage, dry_run=False)
    text = str(refused.value)
    assert "nothing removed" in text and "intermediate/segment/" in text
    assert "finish the run with `petavox run CONFIG`" in text

    run(config, session=ray_session, progress=False)  # ingest restores the chunk, segment ends
    assert main(["clean", str(out)]) == 0
    assert not (out / "intermediate").exists()


def test_stale_work_of_earlier_parameters_is_removed(finished, ray_session, capsys):
    """Another merge threshold: segment's own work folder is kept (its identity leaves the
    merge rule out), the agglomeration's is new; the old one is no stage's any more."""
    _, out = finished
    (old,) = [f for f in work_folders(out) if "/agglomerate/" in f]
    again = config_for(out.parent, merge_threshold=0.5)
    run(again, session=ray_session, progress=False)
    assert old in work_folders(out) and len(work_folders(out)) == 3

    assert main(["clean", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"removed {old}: " in printed and "stale: no current stage uses it" in printed
    assert printed.count("work of segment") == 2
    assert not (out / "intermediate").exists()
    assert main(["verify", str(out)]) == 0
    assert all(r.ran == 0 for r in run(again, progress=False))


def test_every_stage_resumes_without_its_work_files(tmp_path, ray_session):
    """The demo's stages, its meshes sharded: align, segment, connectome, mesh, skeletonize and
    morphology keep work files; clean removes them all, and the rerun recomputes nothing."""
    known = random_misalignment(16, MAX_SHIFT, WARP, seed=0)
    stacks = write_stacks(demo_volume(64, seed=0), known, tmp_path)
    data = demo_config(f"file://{tmp_path}/out", stacks, {}).model_dump(exclude_unset=True)
    data["stages"] = [
        s | {"format": "sharded"} if s["stage"] == "mesh" else s for s in data["stages"]
    ]
    config = parse_config(data)
    run(config, session=ray_session, progress=False)
    out = tmp_path / "out"
    kinds = {folder.split("/")[1] for folder in work_folders(out)}
    stages = {"align", "segment", "agglomerate", "connectome", "mesh", "skeletonize", "morphology"}
    assert kinds == stages

    result = clean_output(config.output, config.storage, dry_run=False)
    assert len(result.folders) == 7 and all(f.users for f in result.folders)
    assert not (out / "intermediate").exists()
    reports = run(config, session=ray_session, progress=False)
    ledgered = [r for r, p in zip(reports, plan_run(config), strict=True) if p.use_ledger]
    assert ledgered and all(r.ran == 0 for r in ledgered)  # evaluate is measured every time
    assert main(["verify", str(out)]) == 0


def test_delete_tree_removes_a_folder_and_the_parents_it_empties(tmp_path):
    url = f"file://{tmp_path}"
    objects.put(url, "intermediate/a/1/x/y.bin", b"12")
    objects.put(url, "intermediate/b/2/z.bin", b"345")
    found = {"intermediate/a/1/x/y.bin": 2, "intermediate/b/2/z.bin": 3}
    assert objects.list_tree(url, "intermediate/") == found
    objects.delete_tree(url, "intermediate/a/1/")
    assert objects.list_tree(url, "intermediate/") == {"intermediate/b/2/z.bin": 3}
    assert not (tmp_path / "intermediate" / "a").exists()
    for whole in ("", "/", "intermediate"):  # a folder, never the store or a prefix of names
        with pytest.raises(ValueError, match="takes a folder"):
            objects.delete_tree(url, whole)


def test_an_output_without_a_ledger_is_refused(tmp_path):
    assert main(["clean", str(tmp_path / "typo")]) == 2
    assert not (tmp_path / "typo").exists()  # no lease written into it


def test_clean_refuses_while_a_driver_holds_the_output(finished, capsys):
    config, out = finished
    before = files(out)
    with DriverLease(config.output, config.storage.context()):
        assert main(["clean", str(out)]) == 2
        assert "another driver" in capsys.readouterr().err
        assert main(["clean", str(out), "--dry-run"]) == 2
        assert "is running on" in capsys.readouterr().err
        assert files(out) == before
    assert main(["clean", str(out)]) == 0


# ---- on a real S3 server -------------------------------------------------------------------
ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def petavox(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """The command in its own process, with the server's credentials and no endpoint in the
    environment (the config and `--s3-endpoint` name it)."""
    base = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARS}
    return subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        timeout=600,
    )
