"""Inference at the model's voxel size (`infer.resample`): chunked output equals whole-volume
output exactly, a round trip through the model's grid keeps a smooth image, and the job wiring."""

from __future__ import annotations

import math

import numpy as np
import pytest
from array_layers import ArrayLayer
from scipy.ndimage import uniform_filter

from petavox.tasks.core.geometry import Box, ChunkGrid, Vec3
from petavox.tasks.infer.domain import IntensityMap
from petavox.tasks.infer.infer_jobs import InferJob, as_model_input, to_layer_dtype
from petavox.tasks.infer.patches import PatchGrid, fit_patch
from petavox.tasks.infer.resample import Resampling, anti_alias_sigma, filter_radius

SCALES = [(0.5, 0.5, 0.5), (0.5, 0.5, 1.0), (2.0, 2.0, 2.0), (0.8, 0.8, 0.8), (1.5, 0.7, 1.0)]
BOUNDS = Box.from_shape((23, 17, 11), (5, -3, 2))  # odd sizes, an offset with a negative part


def box_model(batch: np.ndarray) -> np.ndarray:
    """(N, 1, Z, Y, X) → (N, 2, Z, Y, X): a 3×3×3 mean with zero padding plus the patch's mean,
    and its square. Every output depends on the whole patch and on where its edges are."""
    out = []
    for patch in batch:  # one patch at a time: the result does not depend on the batch
        smooth = uniform_filter(patch[0], size=3, mode="constant", cval=0.0)
        value = smooth + np.float32(patch.mean(dtype=np.float64))
        out.append(np.stack([value, value * value]))
    return np.stack(out).astype(np.float32)


def patch_grid(resampling: Resampling, patch=(8, 8, 8), overlap=(3, 2, 2)) -> PatchGrid:
    """The grid over the model's bounds, patches fitted with a divisor of 4 (so a patch can be
    larger than a thin volume and get mirrored, as with real models)."""
    bounds = resampling.model_bounds()
    fitted = fit_patch(Vec3.of(patch), bounds.shape, Vec3(4, 4, 4))
    return PatchGrid(
        bounds=bounds, patch=fitted, overlap=Vec3(*(min(o, p - 1) for o, p in zip(overlap, fitted)))
    )


def cut_tiling(bounds: Box, cuts: list[list[int]]) -> list[Box]:
    """Boxes tiling `bounds`, cut on each axis at the given offsets from its start."""
    edges = [
        [bounds.start[a], *(bounds.start[a] + c for c in cuts[a]), bounds.stop[a]] for a in range(3)
    ]
    return [
        Box((x0, y0, z0), (x1, y1, z1))
        for x0, x1 in zip(edges[0], edges[0][1:])
        for y0, y1 in zip(edges[1], edges[1][1:])
        for z0, z1 in zip(edges[2], edges[2][1:])
    ]


