"""The run report's figures of a layer: which mip is read, segment sizes in mip-0 voxels, the
dominance flag, and pictures that show the data."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec, pyramid_info, write_info
from petavox.tasks.evaluate import layer_figures as figures


def labels_layer(url: str, labels: np.ndarray) -> Layer:
    spec = LayerSpec(
        layer_type="segmentation",
        dtype="uint32",
        size=Vec3(*labels.shape),
        resolution=(8, 8, 8),
        chunk_size=Vec3(16, 16, 8),
    )
    layer = Layer.create(url, spec)
    layer.write(layer.bounds(), labels)
    return layer


def two_segments(share: float, shape=(32, 32, 16)) -> np.ndarray:
    """Labels 1 and 2 over the whole volume, 1 holding `share` of it (by x slabs)."""
    labels = np.full(shape, 2, np.uint32)
    labels[: round(shape[0] * share)] = 1
    return labels


def test_sizes_and_the_largest_share_are_exact_on_a_whole_mip_0_read(tmp_path):
    labels = two_segments(0.75)
    labels[:4, :4, :4] = 0  # unlabelled voxels do not count
    layer = labels_layer(f"file://{tmp_path}/seg", labels)
    found = figures.segment_sizes(figures.overview(layer))
    assert found["exact"] and found["segments"] == 2
    assert found["labelled_voxels"] == labels.size - 64
    assert found["largest_id"] == 1
    assert found["largest_share"] == round((labels == 1).sum() / (labels.size - 64), 4)
    assert found["dominant"]
    assert not figures.segment_sizes(
        figures.overview(labels_layer(f"file://{tmp_path}/even", two_segments(0.5)))
    )["dominant"]


def test_a_layer_too_big_is_read_at_a_coarser_mip_with_sizes_in_mip_0_voxels(tmp_path):
    labels = two_segments(0.25)
    layer = labels_layer(f"file://{tmp_path}/seg", labels)
    info = pyramid_info(layer.url, layer.info, Vec3(2, 2, 2), 1)
    write_info(layer.url, info)
    layer = Layer.open(layer.url)
    coarse = labels[::2, ::2, ::2]
    layer.write(layer.bounds(1), coarse, mip=1)

    view = figures.overview(layer, max_voxels=labels.size // 2)
    assert view.mip == 1 and view.whole and not view.exact
    assert view.voxel_volume == 8
    found = figures.segment_sizes(view)
    assert found["labelled_voxels"] == labels.size  # 8 mip-0 voxels per voxel read
    assert found["source"] == "the whole volume at mip 1"

    crop = figures.overview(layer, max_voxels=coarse.size // 8)
    assert crop.mip == 1 and not crop.whole and crop.data.size <= coarse.size // 8


def test_pictures_show_the_data(tmp_path):
    labels = two_segments(0.5)
    view = figures.overview(labels_layer(f"file://{tmp_path}/seg", labels))
    thumbnail = Image.open(io.BytesIO(figures.thumbnail_png(view, "segmentation")))
    assert thumbnail.format == "PNG"
    assert max(thumbnail.size) >= figures.THUMBNAIL_SIDE // 2  # small sections are enlarged
    colours = {c for _, c in thumbnail.convert("RGB").getcolors(1 << 16)}
    assert len(colours) == 2  # one colour per segment, none black
    assert (0, 0, 0) not in colours
    histogram = Image.open(io.BytesIO(figures.histogram_png(view, "segmentation", "sizes")))
    assert histogram.format == "PNG" and np.asarray(histogram.convert("L")).std() > 0


def test_the_same_id_gets_the_same_colour_and_zero_is_black():
    ids = np.array([[0, 5, 5, 7]], np.uint64)
    rgb = figures.segment_colours(ids)
    assert (rgb[0, 0] == 0).all()
    assert (rgb[0, 1] == rgb[0, 2]).all() and not (rgb[0, 1] == rgb[0, 3]).all()


def test_values_of_a_probability_map():
    data = np.zeros((10, 10, 4), np.uint8)
    data[:3] = 200
    view = figures.Overview(data=data, mip=0, voxel_volume=1.0, whole=True)
    found = figures.value_figures(view)
    assert found["zero_fraction"] == 0.7
    assert found["above_half"] == 0.3
    assert found["p99"] == 200
