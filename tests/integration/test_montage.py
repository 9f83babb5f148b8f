"""`montage` on local Ray: tiles and a manifest on disk → a montaged, pyramided layer with its
report, independent of the render chunking, and refused up front on bad tiles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.tasks.montage.manifest import read_manifest
from petavox.tasks.montage.montage_jobs import read_tile_list
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.tasks.synthetic.tiles import TileDamage, cut_tiles, write_tiles
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, plan_stages, run
from petavox.workflows.stages.montage import by_section

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tile_set(tmp_path_factory):
    """Three synthetic EM sections (200×200), each cut into 3×3 damaged tiles."""
    volume = generate(SyntheticParams(shape=(200, 200, 3), seed=8)).raw
    folder = tmp_path_factory.mktemp("tiles")
    cuts = {z: cut_tiles(volume[:, :, z], TileDamage(seed=20 + z)) for z in range(3)}
    return volume, Path(write_tiles(str(folder), cuts)), cuts


def montage_config(out: Path, manifest: Path, name: str = "montaged", stages=(), **montage):
    first = {
        "stage": "montage",
        "input": str(manifest),
        "output": name,
        "resolution": [8, 8, 30],
        "storage_chunk": [64, 64, 1],
        **montage,
    }
    return parse_config({"output": f"file://{out}", "stages": [first, *stages]})


def registered_correlation(found: np.ndarray, original: np.ndarray) -> float:
    """Correlation of a montaged section with the original (both smoothed by 1 px: the
    tiles' own noise and resampling aside) once the offset between their frames (the stage's
    mean error) is taken out."""
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    smooth = [ndimage.gaussian_filter(a.astype(float), 1.0) for a in (found, original)]
    shift, _, _ = phase_cross_correlation(smooth[1], smooth[0], upsample_factor=10)
    moved = ndimage.shift(smooth[0], shift, order=1)
    inner = (slice(30, -30), slice(30, -30))
    return float(np.corrcoef(moved[inner].ravel(), smooth[1][inner].ravel())[0, 1])


def test_tiles_become_sections_independent_of_the_render_chunking(tmp_path, ray_session, tile_set):
    volume, manifest, _ = tile_set
    layers = []
    for name, shape in (("one", [256, 256, 3]), ("small", [64, 128, 1])):
        config = montage_config(tmp_path, manifest, name, chunk_shape=shape, margin=0, mips=1)
        run(config, session=ray_session, progress=False)
        layer = Layer.open(f"file://{tmp_path}/{name}")
        layers.append(layer)
    found = [layer.read(layer.bounds(0)) for layer in layers]
    np.testing.assert_array_equal(found[0], found[1])
    assert layers[0].num_mips == 2
    bounds = layers[0].bounds(0)
    assert (bounds.start[2], bounds.stop[2]) == (0, 3)
    lo = np.maximum(bounds.start[:2], 0)  # section pixels both the layer and the original hold
    hi = np.minimum(bounds.stop[:2], 200)
    for z in range(3):
        section = found[0][
            lo[0] - bounds.start[0] : hi[0] - bounds.start[0],
            lo[1] - bounds.start[1] : hi[1] - bounds.start[1],
            z,
        ]
        original = volume[lo[0] : hi[0], lo[1] : hi[1], z]
        assert registered_correlation(section, original) > 0.98
    report = json.loads((tmp_path / "one" / "montage" / "1.json").read_text())
    assert report["summary"]["tiles"] == 9 and report["summary"]["flagged"] == {}
    assert report["summary"]["residual_px"] < 0.5
    assert (tmp_path / "one" / "montage" / "1.png").read_bytes().startswith(b"\x89PNG")


def test_the_montaged_layer_feeds_align(tmp_path, ray_session, tile_set):
    _, manifest, _ = tile_set
    align = {"stage": "align", "input": "montaged", "output": "aligned", "mips": 0}
    config = montage_config(tmp_path, manifest, stages=[align], margin=8, mips=0)
    run(config, session=ray_session, progress=False)
    aligned = Layer.open(f"file://{tmp_path}/aligned")
    assert aligned.bounds(0) == Layer.open(f"file://{tmp_path}/montaged").bounds(0)
    assert aligned.read(aligned.bounds(0)).any()


def test_bad_tiles_are_refused_before_dispatch(tmp_path, tile_set):
    _, manifest, _ = tile_set
    lines = manifest.read_text().splitlines()
    missing = manifest.parent / "missing.csv"  # beside the tiles: their paths are relative
    missing.write_text("\n".join([*lines, "2,nowhere.png,10,10"]) + "\n")
    with pytest.raises(InputError, match=r"do not exist.*nowhere\.png"):
        plan_run(montage_config(tmp_path, missing))
    wide = tmp_path / "wide.png"
    Image.fromarray(np.zeros((40, 40), np.uint16)).save(wide)
    sixteen = tmp_path / "sixteen.csv"
    sixteen.write_text(f"section,file,x,y\n0,{wide},0,0\n")
    with pytest.raises(InputError, match="not an 8-bit grey image"):
        plan_run(montage_config(tmp_path, sixteen))
    assert not (tmp_path / "montaged").exists()


def test_each_solve_task_carries_only_its_own_sections_tiles(tmp_path, tile_set):
    """The driver writes each section's tile list as a work file before dispatch and the solve
    job holds none: what a task unpickles does not grow with the run's sections."""
    import pickle

    _, manifest, _ = tile_set
    lines = manifest.read_text().splitlines()
    first = manifest.parent / "first.csv"  # beside the tiles: their paths are relative
    first.write_text("\n".join([lines[0], *(line for line in lines[1:] if line[0] == "0")]))
    jobs = []
    for name, path in (("all", manifest), ("one", first)):
        (stage,) = plan_stages(montage_config(tmp_path / name, path))
        solve = stage.plans[0]
        with solve.hooks.bind(solve.job) as bound:
            jobs.append(bound)
    assert len(pickle.dumps(jobs[0])) == len(pickle.dumps(jobs[1]))
    sections = by_section(read_manifest(manifest))
    assert sorted(sections) == [0, 1, 2]
    for z, tiles in sections.items():
        assert read_tile_list(jobs[0].work_url, z, jobs[0].context) == tiles
    assert len(read_tile_list(jobs[1].work_url, 0, jobs[1].context)) == 9
    assert read_tile_list(jobs[1].work_url, 1, jobs[1].context) == ()