def tilings(bounds: Box) -> dict[str, list[Box]]:
    rng = np.random.default_rng(1)
    n = bounds.shape
    return {
        "regular 7,5,3": [c.write_box for c in ChunkGrid(bounds, (7, 5, 3))],
        "1-voxel slabs at both edges": cut_tiling(
            bounds, [[1, n[a] // 2, n[a] - 1] for a in range(3)]
        ),
        "random cuts": cut_tiling(
            bounds, [sorted(rng.choice(np.arange(1, n[a]), 3, replace=False)) for a in range(3)]
        ),
        "single voxels in a corner": cut_tiling(bounds, [[n[0] - 2, n[0] - 1], [1, 2], [1]]),
    }


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).random(tuple(BOUNDS.shape), dtype=np.float32)


@pytest.mark.parametrize("scale", SCALES, ids=str)
def test_chunked_prediction_equals_whole_volume_prediction(image, scale):
    resampling = Resampling(BOUNDS, scale)
    grid = patch_grid(resampling)
    reads: list[Box] = []

    def read(box: Box) -> np.ndarray:
        assert BOUNDS.contains(box)
        reads.append(box)
        return image[box.slices(BOUNDS.start)].copy()

    whole = resampling.predict_resampled(grid, read, BOUNDS, 2, box_model, batch=3)
    assert whole.shape == (*BOUNDS.shape, 2) and whole.dtype == np.float32
    assert np.isfinite(whole).all()
    for name, boxes in tilings(BOUNDS).items():
        out = np.full(whole.shape, np.nan, np.float32)
        for box in boxes:
            reads.clear()
            part = resampling.predict_resampled(grid, read, box, 2, box_model, batch=2)
            assert part.shape == (*box.shape, 2)
            assert reads == [resampling.read_box(grid, box)]
            out[box.slices(BOUNDS.start)] = part
        assert np.array_equal(out, whole), f"{name}: max diff {np.nanmax(abs(out - whole))}"


def smooth_image(bounds: Box, amplitude: float, wavelength: float) -> np.ndarray:
    """0.5 + amplitude · Σ_axes sin(k x_axis + phase): smooth, and a sum of one-axis parts."""
    k = 2 * np.pi / wavelength
    x, y, z = (np.arange(n, dtype=np.float64) for n in bounds.shape)
    return (
        0.5
        + amplitude * np.sin(k * x + 0.3)[:, None, None]
        + amplitude * np.sin(k * y + 1.1)[None, :, None]
        + amplitude * np.sin(k * z + 2.0)[None, None, :]
    ).astype(np.float32)


@pytest.mark.parametrize("scale", SCALES, ids=str)
def test_round_trip_with_an_identity_model_keeps_a_smooth_image(scale):
    """The error bound, per axis, for amplitude a and wavenumber k (per layer voxel): the
    anti-alias Gaussian changes a sine by at most a·k²·σ²/2; linear interpolation on a grid of
    spacing h misses a function by at most h²/8 · max|f''| = a·k²·h²/8, once from the layer
    grid (h = 1) and once back from the model grid (h = 1/scale), and interpolation never
    enlarges an error already made (its weights are convex). Each step acts on one axis and
    keeps the other axes' parts exactly, so the axes' errors add up. An axis at scale 1 is
    copied. Voxels near the faces (edge clamping) are left out."""
    bounds = Box.from_shape((40, 36, 30), (3, 0, -4))
    amplitude, wavelength = 0.12, 20.0
    image = smooth_image(bounds, amplitude, wavelength)
    resampling = Resampling(bounds, scale)
    grid = patch_grid(resampling, patch=(16, 16, 16), overlap=(4, 4, 4))
    out = resampling.predict_resampled(
        grid, lambda b: image[b.slices(bounds.start)], bounds, 1, lambda x: x.copy()
    )
    assert out.shape == (*bounds.shape, 1)
    k = 2 * np.pi / wavelength
    bound, inner = 1e-5, []
    for s, n in zip(scale, bounds.shape):
        sigma = anti_alias_sigma(s)
        if s != 1.0:
            bound += amplitude * k * k * (sigma**2 / 2 + 1 / 8 + 1 / (8 * s * s))
        edge = filter_radius(sigma) + 1 + 2 * math.ceil(1 / s)
        inner.append(slice(edge, n - edge))
    error = np.abs(out[..., 0] - image)[tuple(inner)].max()
    assert error <= bound, f"error {error:.4f} above the bound {bound:.4f}"


def test_model_bounds_ignore_float_noise():
    r = Resampling(Box.from_shape((100, 10, 3)), (0.8, 0.3, 1 / 3))
    assert r.model_bounds() == Box((0, 0, 0), (80, 3, 1))  # 10 · 0.3 is 3.0000000000000004


def test_a_grid_over_the_layer_instead_of_the_model_is_refused(image):
    resampling = Resampling(BOUNDS, (0.5, 0.5, 0.5))
    grid = PatchGrid(bounds=BOUNDS, patch=Vec3(8, 8, 8), overlap=Vec3(2, 2, 2))
    with pytest.raises(ValueError, match="model's grid"):
        resampling.predict_resampled(grid, lambda b: image, BOUNDS, 2, box_model)


def test_intensity_map_moves_mean_and_std_and_leaves_close_inputs_alone():
    found, wanted = (0.4, 0.1), (0.5, 0.2)
    m = IntensityMap.between(found, wanted)
    assert (m.scale, m.offset) == (2.0, -0.3)
    data = np.array([0.4, 0.5, 0.0, 0.9], np.float32)
    np.testing.assert_allclose(m.apply(data.copy()), [0.5, 0.7, 0.0, 1.0], atol=1e-6)
    assert IntensityMap.between((0.5, 0.2), (0.52, 0.21)).identity
    assert IntensityMap.between((0.5, 0.0), (0.5, 0.2)).identity  # nothing to stretch
    assert IntensityMap().apply(data) is data


def test_infer_job_resamples_maps_intensities_once_and_is_chunk_invariant(image):
    raw = np.rint(image * 255).astype(np.uint8)
    resampling = Resampling(BOUNDS, (0.5, 0.5, 0.8))
    grid = patch_grid(resampling)
    intensity = IntensityMap(1.4, -0.15)

    def one_channel(batch: np.ndarray) -> np.ndarray:
        return np.clip(box_model(batch)[:, :1] / 2, 0, 1)

    def job_output(chunk_shape) -> np.ndarray:
        source = ArrayLayer(raw, BOUNDS)
        target = ArrayLayer(np.zeros(tuple(BOUNDS.shape), np.uint8), BOUNDS)
        job = InferJob(
            source=source,  # type: ignore[arg-type]
            target=target,  # type: ignore[arg-type]
            patches=grid,
            predict=one_channel,
            batch=2,
            intensity=intensity,
            resampling=resampling,
        )
        for chunk in ChunkGrid(BOUNDS, chunk_shape):
            result = job.run(chunk)
            assert result["model_voxels"] == resampling.model_box(chunk.write_box).size
            assert source.reads[-1] == resampling.read_box(grid, chunk.write_box)
        return target.data

    def mapped(box: Box) -> np.ndarray:
        return intensity.apply(as_model_input(raw[box.slices(BOUNDS.start)]))

    expected = resampling.predict_resampled(grid, mapped, BOUNDS, 1, one_channel)
    expected = to_layer_dtype(expected[..., 0], np.dtype(np.uint8))
    assert expected.std() > 5
    for shape in [(23, 17, 11), (8, 8, 4), (5, 7, 3)]:
        np.testing.assert_array_equal(job_output(shape), expected)
