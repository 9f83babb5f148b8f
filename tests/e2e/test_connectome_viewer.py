"""The connectome's annotation layer in the real Neuroglancer (headless Chromium): its lines are
drawn where the synapses are, in the layer's colour, and nothing of it with the layer hidden."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synapse_data import random_synapses
from viewer import neuroglancer_browser, plain_xy_view

from petavox.tasks.core.storage import StorageContext
from petavox.tasks.synapse import table as synapse_table
from petavox.workflows.config import parse_config
from petavox.workflows.file_server import FileServer
from petavox.workflows.pipeline import run
from petavox.workflows.view import open_view_layers, viewer_state

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PANEL = 400
NM_PER_PIXEL = 10.0
CENTRE = (2000.0, 2000.0, 200.0)  # nm: the 2D panel's centre; z is the synapses' plane
LENGTH = 300.0  # nm: each synapse a line along x
MAGENTA = np.array([255, 0, 255])


def synapses() -> dict[str, np.ndarray]:
    """Lines in the plane z = CENTRE z on a 4 × 4 grid, in two chunk tables."""
    table = random_synapses(16, seed=9)
    xs, ys = np.meshgrid(np.arange(4) * 800.0 + 600, np.arange(4) * 800.0 + 600)
    for name, value in (
        ("pre_x", xs.ravel()),
        ("post_x", xs.ravel() + LENGTH),
        ("pre_y", ys.ravel()),
        ("post_y", ys.ravel()),
        ("x", xs.ravel() + LENGTH / 2),
        ("y", ys.ravel()),
    ):
        table[name] = value
    for axis in ("pre_z", "post_z", "z"):
        table[axis] = np.full(16, CENTRE[2])
    return table


def magenta(pixels: np.ndarray) -> np.ndarray:
    return (np.abs(pixels[..., :3].astype(int) - MAGENTA) <= 60).all(axis=-1)


def test_neuroglancer_draws_the_synapse_lines(tmp_path, ray_session):
    table = synapses()
    chunks = tmp_path / "synapses" / "chunks"
    chunks.mkdir(parents=True)
    for i, half in enumerate((slice(0, 8), slice(8, 16))):
        part = {k: v[half] for k, v in table.items()}
        (chunks / f"{i}_0_0.parquet").write_bytes(synapse_table.to_parquet(part))
    stage = {
        "stage": "connectome",
        "input": "synapses",
        "shard_bits": 1,
        "readers": 2,
        "spatial_cell": 1000,
    }
    run(
        parse_config({"output": f"file://{tmp_path}", "stages": [stage]}),
        session=ray_session,
        progress=False,
    )
    layers = open_view_layers([str(tmp_path / "synapses" / "annotations")], StorageContext())
    roots = {layer.name: layer.local_path for layer in layers}
    with (
        neuroglancer_browser() as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        state = viewer_state(layers, server.url)
        plain_xy_view(state, 1e-9, list(CENTRE), NM_PER_PIXEL)
        state["layers"][0]["annotationColor"] = "#ff00ff"
        hidden = copy.deepcopy(state)
        hidden["layers"][0]["visible"] = False
        shown_px = browser.screenshot(state, size=(PANEL, PANEL))
        hidden_px = browser.screenshot(hidden, size=(PANEL, PANEL))
    artifact = REPO / "artifacts" / "viewer_synapses.png"
    artifact.parent.mkdir(exist_ok=True)
    Image.fromarray(shown_px).save(artifact)
    shown, drawn = magenta(shown_px), np.zeros((PANEL, PANEL), bool)
    for x, y in zip(table["pre_x"], table["pre_y"]):
        col = int(PANEL / 2 + (x - CENTRE[0]) / NM_PER_PIXEL)
        row = int(PANEL / 2 + (y - CENTRE[1]) / NM_PER_PIXEL)
        length = int(LENGTH / NM_PER_PIXEL)
        # the line's middle third, within a pixel of its row
        middle = shown[row - 1 : row + 2, col + length // 3 : col + 2 * length // 3]
        assert middle.any(axis=0).mean() > 0.9, f"no line at ({x}, {y})"
        drawn[row - 6 : row + 7, col - 6 : col + length + 7] = True
    assert shown[~drawn].mean() < 0.002  # nothing else in the layer's colour
    assert not magenta(hidden_px).any()
