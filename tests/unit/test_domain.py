"""A model's training domain: its metadata, the intensity map and resampling decisions, the
planner's sample of a volume, and the zoom augmentation that covers other voxel sizes."""

from __future__ import annotations

import numpy as np
import pytest

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.core.sampling import sample_boxes, sample_values, unit_values
from petavox.tasks.infer.domain import (
    IntensityMap,
    ModelDomain,
    intensity_stats,
    resampling_scale,
)
from petavox.tasks.ml import examples


def test_domain_round_trips_through_onnx_metadata_strings():
    domain = ModelDomain((8.0, 8.0, 40.0), (0.55, 0.2), 0.12, {"seeds": "distance"})
    meta = domain.metadata()
    assert all(isinstance(v, str) for v in meta.values())
    assert ModelDomain.from_metadata(meta) == domain
    assert ModelDomain.from_metadata({}) == ModelDomain()  # a model from elsewhere: nothing known


def test_intensity_map_moves_mean_and_std_onto_the_training_statistics():
    rng = np.random.default_rng(0)
    faint = np.clip(rng.normal(0.52, 0.14, 100_000), 0, 1).astype(np.float32)
    wanted = (0.57, 0.21)
    mapping = IntensityMap.between(intensity_stats(faint), wanted)
    assert not mapping.identity and mapping.scale == pytest.approx(1.5, rel=0.02)
    mapped = mapping.apply(faint.copy())
    assert intensity_stats(mapped) == pytest.approx(wanted, abs=0.01)
    assert mapped.min() >= 0 and mapped.max() <= 1


def test_intensity_map_leaves_close_or_flat_input_alone():
    assert IntensityMap.between((0.56, 0.2), (0.57, 0.21)).identity
    assert IntensityMap.between((0.5, 0.0), (0.57, 0.21)).identity  # nothing to stretch
    data = np.full(5, 0.3, np.float32)
    assert IntensityMap().apply(data) is data


def test_resampling_only_beyond_the_tolerance_and_per_axis():
    assert resampling_scale((10, 10, 10), (10, 10, 10)) is None
    assert resampling_scale((11, 9, 10), (10, 10, 10)) is None  # within ×1.2
    assert resampling_scale((10, 10, 10), None) is None  # the model records no voxel size
    assert resampling_scale((20, 20, 10), (10, 10, 10)) == (2.0, 2.0, 1.0)
    assert resampling_scale((4, 4, 40), (8, 8, 40)) == (0.5, 0.5, 1.0)


def test_sample_boxes_spread_over_the_volume_and_stay_inside():
    bounds = Box((10, 0, 5), (1010, 700, 305))
    boxes = sample_boxes(bounds)
    assert len(boxes) == 27 and all(bounds.contains(b) for b in boxes)
    assert min(b.start.x for b in boxes) < 300 and max(b.stop.x for b in boxes) > 700
    small = Box((0, 0, 0), (30, 40, 20))
    assert sample_boxes(small) == [small]  # a small volume is read whole


def test_sample_values_reads_the_layer_in_unit_range(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (300, 200, 90), dtype=np.uint8)
    spec = LayerSpec(
        layer_type="image", dtype="uint8", size=Vec3(300, 200, 90), resolution=(8, 8, 8)
    )
    layer = Layer.create(f"file://{tmp_path}/raw", spec)
    layer.write(layer.bounds(0), data)
    values = unit_values(sample_values(layer))
    assert values.shape[1] == 1 and 20_000 < len(values) < data.size
    assert values.mean() == pytest.approx(data.mean() / 255, abs=0.01)


def test_zoom_augmentation_draws_structures_larger_and_smaller_with_labels_aligned(monkeypatch):
    """Blocks of 4 voxels, each with its own label and grey value: after a zoom, wherever a
    voxel's 5×5×5 neighbourhood holds one label, the image holds that label's grey value; the
    blocks come out at many sizes."""
    monkeypatch.setattr(examples, "augment_intensity", lambda _rng, r: r.astype(np.float32) / 255)
    monkeypatch.setattr(examples, "augment_resampling", lambda _rng, x: x)
    shape = (40, 64, 64)
    grid = np.indices(shape) // 4
    gt = (grid[0] * 10_000 + grid[1] * 100 + grid[2] + 1).astype(np.int64)
    raw = ((gt * 37) % 256).astype(np.uint8)
    rng = np.random.default_rng(3)
    sizes = set()
    for _ in range(40):
        r, g = examples.random_example(rng, raw, gt, (8, 16, 16), zoom=(0.6, 2.0))
        assert r.shape == g.shape == (8, 16, 16)
        from scipy import ndimage

        uniform = ndimage.maximum_filter(g, 5) == ndimage.minimum_filter(g, 5)
        np.testing.assert_allclose(r[uniform] * 255, (g[uniform] * 37) % 256, atol=1e-3)
        sizes.add(round(16 / len(np.unique(g[4, 8])), 1))  # block width along x, in voxels
    assert min(sizes) < 3 and max(sizes) > 5  # drawn smaller and larger than 4
