"""The README's reference run config (section "Run config") is a config petavox takes: with
its two ingest sources replaced by small stacks that exist and its output by a local folder,
it parses and `petavox plan` plans every one of its stages."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import yaml

from petavox.workflows.cli import main
from petavox.workflows.config import parse_config

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_config() -> dict:
    """The first YAML block after the heading `## Run config`."""
    text = README.read_text()
    section = text.index("\n## Run config")
    start = text.index("```yaml\n", section) + len("```yaml\n")
    return yaml.safe_load(text[start : text.index("```", start)])


def test_the_readme_config_plans_every_stage(tmp_path, capsys):
    data = readme_config()
    ingests = [s for s in data["stages"] if s["stage"] == "ingest"]
    assert [s["output"] for s in ingests] == ["raw", "gt"]
    rng = np.random.default_rng(0)
    image = tmp_path / "stack.npy"
    np.save(image, rng.integers(0, 256, (64, 192, 160), dtype=np.uint8))
    labels = tmp_path / "gt.h5"
    with h5py.File(labels, "w") as f:
        f["labels"] = rng.integers(0, 50, (64, 192, 160), dtype=np.uint64)
    ingests[0]["input"], ingests[1]["input"] = str(image), f"{labels}:/labels"
    data["output"] = str(tmp_path / "run")
    parse_config(data)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data))

    assert main(["plan", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    names = [s["name"].split()[0] for s in report["stages"]]
    assert names == [s["stage"] for s in data["stages"]]
    assert report["total"]["tasks"] > 0
    assert not (tmp_path / "run").exists()  # planning writes nothing
