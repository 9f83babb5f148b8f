"""`petavox view` and the demo's layers in the real Neuroglancer (headless Chromium)."""

from __future__ import annotations

import copy
import gzip
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import viewer
from PIL import Image
from viewer import DEMO_SIZE, neuroglancer_browser, plain_xy_view, shaded_fraction

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.synapse.outputs import read_chunk_tables
from petavox.workflows.file_server import FileServer, origin_of
from petavox.workflows.view import (
    NEUROGLANCER,
    NEUROGLANCER_ORIGIN,
    NOT_SELECTED_ALPHA,
    SELECTED_ALPHA,
    open_view_layers,
    viewer_state,
)

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SIZE = DEMO_SIZE  # the demo's volume (conftest's `demo`): SIZE × SIZE × SIZE/4 voxels
Z = 12  # the section shown
PANEL = 400  # screenshot 2 × PANEL by PANEL: the 2D panel left, the 3D panel right
ZOOM = 4  # screen pixels per voxel in the 2D panel
COLOR_SEED = 7


def petavox(
    *args: str, env: dict[str, str] | None = None, status: int = 0
) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "petavox.workflows.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == status, f"petavox {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def state_of(link: str) -> dict:
    assert link.startswith(NEUROGLANCER)
    return json.loads(urllib.parse.unquote(link[len(NEUROGLANCER) :]))


def gzip_chunks(layer: Path) -> int:
    """Store every chunk as cloud-volume's compressed `<key>.gz`; the number of chunks."""
    chunks = [p for p in layer.glob("*/*") if p.is_file()]
    for path in chunks:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    return len(chunks)


def voxel_of_pixels(n: int) -> np.ndarray:
    """Voxel index (x or y) under each of the `n` pixel rows/columns of the 2D panel."""
    return np.floor(SIZE / 2 + (np.arange(n) + 0.5 - n / 2) / ZOOM).astype(int)


def segment_rgb(segment: int) -> np.ndarray:
    return viewer.segment_rgb(segment, COLOR_SEED)


def demo_screenshots(demo, selected: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The demo's aligned image and segmentation (the `selected` segments shown with their
    meshes) in the real viewer: 2D panel left, 3D right; and the same with the segmentation
    hidden."""
    layers = open_view_layers([str(demo / "aligned"), str(demo / "segmentation")], StorageContext())
    roots = {layer.name: layer.local_path for layer in layers}
    with (
        neuroglancer_browser() as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        state = viewer_state(layers, server.url, segments=selected)
        state.update(
            dimensions={axis: [8e-9, "m"] for axis in "xyz"},  # the demo's voxels
            position=[SIZE / 2, SIZE / 2, Z + 0.5],
            crossSectionScale=1 / ZOOM,
            projectionScale=1.5 * SIZE,  # the whole volume in the 3D panel
            showSlices=False,  # the 3D panel draws the meshes alone
            showAxisLines=False,
            showDefaultAnnotations=False,
            showScaleBar=False,
        )
        state["layers"][1]["colorSeed"] = COLOR_SEED
        hidden = copy.deepcopy(state)
        hidden["layers"][1]["visible"] = False
        shown_px = browser.screenshot(state, size=(2 * PANEL, PANEL))
        hidden_px = browser.screenshot(hidden, size=(2 * PANEL, PANEL))
    artifact = REPO / "artifacts" / "viewer.png"
    artifact.parent.mkdir(exist_ok=True)
    Image.fromarray(shown_px).save(artifact)
    print(f"screenshot: {artifact}")
    return shown_px, hidden_px


def blend_fit(
    shown: np.ndarray, grey: np.ndarray, rgb: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """For pixels that should be `rgb` blended `alpha` over `grey`, possibly drawn over by a
    line in the full colour: how far towards the full colour each is (t, 0-1) and its
    distance from the blend-to-colour segment."""
    blend = alpha * rgb + (1 - alpha) * grey
    towards = rgb - blend
    t = np.clip(
        ((shown - blend) * towards).sum(axis=1) / np.maximum((towards**2).sum(axis=1), 1e-9),
        0,
        1,
    )
    off = np.abs(shown - blend - t[:, np.newaxis] * towards).max(axis=1)
    return t, off


def assert_segments_blended(
    shown: np.ndarray, grey: np.ndarray, segment: np.ndarray, selected: list[int]
) -> None:
    """The selected segments in their colours, blended SELECTED_ALPHA over the image; where
    a segment's skeleton crosses the section, its line in the full colour (antialiased edges
    between the two); every other segment blended NOT_SELECTED_ALPHA (as `viewer_state` sets
    them over an image); pixels of no segment the image alone."""
    skeleton_pixels = 0
    for label in selected:
        mask = segment == label
        t, off = blend_fit(shown[mask], grey[mask], segment_rgb(label), SELECTED_ALPHA)
        close = off <= 3
        assert mask.sum() > 1000 and close.mean() > 0.97, (label, close.mean())
        assert (t > 0.5).mean() < 0.1  # mostly the blend, not the line
        skeleton_pixels += int((close & (t > 0.8)).sum())
    assert skeleton_pixels > 20  # the skeletons are drawn too
    others = ~np.isin(segment, selected) & (segment > 0)
    assert others.mean() > 0.3
    close = np.zeros(int(others.sum()), bool)
    for label in np.unique(segment[others]):
        mask = segment[others] == label
        pixels = (shown[others][mask], grey[others][mask])
        t, off = blend_fit(*pixels, segment_rgb(int(label)), NOT_SELECTED_ALPHA)
        close[mask] = (off <= 3) & (t < 0.2)  # no line: no skeleton unless selected
    assert close.mean() > 0.97, close.mean()
    empty = segment == 0
    assert not empty.any() or (np.abs(shown[empty] - grey[empty]).max(axis=1) <= 1).mean() > 0.99


def test_neuroglancer_draws_the_demo_image_segmentation_and_meshes(demo):
    aligned = Layer.open(f"file://{demo}/aligned")
    section = Box((0, 0, Z), (SIZE, SIZE, Z + 1))
    image = aligned.read(section)[..., 0]
    labels = Layer.open(f"file://{demo}/segmentation").read(section)[..., 0]
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    selected = [int(i) for i in ids[np.argsort(counts)[-2:]]]  # the two largest segments
    assert gzip_chunks(demo / "aligned") > 0  # the browser must inflate .gz chunks
    shown_px, hidden_px = demo_screenshots(demo, selected)

    # the 2D panel, away from the volume's edges, and the voxel under each pixel
    inner = slice(PANEL // 2 - (SIZE // 2 - 2) * ZOOM, PANEL // 2 + (SIZE // 2 - 2) * ZOOM)
    shown = shown_px[inner, inner, :3].astype(np.float64)
    grey = hidden_px[inner, inner, :3].astype(np.float64)
    voxel = voxel_of_pixels(PANEL)[inner]
    under = (voxel[np.newaxis, :], voxel[:, np.newaxis])  # pixel rows are y, columns x
    # (a) the image: grey, textured, and the section's voxels themselves
    assert np.abs(grey - grey[..., :1]).max() <= 1
    assert grey[..., 0].std() > 20
    matches = np.abs(grey[..., 0] - image[under]) <= 2
    assert matches.mean() > 0.98, f"only {matches.mean():.0%} of the pixels show their voxel"
    # (b) the segmentation over the image, with the skeletons' lines
    assert_segments_blended(shown, grey, labels[under], selected)
    # (c) the meshes: each selected segment's surface, shaded in its colour, covers part of the
    # 3D panel; with the segmentation hidden the panel has none of it (skeletons are thin lines)
    for label in selected:
        mesh_shown = shaded_fraction(shown_px[:, PANEL:, :3], segment_rgb(label))
        mesh_hidden = shaded_fraction(hidden_px[:, PANEL:, :3], segment_rgb(label))
        assert mesh_shown > 0.02 and mesh_hidden < 0.001, (label, mesh_shown, mesh_hidden)


MAGENTA = np.array([255, 0, 255])


def magenta(pixels: np.ndarray) -> np.ndarray:
    return (np.abs(pixels[..., :3].astype(int) - MAGENTA) <= 60).all(axis=-1)


def segments_px(table: dict, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Synapse lines `ids` in pixels (col, row) of a PANEL square 2D panel centred on the
    volume at ZOOM: their pre and post ends, and their z range (voxels)."""
    pre = np.column_stack([table[f"pre_{a}"][ids] for a in "xyz"]) / 8  # voxels
    post = np.column_stack([table[f"post_{a}"][ids] for a in "xyz"]) / 8
    ends = PANEL / 2 + (np.stack([pre[:, :2], post[:, :2]], axis=1) - SIZE / 2) * ZOOM
    return ends, np.sort(np.column_stack([pre[:, 2], post[:, 2]]), axis=1)


