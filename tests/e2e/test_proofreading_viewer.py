"""The proofreading state in the real Neuroglancer (headless Chromium): two supervoxels the
agglomeration merged are drawn in one colour through the state's equivalences, and in two
without them."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from segment_runs import segmented_run
from viewer import neuroglancer_browser, plain_xy_view

from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.file_server import FileServer
from petavox.workflows.proofreading import load_mapping, proofreading_state
from petavox.workflows.view import open_view_layers

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CTX = StorageContext()
SHAPE = (64, 64, 16)  # x, y, z voxels of 8 nm
PANEL = 400
ZOOM = 6  # screen pixels per voxel: the 64 × 64 section fills 384 × 384 pixels
SEGMENT = {"stage": "segment", "halo": [16, 16, 16], "chunk_shape": [32, 32, 16]}
SEGMENT |= {"seeds": "distance", "merge_threshold": 0.7}  # many supervoxels, few segments


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_session) -> Path:
    """A synthetic boundary map segmented into supervoxels, merged into fewer segments."""
    folder = tmp_path_factory.mktemp("proofreading_viewer")
    return segmented_run(folder, ray_session, SHAPE, SEGMENT)


def pixel_voxels() -> tuple[np.ndarray, np.ndarray]:
    """The voxel (x or y) under each pixel column (row) of the panel, and whether the pixel
    lies well inside that voxel (away from its edges, where colours could blend)."""
    at = SHAPE[0] / 2 + (np.arange(PANEL) + 0.5 - PANEL / 2) / ZOOM
    inside = (at >= 0) & (at < SHAPE[0]) & (np.abs(at % 1 - 0.5) < 0.3)
    return np.floor(at).astype(int).clip(0, SHAPE[0] - 1), inside


def merged_pair(labels: np.ndarray, segment_of: dict[int, int]) -> tuple[int, int, int]:
    """(z, a, b): two supervoxels of one segment, both large in section z."""
    best, found = 0, None
    for z in range(labels.shape[2]):
        ids, counts = np.unique(labels[:, :, z], return_counts=True)
        area = {int(i): int(c) for i, c in zip(ids, counts) if i}
        for a in area:
            for b in area:
                same = a < b and segment_of[a] == segment_of[b]
                if same and min(area[a], area[b]) > best:
                    best, found = min(area[a], area[b]), (z, a, b)
    assert found is not None and best >= 200, "no two merged supervoxels share a section"
    return found


def rgb(seed: int, segment: int) -> np.ndarray:
    """Neuroglancer's colour of `segment` under the colour seed `seed`."""
    from neuroglancer.segment_colors import hex_string_from_segment_id

    text = hex_string_from_segment_id(seed, segment)
    return np.array([int(text[i : i + 2], 16) for i in (1, 3, 5)])


def distinct_seed(a: int, b: int) -> int:
    """A colour seed that gives `a` and `b` clearly different colours."""
    return next(s for s in range(1000) if np.abs(rgb(s, a) - rgb(s, b)).max() > 80)


def drawn_in(pixels: np.ndarray, under: np.ndarray, label: int, colour: np.ndarray) -> bool:
    """Whether the pixels well inside voxels of `label` (many) all have `colour`."""
    found = pixels[under == label][:, :3].astype(int)
    return len(found) > 100 and bool((np.abs(found - colour).max(axis=1) <= 2).all())


def test_equivalences_draw_merged_supervoxels_in_one_colour(run_dir):
    mapping = load_mapping(f"file://{run_dir}/segmentation", CTX)
    segment_of = dict(zip(mapping.supervoxels.tolist(), mapping.segments.tolist()))
    layer = Layer.open(mapping.supervoxel_layer)
    labels = layer.read(layer.bounds(0))
    z, a, b = merged_pair(labels, segment_of)
    group = sorted(s for s, seg in segment_of.items() if seg == segment_of[a])
    seed = distinct_seed(a, b)
    layers = open_view_layers([mapping.supervoxel_layer], CTX)
    roots = {v.name: v.local_path for v in layers}
    with (
        neuroglancer_browser() as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        state = proofreading_state(mapping, server.url, CTX)  # the supervoxels alone
        assert [str(s) for s in group] in state["layers"][0]["equivalences"]
        plain_xy_view(state, 8e-9, [SHAPE[0] / 2, SHAPE[1] / 2, z + 0.5], 1 / ZOOM)
        state["layers"][0]["colorSeed"] = seed
        apart = copy.deepcopy(state)
        del apart["layers"][0]["equivalences"]
        merged_px = browser.screenshot(state, size=(PANEL, PANEL))
        apart_px = browser.screenshot(apart, size=(PANEL, PANEL))
    artifact = REPO / "artifacts" / "viewer_proofreading.png"
    artifact.parent.mkdir(exist_ok=True)
    Image.fromarray(np.concatenate([merged_px, apart_px], axis=1)).save(artifact)
    voxel, inside = pixel_voxels()
    under = labels[voxel[np.newaxis, :], voxel[:, np.newaxis], z]  # rows are y, columns x
    under = np.where(inside[np.newaxis, :] & inside[:, np.newaxis], under, 0)
    # with the equivalences: both in the colour of their group (its smallest id's)
    merged = rgb(seed, group[0])
    assert drawn_in(merged_px, under, a, merged) and drawn_in(merged_px, under, b, merged)
    # without them: each in its own colour, clearly apart
    assert drawn_in(apart_px, under, a, rgb(seed, a)) and drawn_in(apart_px, under, b, rgb(seed, b))
