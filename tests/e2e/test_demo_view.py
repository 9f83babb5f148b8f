"""The view `petavox demo` prints, drawn by the real Neuroglancer (headless Chromium): the
aligned EM filling the 2D panel, the segmentation over it semi-transparent, the largest
segments' meshes in 3D, the ground truth hidden."""

from __future__ import annotations

import copy
import json
import shlex
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from viewer import DemoRun, neuroglancer_browser, segment_rgb, shaded_fraction

from petavox.tasks.core.geometry import Box
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.demo import MESHES_SHOWN
from petavox.workflows.file_server import FileServer
from petavox.workflows.view import NEUROGLANCER, open_view_layers

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PANEL = 400  # screenshots 2 × PANEL by PANEL: the xy-3d layout's 2D panel left, 3D right
DEMO_BASE = "http://127.0.0.1:8000"  # where the demo's link reads the layers
VIEW = "view: petavox view --port 8000 "


def printed_view(stdout: str) -> tuple[list[str], dict[str, Any]]:
    """The layer folders of the `petavox view` command the demo printed, and the state of its
    Neuroglancer link."""
    lines = [line.strip() for line in stdout.splitlines()]
    paths = shlex.split(next(line for line in lines if line.startswith(VIEW))[len(VIEW) :])
    link = next(line for line in lines if line.startswith(NEUROGLANCER))
    return paths, json.loads(urllib.parse.unquote(link[len(NEUROGLANCER) :]))


def screenshots(run: DemoRun) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The demo's state, its layers served as `petavox view` would, drawn as it is ("shown"),
    with its segmentation layers hidden ("em"), and without the ground-truth layer at all
    ("no_truth"): RGB pixels of each."""
    paths, printed = printed_view(run.stdout)
    layers = open_view_layers(paths, StorageContext())
    roots = {layer.name: layer.local_path for layer in layers}
    with (
        neuroglancer_browser() as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        state = json.loads(json.dumps(printed).replace(DEMO_BASE, server.url))
        em = copy.deepcopy(state)
        for spec in em["layers"]:
            if spec["type"] == "segmentation":
                spec["visible"] = False
        no_truth = copy.deepcopy(state)
        no_truth["layers"] = [s for s in state["layers"] if s["name"] != "ground_truth"]
        shots = {
            name: browser.screenshot(s, size=(2 * PANEL, PANEL))[..., :3]
            for name, s in (("shown", state), ("em", em), ("no_truth", no_truth))
        }
    artifact = REPO / "artifacts" / "viewer_demo_view.png"
    artifact.parent.mkdir(exist_ok=True)
    Image.fromarray(shots["shown"]).save(artifact)
    print(f"screenshot: {artifact}")
    return printed, shots


def under_2d_panel(state: dict[str, Any], url: str) -> np.ndarray:
    """The voxels of the layer at `url` under the 2D panel's pixels (rows y, columns x), from
    the state's position and zoom (the demo's voxels are cubes: a canonical voxel is a voxel);
    zeros outside the layer."""
    x, y, z = state["position"]
    offsets = (np.arange(PANEL) + 0.5 - PANEL / 2) * state["crossSectionScale"]
    cols, rows = np.floor(x + offsets).astype(int), np.floor(y + offsets).astype(int)
    box = Box((cols[0], rows[0], int(z)), (cols[-1] + 1, rows[-1] + 1, int(z) + 1))
    section = Layer.open(url).read(box)[..., 0]
    return section[cols[np.newaxis, :] - cols[0], rows[:, np.newaxis] - rows[0]]


def detail_ratio(over: np.ndarray, under: np.ndarray) -> float:
    """How much of `under`'s detail (brightness steps between neighbouring pixels) shows in
    `over`: 1 - alpha for a layer blended alpha over it, 0 for an opaque one."""
    a, b = over.astype(np.float64).mean(axis=-1), under.astype(np.float64).mean(axis=-1)
    steps = [(np.diff(a, axis=k).ravel(), np.diff(b, axis=k).ravel()) for k in (0, 1)]
    ours, theirs = (np.concatenate(parts) for parts in zip(*steps))
    big = np.abs(theirs) >= 8
    assert big.mean() > 0.02  # the image has detail to see through
    return float(np.median(ours[big] / theirs[big]))


def assert_2d_panel(state: dict[str, Any], output: Path, shown: np.ndarray, em: np.ndarray) -> None:
    """The aligned EM fills the panel, every segment drawn over it, the EM seen through."""
    # the aligned section at the view's position, nearly every pixel grey, its voxel's value:
    # not Neuroglancer's flat grey background, not the raw EM or the boundary map
    assert {"position", "crossSectionScale"} <= state.keys(), "no navigation in the state"
    image = under_2d_panel(state, f"file://{output}/aligned").astype(np.float64)
    assert image.std() > 20  # the EM's texture
    matches = (np.abs(em - image[..., np.newaxis]) <= 2).all(axis=-1)
    assert matches.mean() > 0.9, f"only {matches.mean():.0%} of the 2D panel shows aligned"
    # the segmentation over it: coloured pixels over the selected segments and over the others
    # (at the demo's zoom the five largest cover most of the panel; others ~7000 pixels)
    labels = under_2d_panel(state, f"file://{output}/segmentation")
    segmentation = next(spec for spec in state["layers"] if spec["name"] == "segmentation")
    selected = np.isin(labels, [int(s) for s in segmentation.get("segments", [])])
    coloured = shown.max(axis=-1) - shown.min(axis=-1) > 20
    for where in (selected, ~selected & (labels > 0)):
        assert where.sum() > 2000 and coloured[where].mean() > 0.9, (
            where.sum(),
            coloured[where].mean(),
        )
    # ... semi-transparent: the EM's detail shows through
    ratio = detail_ratio(shown, em)
    assert 0.35 < ratio < 0.85, ratio


def test_the_demo_view_shows_the_aligned_em_its_segmentation_and_meshes(demo_run):
    state, shots = screenshots(demo_run)
    specs = {spec["name"]: spec for spec in state["layers"]}
    shown, em, no_truth = (shots[k].astype(np.float64) for k in ("shown", "em", "no_truth"))
    assert_2d_panel(state, demo_run.output, shown[:, :PANEL], em[:, :PANEL])
    # the 3D panel: the selected segments' meshes, shaded in their colours; none of that
    # with the segmentation hidden
    selected = [int(s) for s in specs["segmentation"].get("segments", [])]
    assert len(selected) == MESHES_SHOWN
    seed = specs["segmentation"].get("colorSeed", 0)
    meshes = [shaded_fraction(shown[:, PANEL:], segment_rgb(s, seed)) for s in selected]
    bare = [shaded_fraction(em[:, PANEL:], segment_rgb(s, seed)) for s in selected]
    assert sum(meshes) > 0.05 and sum(m > 0.002 for m in meshes) >= 3, meshes
    assert sum(bare) < 0.002, bare
    # the ground truth is in the state, not drawn: the same pixels without it
    assert specs["ground_truth"].get("visible") is False
    same = np.abs(shown - no_truth).max(axis=-1) <= 2
    assert same.mean() > 0.999, same.mean()
