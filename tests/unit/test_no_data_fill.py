"""No data shown to cleft and synapse models as their domain's mean (`infer.no_data_fill`): the
black margins are filled and a dark cleft is not, boundary models see the image as read, and
the chunked job equals the whole-volume prediction for any chunking, margins included."""

from __future__ import annotations

import numpy as np
import pytest
from array_layers import ArrayLayer
from scipy.ndimage import uniform_filter

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.infer.domain import IntensityMap, ModelDomain
from petavox.tasks.infer.infer_jobs import InferJob, to_layer_dtype
from petavox.tasks.infer.no_data_fill import NEUTRAL, filled, no_data_value
from petavox.tasks.infer.patches import patch_grid
from petavox.tasks.infer.whole_volume import predict_volume

SHAPE = (40, 36, 12)


def margined_image() -> np.ndarray:
    """uint8 x,y,z tissue-like noise with black margins of 3-7 voxels on two sides (wider in
    some sections) and single black voxels inside, as dark as a cleft can be."""
    rng = np.random.default_rng(3)
    raw = rng.integers(60, 220, SHAPE, dtype=np.uint8)
    for z in range(SHAPE[2]):
        raw[: 3 + z % 5, :, z] = 0
        raw[:, SHAPE[1] - 4 - z % 3 :, z] = 0
    raw[20, 18, :] = 0  # isolated zeros: data, not a margin
    return raw


def test_margins_are_filled_and_a_dark_cleft_is_not():
    raw = margined_image()
    image = raw.astype(np.float32) / 255
    box = Box.from_shape(SHAPE)
    out = filled(raw, image, 0.6, box, box)
    assert np.all(out[:3] == np.float32(0.6)) and np.all(out[:, -4:] == np.float32(0.6))
    np.testing.assert_array_equal(out[20, 18, :], 0.0)
    inside = (slice(9, 30), slice(0, 28))  # past the margins and their one-voxel rim
    np.testing.assert_array_equal(out[inside], image[inside])
    inner = Box((10, 5, 0), (30, 25, SHAPE[2]))
    untouched = image[inner.slices()]
    assert filled(raw[inner.slices()], untouched, 0.6, inner, box) is untouched  # no margin


def test_only_cleft_and_synapse_models_get_the_fill():
    domain = ModelDomain(intensity=(0.599, 0.22))
    assert no_data_value("synapses", domain) == pytest.approx(0.599)
    assert no_data_value("clefts", ModelDomain()) == NEUTRAL
    assert no_data_value("boundary", domain) is None
    assert no_data_value("affinities", domain) is None


def mean_model(batch: np.ndarray) -> np.ndarray:
    """(N, 1, Z, Y, X) → (N, 1, Z, Y, X): a 5³ mean with zero padding; it sees a black margin
    and its fill differently, and reaches 2 voxels past any voxel."""
    return np.stack([uniform_filter(p, size=(1, 5, 5, 5), mode="constant") for p in batch])


def test_the_chunked_job_equals_the_whole_volume_for_any_chunking():
    raw = margined_image()
    bounds = Box.from_shape(SHAPE)
    grid = patch_grid(bounds, Vec3(16, 16, 8), Vec3(4, 4, 2), Vec3(4, 4, 4))
    intensity = IntensityMap(1.2, -0.05)
    image = raw.astype(np.float32) / 255
    kwargs = dict(patch=grid.patch, overlap=grid.overlap, divisor=Vec3(4, 4, 4), channels=1)
    whole = predict_volume(mean_model, image, intensity=intensity, no_data_value=0.6, **kwargs)
    black = predict_volume(mean_model, image, intensity=intensity, **kwargs)
    assert np.abs(whole - black)[:8].max() > 0.1  # the fill changes what the model sees
    expected = to_layer_dtype(whole, np.dtype(np.uint8))
    for shape in [SHAPE, (8, 12, 4), (13, 7, 5)]:
        source, target = ArrayLayer(raw), ArrayLayer(np.zeros(SHAPE, np.uint8))
        job = InferJob(
            source=source,  # type: ignore[arg-type]
            target=target,  # type: ignore[arg-type]
            patches=grid,
            predict=mean_model,
            intensity=intensity,
            no_data_value=0.6,
        )
        for chunk in ChunkGrid(bounds, Vec3.of(shape)):
            job.run(chunk)
        np.testing.assert_array_equal(target.data, expected, err_msg=f"chunks of {shape}")
