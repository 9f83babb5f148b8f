"""Sharded volume layers written by petavox, in the real Neuroglancer (headless Chromium),
read through `petavox view`'s file server with byte-range requests (issue 17)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from viewer import NeuroglancerBrowser, neuroglancer_browser, plain_xy_view

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, Sharding
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.file_server import FileServer
from petavox.workflows.view import open_view_layers, viewer_state

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SIZE = Vec3(128, 128, 32)
CHUNK = Vec3(32, 32, 16)  # 4 × 4 × 2 chunks
Z = 20  # the section shown: the upper layer of chunks
ZOOM = 3  # screen pixels per voxel
PANEL = SIZE.x * ZOOM  # the square 2D panel shows the whole section
COLOR_SEED = 7
# 2 × 2 × 1 chunks per shard, 8 shards; the labels' shards have 2 minishards of 2 chunks each
IMAGE_SHARDING: Sharding = {"chunks_per_shard": 4}
LABELS_SHARDING: Sharding = {
    "@type": "neuroglancer_uint64_sharded_v1",
    "hash": "identity",
    "preshift_bits": 1,
    "minishard_bits": 1,
    "shard_bits": 3,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}
BLOCKS = {  # label: (x, y, z) slices; they cross chunk and shard borders (64 voxels)
    3: np.s_[8:72, 10:60, :],
    2**40 + 17: np.s_[76:120, 20:100, :],  # needs the high 32 bits
    1234567: np.s_[16:64, 70:122, 10:],
}
REQUEST = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d+)')


def stripes() -> np.ndarray:
    """Diagonal stripes, different in every chunk, never black."""
    x, y, z = np.indices(tuple(SIZE))
    return (40 + (2 * x + y + 37 * z) % 200).astype(np.uint8)


def blocks() -> np.ndarray:
    labels = np.zeros(tuple(SIZE), np.uint64)
    for label, where in BLOCKS.items():
        labels[where] = label
    return labels


def write_layer(url: str, spec: LayerSpec, data: np.ndarray) -> int:
    """Write `data` with petavox's writer, a whole shard (or chunk) per write; the number of
    writes."""
    layer = Layer.create(url, spec)
    sharding = layer.sharding(0)
    boxes = (
        sharding.shard_boxes(layer.bounds())
        if sharding is not None
        else [b for _, b in layer.storage_chunks(layer.bounds())]
    )
    for box in boxes:
        layer.write(box, data[box.slices()])
    return len(boxes)


def write_layers(root: Path, sharded: bool) -> tuple[str, str]:
    """The stripes image and the labels, sharded or not; their URLs."""
    common = {"size": SIZE, "resolution": (8, 8, 8), "chunk_size": CHUNK}
    image = LayerSpec(
        layer_type="image",
        dtype="uint8",
        encoding="raw",
        sharding=IMAGE_SHARDING if sharded else "none",
        **common,
    )
    labels = LayerSpec(
        layer_type="segmentation",
        dtype="uint64",
        encoding="compressed_segmentation",
        sharding=LABELS_SHARDING if sharded else "none",
        **common,
    )
    urls = (f"file://{root}/image", f"file://{root}/labels")
    writes = [write_layer(urls[0], image, stripes()), write_layer(urls[1], labels, blocks())]
    assert writes == ([8, 8] if sharded else [32, 32])
    return urls


def segment_rgb(segment: int) -> np.ndarray:
    from neuroglancer.segment_colors import hex_string_from_segment_id

    text = hex_string_from_segment_id(COLOR_SEED, segment)
    return np.array([int(text[i : i + 2], 16) for i in (1, 3, 5)])


def screenshot(browser: NeuroglancerBrowser, urls: tuple[str, str]) -> np.ndarray:
    """The section at Z: the image, and over it every label in its colour, opaque."""
    layers = open_view_layers(list(urls), StorageContext())
    roots = {layer.name: layer.local_path for layer in layers}
    with FileServer(roots, allowed_origins=[browser.origin]) as server:
        state = viewer_state(layers, server.url, segments=list(BLOCKS))
        plain_xy_view(state, 8e-9, [SIZE.x / 2, SIZE.y / 2, Z + 0.5], 1 / ZOOM)
        state["layers"][1].update(colorSeed=COLOR_SEED, selectedAlpha=1.0, hoverHighlight=False)
        return browser.screenshot(state, size=(PANEL, PANEL))[..., :3]


def test_neuroglancer_draws_sharded_layers_through_byte_ranges(tmp_path, caplog):
    """Sharded layers (8 shards each, the labels' with 2 minishards per shard) draw their
    voxels, the same pixels as unsharded layers, read from the shard files by byte ranges."""
    sharded = write_layers(tmp_path / "sharded", sharded=True)
    plain = write_layers(tmp_path / "plain", sharded=False)
    for url in sharded:
        files = sorted(p.name for p in Path(url.removeprefix("file://"), "8_8_8").iterdir())
        assert files == [f"{n}.shard" for n in range(8)]
    with (
        neuroglancer_browser() as browser,
        caplog.at_level(logging.DEBUG, logger="petavox.workflows.file_server"),
    ):
        shown = screenshot(browser, sharded)
        requests = [REQUEST.search(r.getMessage()) for r in caplog.records]
        expected = screenshot(browser, plain)
    artifact = REPO / "artifacts" / "viewer_sharded.png"
    artifact.parent.mkdir(exist_ok=True)
    Image.fromarray(shown).save(artifact)

    # every pixel of the section: the label's colour, or (no label) the image's grey
    margin = slice(2 * ZOOM, PANEL - 2 * ZOOM)  # away from the volume's edges
    voxel = np.floor((np.arange(PANEL) + 0.5) / ZOOM).astype(int)[margin]
    under = (voxel[np.newaxis, :], voxel[:, np.newaxis], Z)  # pixel rows are y, columns x
    grey, labels = stripes()[under], blocks()[under]
    drawn = shown[margin, margin].astype(int)
    background = labels == 0
    assert 0.3 < background.mean() < 0.7
    assert (np.abs(drawn[background] - grey[background, np.newaxis]) <= 2).mean() > 0.98
    assert drawn[background].std() > 30  # the stripes, not a flat (loading) grey
    for label in BLOCKS:
        mask = labels == label
        close = (np.abs(drawn[mask] - segment_rgb(label)) <= 3).all(axis=1)
        assert mask.sum() > 1000 and close.mean() > 0.98, (label, close.mean())
    # the same pixels as the same data unsharded
    assert np.abs(shown.astype(int) - expected).max() <= 1

    # Neuroglancer read the shards holding the section's chunks in byte ranges (206), none of
    # them whole: in both layers the odd shards (the lowest bit of a shard's number is z)
    shards = [(m[1], int(m[2])) for m in requests if m and m[1].endswith(".shard")]
    assert {path for path, status in shards if status == 206} == {
        f"/{layer}/8_8_8/{n}.shard" for layer in ("image", "labels") for n in (1, 3, 5, 7)
    }
    assert {status for _, status in shards} == {206}
