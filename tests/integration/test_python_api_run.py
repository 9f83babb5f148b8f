"""The Python API on the shared local Ray against file:// layers: what it writes is what the
command line writes, its status is the command's, and the README's example runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from tree_compare import layer_files

import petavox
from petavox.tasks.core.layers import Layer
from petavox.workflows.cli import main

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
TASKS = {"resolution": (4, 4, 40), "storage_chunk": (32, 32, 8), "chunk_shape": (64, 64, 8)}
DOWNSAMPLE = {"stage": "downsample", "input": "raw", "mips": 2, "chunk_shape": [128, 128, 8]}


def test_the_api_writes_what_the_command_line_writes(tmp_path, ray_session, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # relative paths, as a user gives them to either
    stack = np.random.default_rng(0).integers(0, 255, (24, 150, 130), dtype=np.uint8)
    np.save("stack.npy", stack)
    options = [f"--{k.replace('_', '-')}={','.join(map(str, v))}" for k, v in TASKS.items()]
    assert main(["ingest", "stack.npy", "cli/raw", *options, "--quiet"]) == 0
    Path("cli.yaml").write_text(yaml.safe_dump({"output": "cli", "stages": [DOWNSAMPLE]}))
    assert main(["run", "cli.yaml", "--quiet"]) == 0

    reports = petavox.ingest("stack.npy", "api/raw", **TASKS, progress=False)
    assert [(r.total, r.ran) for r in reports] == [(27, 27)]
    config = {"output": "api", "stages": [DOWNSAMPLE]}
    assert [(r.total, r.ran) for r in petavox.run(config, progress=False)] == [(12, 12)]

    files = layer_files(tmp_path / "api" / "raw")
    assert files == layer_files(tmp_path / "cli" / "raw") and len(files) > 27 + 12
    raw = Layer.open(f"file://{tmp_path}/api/raw")
    assert raw.num_mips == 3
    np.testing.assert_array_equal(raw.read(raw.bounds()), stack.transpose(2, 1, 0))

    capsys.readouterr()
    assert main(["status", "cli.yaml", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["stages"]
    printed = [(r["label"], r["done"], r["total"]) for r in printed]
    rows = [(r.label, r.done, r.total) for r in petavox.status(config)]
    assert rows == printed == [("downsample raw", 12, 12)]
    # a RunConfig, and some of its stages, as `petavox run --stages`: done, so nothing runs
    again = petavox.run(petavox.RunConfig.model_validate(config), "downsample", progress=False)
    assert [(r.skipped, r.ran) for r in again] == [(12, 0)]
    # the run report, as `petavox run` writes it (the same page for the same layers)
    report = json.loads((tmp_path / "api" / "report" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == ["downsample"]
    assert report["stages"][0]["lines"] == ["raw: 3 mips (4_4_40, 8_8_40, 16_16_40 nm)"]
    assert petavox.run_report(config).page == f"file://{tmp_path}/api/report/index.html"
    cli_page = (tmp_path / "cli" / "report" / "index.html").read_text()
    assert (tmp_path / "api" / "report" / "index.html").read_text() == cli_page.replace(
        "cli", "api"
    )


def test_a_stage_function_called_again_resumes(tmp_path, ray_session):
    """The same call again finds its chunks done (a `Path` is a path, a URL its layer)."""
    np.save(tmp_path / "stack.npy", np.zeros((8, 40, 50), np.uint8))
    url = f"file://{tmp_path}/run/raw"
    first = petavox.ingest(tmp_path / "stack.npy", url, resolution=(4, 4, 40), progress=False)
    again = petavox.ingest(tmp_path / "stack.npy", url, resolution=(4, 4, 40), progress=False)
    assert [r.ran for r in first] == [1] and [(r.skipped, r.ran) for r in again] == [(1, 0)]
    assert (tmp_path / "run" / "raw" / "ledger").is_dir()  # output root: the stage's output


def readme_example() -> str:
    """The first Python block after the heading `## Python API`."""
    text = README.read_text()
    section = text.index("\n## Python API")
    start = text.index("```python\n", section) + len("```python\n")
    return text[start : text.index("```", start)]


def test_the_readme_example_runs(tmp_path, ray_session, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md: Python API", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"petavox {petavox.__version__}"
    assert out[-2:] == ["downsample raw 1 chunks run", "downsample raw 1/1"]
    raw = Layer.open(f"file://{tmp_path}/run1/raw")
    assert raw.num_mips == 3 and tuple(raw.bounds().shape) == (128, 96, 16)
