"""`petavox run` on the README's Quick start config, as a user runs it: what it prints at the
end (each stage's figures, the layers, the report page and the view command), the report page
with its pictures, the layers' provenance read by cloud-volume, and the warning when one
segment holds most of the volume (the config with the classical boundary map and the default
segment parameters)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from viewer import DEMO_SIZE

from petavox.tasks.synthetic.misalignment import random_misalignment
from petavox.workflows.demo import MAX_SHIFT, WARP, demo_shape, demo_volume, write_stacks

pytestmark = pytest.mark.e2e
README = Path(__file__).resolve().parents[2] / "README.md"


def quickstart_config() -> dict:
    """The run config of the README's Quick start (its first YAML block)."""
    text = README.read_text()
    section = text.index("\n## Quick start")
    start = text.index("```yaml\n", section) + len("```yaml\n")
    assert start < text.index("\n## ", section + 1), "the Quick start shows no run config"
    return yaml.safe_load(text[start : text.index("```", start)])


@pytest.fixture(scope="module")
def address(ray_session) -> str:
    import ray

    return ray.get_runtime_context().gcs_address


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the demo's stacks where the config expects them (a smaller volume)."""
    folder = tmp_path_factory.mktemp("quickstart")
    stacks = folder / "petavox-demo" / "synthetic"
    stacks.mkdir(parents=True)
    known = random_misalignment(demo_shape(128)[2], MAX_SHIFT, WARP, seed=0)
    write_stacks(demo_volume(128, seed=0), known, stacks)
    return folder


def run(folder: Path, config: dict, name: str, address: str) -> str:
    """`petavox run NAME.yaml` in `folder` (relative paths as a user gives them); its stdout."""
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    options = ("--address", address, "--quiet")
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", "run", f"{name}.yaml", *options],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def shows_data(path: Path) -> bool:
    """A PNG that is not blank: several colours, and not one flat grey."""
    image = Image.open(path)
    assert image.format == "PNG", path
    pixels = np.asarray(image.convert("RGB"))
    return len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2 and pixels.std() > 5


def test_the_quickstart_run_prints_and_writes_its_report(workdir, address):
    config = quickstart_config()
    stages = [s["stage"] for s in config["stages"]]
    out = run(workdir, config, "quickstart", address)
    output = (workdir / config["output"]).resolve()

    summary = out[out.index("what the stages made:") :]
    headings = [line.split()[0] for line in summary.splitlines() if re.match(r"  \S", line)]
    assert headings[: len(stages)] == stages  # a section per stage, in order
    assert re.search(r"\n    segmentation: \d+ segments, median [\d,]+ voxels", summary)
    assert re.search(r"\n    \d+ sections: match residual median", summary)
    assert re.search(r"adapted Rand error 0\.\d+", summary)
    assert "WARNING" not in out  # a sound segmentation is not warned about
    assert f"report: file://{output}/report/index.html" in summary
    (view,) = [line for line in summary.splitlines() if line.startswith("view: ")]
    paths = view.split()[5:]  # after "view: petavox view --port 8000"
    assert view.startswith("view: petavox view --port 8000 ")
    assert f"{output}/segmentation" in paths and all(Path(p, "info").is_file() for p in paths)

    page = (output / "report" / "index.html").read_text()
    named = re.findall(r"<h2 id='stage-\d+'>\d+\. (\w+)", page)
    assert named == stages
    images = re.findall(r"<img src='([^']+)'", page)
    assert {"segmentation: middle section", "aligned: middle section"} <= set(
        re.findall(r"<figcaption>([^<]+)</figcaption>", page)
    )
    assert len(images) >= 2 * 5  # a thumbnail and a histogram per layer written, and plots
    for name in images:
        assert shows_data(output / "report" / name), name

    from cloudvolume import CloudVolume

    from petavox.workflows.provenance import software

    for layer, stage in (("raw", "ingest"), ("aligned", "align"), ("segmentation", "segment")):
        processing = CloudVolume(f"file://{output}/{layer}").provenance.processing
        (record,) = [p for p in processing if p["stage"] == stage and not p["part"]]
        assert record["method"] == "petavox"
        assert record["version"] == software()["version"]
        assert record["parameters"]["stage"] == stage
        assert record["parameters"]["output"] == layer


def test_one_segment_over_most_of_the_volume_is_warned_about(workdir, address):
    """The README user's first try: the classical boundary map, the default segment."""
    config = quickstart_config()
    config["output"] = "./petavox-classical"
    stages = config["stages"][: [s["stage"] for s in config["stages"]].index("segment") + 1]
    for stage in stages:
        if stage["stage"] == "infer":
            stage["model"] = "classical"
    stages[-1] = {k: stages[-1][k] for k in ("stage", "input", "output")}
    config["stages"] = stages
    out = run(workdir, config, "classical", address)

    warning = re.search(
        r"WARNING: segmentation: one segment \(id \d+\) holds (\d+\.\d) % of the labelled voxels",
        out,
    )
    assert warning and float(warning.group(1)) > 50, out
    page = (workdir / "petavox-classical" / "report" / "index.html").read_text()
    assert "<p class='warning'>WARNING: segmentation: one segment" in page


def test_the_demo_reports_every_stage_with_synapses_per_volume(demo_run):
    """The demo's report (the shared small demo run) holds what its stages measured."""
    report_line = [line for line in demo_run.stdout.splitlines() if line.startswith("report: ")]
    assert report_line == [f"report: file://{demo_run.output}/report/index.html"]
    report = json.loads((demo_run.output / "report" / "report.json").read_text())
    by_stage = {}
    for section in report["stages"]:
        by_stage.setdefault(section["stage"], []).append(section)
    config = yaml.safe_load((demo_run.output / "petavox-demo.yaml").read_text())
    assert [s["stage"] for s in report["stages"]] == [s["stage"] for s in config["stages"]]

    (synapses,) = by_stage["synapses"]
    found = synapses["data"]["synapses"]
    assert found["exact"] and found["count"] > 0
    side = DEMO_SIZE * 8 / 1000  # µm (8 nm voxels)
    volume = side * side * (max(8, DEMO_SIZE // 4) * 8 / 1000)
    assert found["volume_um3"] == pytest.approx(volume)
    assert (
        f"{found['count']:,} synapses, {found['count'] / volume:.2f} per µm³"
        in synapses["lines"][0]
    )
    (connectome,) = by_stage["connectome"]
    assert connectome["data"]["connectome"]["synapses"] == found["count"]
    (align,) = by_stage["align"]
    assert "alignment" in align["data"] and any(
        f["caption"] == "per-section alignment quality" for f in align["figures"]
    )
    (evaluate,) = by_stage["evaluate"]
    assert 0 <= evaluate["data"]["scores"][0]["arand"] < 0.5