def distance_to_segments(points: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(n, m) pixel distances from each point (col, row) to each segment (m, 2 ends, 2)."""
    a, b = ends[np.newaxis, :, 0], ends[np.newaxis, :, 1]
    d = b - a
    t = ((points[:, np.newaxis] - a) * d).sum(-1) / np.maximum((d * d).sum(-1), 1e-9)
    closest = a + np.clip(t, 0, 1)[..., np.newaxis] * d
    return np.linalg.norm(points[:, np.newaxis] - closest, axis=-1)


@pytest.fixture(scope="module")
def many_synapses(demo: Path, ray_session, tmp_path_factory) -> Path:
    """`synapses` (the classical detector) and `connectome` on the demo's aligned image and
    segmentation: the demo's own cleft channel finds one or two synapses at this size, too few
    for two segments' lines to cross a section apart; what the viewer draws is the same for
    any synapse table. (In this process: the shared Ray, no CLI start.)"""
    from petavox.workflows.config import RunConfig
    from petavox.workflows.pipeline import run

    out = tmp_path_factory.mktemp("synapses")
    segmentation = f"file://{demo}/segmentation"
    stages = [
        {
            "stage": "synapses",
            "input": f"file://{demo}/aligned",
            "segmentation": segmentation,
            "output": "classical",
        },
        {"stage": "connectome", "input": "classical", "segmentation": segmentation},
    ]
    config = RunConfig.model_validate({"output": f"file://{out}", "stages": stages})
    run(config, session=ray_session, progress=False)
    return out / "classical"


def test_neuroglancer_draws_the_demo_synapses_and_filters_them_by_segment(demo, many_synapses):
    """In a 2D panel the pre -> post lines near the section are drawn; with a segment selected
    in the linked segmentation, only the lines of its synapses are."""
    table = read_chunk_tables(f"file://{many_synapses}", StorageContext())
    assert len(table["synapse_id"]) > 0
    z, pre = section_and_segment(table)
    urls = [str(demo / "segmentation"), str(many_synapses / "annotations")]
    layers = open_view_layers(urls, StorageContext())
    roots = {layer.name: layer.local_path for layer in layers}
    with (
        neuroglancer_browser() as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        state = viewer_state(layers, server.url)
        plain_xy_view(state, 8e-9, [SIZE / 2, SIZE / 2, z], 1 / ZOOM)
        linked = state["layers"][1]["linkedSegmentationLayer"]
        assert linked == {"pre": "segmentation", "post": "segmentation"}
        state["layers"][0]["visible"] = False  # the lines alone
        state["layers"][1]["annotationColor"] = "#ff00ff"
        filtered = copy.deepcopy(state)
        filtered["layers"][0]["segments"] = [str(pre)]
        filtered["layers"][1]["filterBySegmentation"] = ["pre"]
        all_px = browser.screenshot(state, size=(PANEL, PANEL))
        one_px = browser.screenshot(filtered, size=(PANEL, PANEL))
    artifact = REPO / "artifacts" / "viewer_demo_synapses.png"
    Image.fromarray(all_px).save(artifact)
    theirs = np.flatnonzero(table["pre_id"] == pre)
    for pixels, ids in ((all_px, np.arange(len(table["x"]))), (one_px, theirs)):
        ends, z_range = segments_px(table, ids)
        drawn = np.argwhere(magenta(pixels))[:, ::-1]  # (col, row)
        assert len(drawn) > 0
        near = distance_to_segments(drawn, ends)
        assert near.min(axis=1).max() <= 6  # every marked pixel is on a line of `ids`...
        crosses = (z_range[:, 0] <= z) & (z <= z_range[:, 1])
        assert crosses.any()
        assert (near[:, crosses].min(axis=0) <= 3).all()  # ...and each line through z is drawn
    # the lines of other segments' synapses through z (away from the selected ones): drawn
    # without the filter (asserted above), not with it
    others = other_lines(table, z, pre)
    assert len(others) > 0
    shown = distance_to_segments(np.argwhere(magenta(one_px))[:, ::-1], others)
    assert (shown > 3).all()


def other_lines(table: dict, z: float, pre: int) -> np.ndarray:
    """The lines (pixel ends) of the synapses of segments other than `pre` through section `z`
    and more than 10 px from every line of `pre`'s."""
    lines, z_range = segments_px(table, np.flatnonzero(table["pre_id"] != pre))
    mine, _ = segments_px(table, np.flatnonzero(table["pre_id"] == pre))
    apart = distance_to_segments(lines.reshape(-1, 2), mine).min(axis=1).reshape(-1, 2).min(1)
    return lines[(z_range[:, 0] <= z) & (z <= z_range[:, 1]) & (apart > 10)]


def section_and_segment(table: dict) -> tuple[float, int]:
    """A section z and a presynaptic segment whose lines cross it with other segments' lines
    crossing it apart from them (so the filter has something to hide): of the sections crossed
    by the most presynaptic segments first, the segment of the largest synapse there first."""
    _, z_range = segments_px(table, np.arange(len(table["x"])))
    sections = np.arange(z_range.min(), z_range.max(), 0.05)
    crossed = (z_range[:, :1] < sections) & (sections < z_range[:, 1:])
    crossed_pre = np.array([len(np.unique(table["pre_id"][column])) for column in crossed.T])
    for k in np.argsort(-crossed_pre, kind="stable"):
        z = float(sections[k])
        there = np.flatnonzero(crossed[:, k])
        for row in there[np.argsort(-table["size"][there], kind="stable")]:
            if len(other_lines(table, z, int(table["pre_id"][row]))):
                return z, int(table["pre_id"][row])
    raise AssertionError("no section where two segments' synapse lines cross apart")


class Lines:
    """The stdout lines of a running process, read by a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.queue: queue.Queue[str] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self.thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.queue.put(line.rstrip("\n"))

    def until(self, prefix: str, timeout: float = 60) -> list[str]:
        """Lines up to the first that starts with `prefix`."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while not seen or not seen[-1].startswith(prefix):
            try:
                seen.append(self.queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"no line starting with {prefix!r} in {seen}") from None
        return seen

    def rest(self) -> list[str]:
        """The remaining lines, once the process closed its stdout."""
        self.thread.join(timeout=10)
        return list(self.queue.queue)


def read(served: str, path: str, origin: str | None) -> urllib.request.Request:
    """A GET of `path` on the file server, from a page at `origin` (None: not a page)."""
    return urllib.request.Request(served + path, headers={"Origin": origin} if origin else {})


def refused(url: str) -> bool:
    host, port = urllib.parse.urlsplit(url).netloc.split(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_view_serves_local_layers_and_a_local_viewer_until_interrupted(demo):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "petavox.workflows.cli",
            "view",
            str(demo / "boundary"),
            f"file://{demo}/ground_truth",
            "--segments",
            "5,6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        output = Lines(proc)
        lines = output.until(f"  {NEUROGLANCER}")
        served = lines[0].split(" at ")[1].split("/ ")[0]
        assert served.startswith("http://127.0.0.1:")
        local_viewer = lines[lines.index("Neuroglancer, local client (works offline):") + 1]
        assert local_viewer.startswith("  http://127.0.0.1:")
        with urllib.request.urlopen(local_viewer.strip(), timeout=10) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        for origin in (origin_of(local_viewer.strip()), NEUROGLANCER_ORIGIN):
            with urllib.request.urlopen(read(served, "/boundary/info", origin), timeout=10) as info:
                assert json.loads(info.read())["type"] == "image"
                assert info.headers["Access-Control-Allow-Origin"] == origin
        with pytest.raises(urllib.error.HTTPError) as other_page:  # any other page: refused
            urllib.request.urlopen(
                read(served, "/boundary/info", "https://evil.example"), timeout=10
            )
        assert other_page.value.code == 403
        assert state_of(lines[-1].strip())["layers"] == [
            {"type": "image", "source": f"precomputed://{served}/boundary", "name": "boundary"},
            {
                "type": "segmentation",
                "source": f"precomputed://{served}/ground_truth",
                "name": "ground_truth",
                "selectedAlpha": SELECTED_ALPHA,  # over the boundary map
                "notSelectedAlpha": NOT_SELECTED_ALPHA,
                "segments": ["5", "6"],
            },
        ]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert output.rest() == ["stopped"]
        assert refused(served) and refused(local_viewer.strip())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def free_port_pair() -> int:
    """A port P with P + 1 also free (at the time of asking)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


def test_view_port_fixes_the_file_server_and_the_local_viewer(demo):
    """`--port P`: files on P, the local viewer on P + 1 (what an SSH tunnel needs); the
    viewer's port taken: refused, naming --port."""
    port = free_port_pair()
    command = ["view", str(demo / "boundary"), "--port", str(port)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "petavox.workflows.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lines = Lines(proc).until(f"  {NEUROGLANCER}")
        assert lines[0].split(" at ")[1].startswith(f"http://127.0.0.1:{port}/")
        local_viewer = lines[lines.index("Neuroglancer, local client (works offline):") + 1]
        assert local_viewer.strip().startswith(f"http://127.0.0.1:{port + 1}/")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    port = free_port_pair()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port + 1))
        taken.listen()
        bad = petavox("view", str(demo / "boundary"), "--port", str(port), status=2)
    assert "local viewer" in bad.stderr and "--port" in bad.stderr


def test_view_no_serve_and_bad_urls(demo):
    out = petavox("view", str(demo / "segmentation"), "--no-serve", "--port", "8123").stdout
    assert f"segmentation: {demo / 'segmentation'}" in out
    state = state_of(out.strip().splitlines()[-1].strip())
    assert state["layers"][0]["source"] == "precomputed://http://127.0.0.1:8123/segmentation"
    bad = petavox("view", str(demo / "raw"), str(demo), status=2)  # the run root is no layer
    assert f"no precomputed layer at file://{demo}" in bad.stderr
    assert bad.stdout == ""  # reported before anything was served
    bad = petavox("view", "ftp://127.0.0.1:1/raw", status=2)
    assert "unsupported storage URL" in bad.stderr
    port = free_port_pair()  # the file server's port taken, the viewer's (the next) free
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        bad = petavox("view", str(demo / "raw"), "--port", str(port), status=2)
    assert f"cannot serve on 127.0.0.1:{port}" in bad.stderr and "--port" in bad.stderr


def test_view_of_a_cloud_layer_prints_the_link_and_exits(moto):
    """s3:// with a custom endpoint (as for MinIO): nothing to serve; the viewer reads the
    layer path-style from the endpoint."""
    spec = LayerSpec(layer_type="image", dtype="uint8", size=Vec3(64, 64, 16), resolution=(8, 8, 8))
    moto.boto3_client().put_object(
        Bucket=moto.bucket, Key="view/raw/info", Body=json.dumps(spec.to_info()).encode()
    )
    endpoint_vars = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")
    env = {k: v for k, v in {**os.environ, **moto.env()}.items() if k not in endpoint_vars}
    out = petavox(
        "view", f"s3://{moto.bucket}/view/raw", "--s3-endpoint", moto.endpoint, env=env
    ).stdout
    assert "serving" not in out
    assert state_of(out.strip())["layers"] == [
        {
            "type": "image",
            "source": f"precomputed://{moto.endpoint}/{moto.bucket}/view/raw",
            "name": "raw",
        }
    ]


def drawn_voxels(shot: np.ndarray, layer: Layer, z: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of a PANEL-square 2D panel centred on `layer`'s x/y middle at ZOOM, inside its
    bounds by a voxel, and the voxels of section `z` (petavox's read) under them."""
    bounds = layer.bounds()
    image = layer.read(Box((*bounds.start[:2], z), (*bounds.stop[:2], z + 1)))[..., 0]
    centre = [(a + b) / 2 for a, b in zip(bounds.start, bounds.stop)]
    pixel = np.arange(PANEL) + 0.5 - PANEL / 2
    xs = np.floor(centre[0] + pixel / ZOOM).astype(int) - bounds.start[0]
    ys = np.floor(centre[1] + pixel / ZOOM).astype(int) - bounds.start[1]
    cols = np.flatnonzero((xs >= 1) & (xs < image.shape[0] - 1))
    rows = np.flatnonzero((ys >= 1) & (ys < image.shape[1] - 1))
    pixels = shot[np.ix_(rows, cols)][..., :3].astype(np.float64)
    return pixels, image[np.ix_(xs[cols], ys[rows])].T.astype(np.float64)


def test_neuroglancer_draws_an_ome_zarr_where_petavox_reads_it(tmp_path):
    """Two OME-Zarr images in the real viewer, each a grey 2D section whose pixels are the
    voxels petavox reads there: one translated (Neuroglancer reads its level-0 array, placed by
    the transform in the state), one not (the whole group, voxel centres shifted back)."""
    from foreign_data import volume, write_ome_zarr

    data = volume((6, 40, 56), seed=3)
    write_ome_zarr(tmp_path / "moved.zarr", data, "0.4")
    write_ome_zarr(
        tmp_path / "at0.zarr", data, "0.5", translations=dict.fromkeys(range(3), (0, 0, 0))
    )
    urls = [str(tmp_path / "moved.zarr"), str(tmp_path / "at0.zarr")]
    layers = open_view_layers(urls, StorageContext())
    assert layers[0].foreign.path == "0" and layers[1].foreign.path == ""  # array; group
    roots = {layer.name: layer.local_path for layer in layers}
    (REPO / "artifacts").mkdir(exist_ok=True)
    shots = []
    with (
        neuroglancer_browser() as browser,
        FileServer(roots, allowed_origins=[browser.origin]) as server,
    ):
        for n, layer in enumerate(layers):
            state = viewer_state([layer], server.url)
            bounds = layer.extent
            z = bounds.start.z + 3
            centre = [(a + b) / 2 for a, b in zip(bounds.start[:2], bounds.stop[:2])]
            plain_xy_view(state, 8e-9, [*centre, z + 0.5], 1 / ZOOM)
            state["dimensions"]["z"] = [3e-8, "m"]
            shots.append((browser.screenshot(state, size=(PANEL, PANEL)), z))
            Image.fromarray(shots[-1][0]).save(REPO / "artifacts" / f"viewer_ome_zarr_{n}.png")
    for layer, (shot, z) in zip(layers, shots):
        pixels, voxels = drawn_voxels(shot, Layer.open(layer.url), z)
        assert np.abs(pixels - pixels[..., :1]).max() <= 1  # grey
        assert pixels[..., 0].std() > 10  # drawn, not blank
        matches = np.abs(pixels[..., 0] - voxels) <= 2
        assert matches.mean() > 0.98, f"{layer.name}: {matches.mean():.0%} show their voxel"
