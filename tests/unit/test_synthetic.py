"""Tests of the synthetic EM-like volume generator."""

from __future__ import annotations

import cc3d
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from petavox.tasks.core.errors import InputError
from petavox.tasks.synthetic.generator import SyntheticParams, SyntheticVolume, generate

SMALL = SyntheticParams(shape=(48, 40, 12), neurite_spacing=8.0, max_shift=2, seed=3)
MEDIUM = SyntheticParams(shape=(128, 128, 32), seed=5)


@pytest.fixture(scope="module")
def medium() -> SyntheticVolume:
    return generate(MEDIUM)


@pytest.fixture(scope="module")
def medium_clean() -> SyntheticVolume:
    return generate(
        SyntheticParams(shape=MEDIUM.shape, seed=MEDIUM.seed, noise=0.0, section_jitter=0.0)
    )


def _arrays(v: SyntheticVolume) -> list[np.ndarray]:
    return [v.raw, v.labels, v.shifts, v.synapses, v.aligned_raw]


def _check_objects(labels: np.ndarray) -> None:
    """Ids are 1..N and each id is exactly one 6-connected component."""
    ids = np.unique(labels)
    ids = ids[ids > 0]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    cc = cc3d.connected_components(labels, connectivity=6)
    assert int(cc.max()) == len(ids)


def _best_iou_fraction(truth: np.ndarray, seg: np.ndarray, min_size: int = 500) -> float:
    """Fraction of large truth objects whose best-overlapping segment has IoU > 0.5."""
    ids, sizes = np.unique(truth, return_counts=True)
    big = ids[(ids > 0) & (sizes >= min_size)]
    assert len(big) > 0
    n_seg = int(seg.max()) + 1
    pair = truth.astype(np.int64) * n_seg + seg
    pairs, overlap = np.unique(pair[np.isin(truth, big) & (seg > 0)], return_counts=True)
    t, s = pairs // n_seg, pairs % n_seg
    iou = overlap / (np.bincount(truth.ravel())[t] + np.bincount(seg.ravel())[s] - overlap)
    best = np.zeros(int(truth.max()) + 1)
    np.maximum.at(best, t, iou)
    return float(np.mean(best[big] > 0.5))


def test_deterministic_from_seed():
    a, b = generate(SMALL), generate(SMALL)
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    c = generate(SyntheticParams(shape=SMALL.shape, neurite_spacing=8.0, max_shift=2, seed=4))
    assert not np.array_equal(a.labels, c.labels)
    assert not np.array_equal(a.raw, c.raw)
    assert not np.array_equal(a.shifts, c.shifts)


@pytest.mark.parametrize("shape", [(32, 32, 8), (40, 24, 6), (17, 33, 5), (64, 20, 3), (24, 24, 1)])
def test_shapes_and_dtypes(shape):
    v = generate(SyntheticParams(shape=shape, neurite_spacing=8.0, max_shift=1))
    assert v.raw.shape == v.aligned_raw.shape == v.labels.shape == shape
    assert v.raw.dtype == v.aligned_raw.dtype == np.uint8
    assert v.labels.dtype == np.uint32
    assert v.shifts.shape == (shape[2], 2) and np.issubdtype(v.shifts.dtype, np.integer)
    assert v.synapses.ndim == 2 and v.synapses.shape[1] == 3
    assert v.synapses.dtype.kind == "f"
    assert v.labels.max() >= 2
    _check_objects(v.labels)


def test_membrane_thin_and_objects_connected(medium):
    frac = float(np.mean(medium.labels == 0))
    assert 0.03 <= frac <= 0.35
    assert medium.labels.max() >= 30
    _check_objects(medium.labels)
    # objects touch: most non-membrane voxels next to a membrane voxel have another object nearby
    sizes = np.bincount(medium.labels.ravel())[1:]
    assert sizes.max() < 0.25 * medium.labels.size  # no object swallows the volume


@pytest.mark.parametrize(
    "params",
    [
        SyntheticParams(shape=(64, 64, 16), anisotropy=4.0, seed=1),
        SyntheticParams(shape=(64, 48, 24), membrane_width=3.0, seed=2),
        SyntheticParams(shape=(64, 64, 16), n_neurites=25, n_blobs=6, seed=7),
    ],
)
def test_variants_keep_invariants(params):
    v = generate(params)
    assert 0.03 <= float(np.mean(v.labels == 0)) <= 0.35
    _check_objects(v.labels)
    assert len(v.synapses) > 0
    assert np.all(v.synapses >= 0) and np.all(v.synapses <= np.array(params.shape) - 1)
    vox = np.rint(v.synapses).astype(int)
    assert np.all(v.labels[tuple(vox.T)] == 0)


def _touch_across_z(labels: np.ndarray) -> int:
    """Number of z-neighbour voxel pairs with two different non-zero labels."""
    a, b = labels[:, :, :-1], labels[:, :, 1:]
    return int(np.sum((a > 0) & (b > 0) & (a != b)))


def test_z_boundaries_are_membrane_only_for_thin_sections():
    thin = generate(SyntheticParams(shape=(64, 64, 16), anisotropy=1.0, seed=4))
    thick = generate(SyntheticParams(shape=(64, 64, 16), anisotropy=4.0, seed=4))
    assert _touch_across_z(thin.labels) == 0
    assert _touch_across_z(thick.labels) > 0
    # in-plane, objects are always separated by membrane
    for v in (thin, thick):
        a, b = v.labels[:-1], v.labels[1:]
        assert not np.any((a > 0) & (b > 0) & (a != b))


def test_thicker_membranes_give_more_membrane():
    thin = generate(SyntheticParams(shape=(64, 64, 16), membrane_width=1.5, seed=9))
    thick = generate(SyntheticParams(shape=(64, 64, 16), membrane_width=3.0, seed=9))
    assert np.mean(thick.labels == 0) > 1.3 * np.mean(thin.labels == 0)


def test_more_neurites_give_more_objects():
    few = generate(SyntheticParams(shape=(64, 64, 16), n_neurites=5, n_blobs=0, seed=2))
    many = generate(SyntheticParams(shape=(64, 64, 16), n_neurites=60, n_blobs=0, seed=2))
    assert many.labels.max() > 2 * few.labels.max()


@pytest.mark.parametrize("fixture", ["medium", "medium_clean"])
def test_membranes_darker_than_interior(fixture, request):
    v = request.getfixturevalue(fixture)
    raw = v.aligned_raw.astype(np.float64)
    membrane, interior = raw[v.labels == 0].mean(), raw[v.labels > 0].mean()
    assert membrane < interior - 50
    assert membrane < 0.45 * 255


def test_noise_changes_image_not_labels(medium, medium_clean):
    np.testing.assert_array_equal(medium.labels, medium_clean.labels)
    diff = medium.aligned_raw.astype(np.float64) - medium_clean.aligned_raw
    assert 0.04 * 255 < diff.std() < 0.15 * 255


def test_misalignment_shifts_sections():
    v = generate(SMALL)
    assert np.abs(v.shifts).max() <= SMALL.max_shift
    assert np.any(v.shifts != 0)
    m = SMALL.max_shift
    nx, ny, _ = v.raw.shape
    for z, (dx, dy) in enumerate(v.shifts):
        shifted = v.raw[m + dx : nx - m + dx, m + dy : ny - m + dy, z]
        np.testing.assert_array_equal(shifted, v.aligned_raw[m : nx - m, m : ny - m, z])
    aligned = generate(SyntheticParams(shape=SMALL.shape, neurite_spacing=8.0, seed=SMALL.seed))
    np.testing.assert_array_equal(aligned.shifts, 0)
    np.testing.assert_array_equal(aligned.raw, aligned.aligned_raw)
    # misalignment changes only the image, not the truth or the aligned image
    np.testing.assert_array_equal(aligned.labels, v.labels)
    np.testing.assert_array_equal(aligned.aligned_raw, v.aligned_raw)
    assert not np.array_equal(v.raw, v.aligned_raw)


def test_synapses_lie_on_contacts(medium, medium_clean):
    syn = medium.synapses
    assert len(syn) >= 5
    shape = np.array(medium.labels.shape)
    assert np.all(syn >= 0) and np.all(syn <= shape - 1)
    to_membrane = ndimage.distance_transform_edt(medium.labels != 0)
    vox = np.rint(syn).astype(int)
    assert np.all(to_membrane[tuple(vox.T)] <= 2.0)
    for x, y, z in vox:  # between two different objects
        win = medium.labels[max(x - 3, 0) : x + 4, max(y - 3, 0) : y + 4, z]
        assert len(np.unique(win[win > 0])) >= 2
    # clefts are darker than ordinary membrane
    raw = medium_clean.aligned_raw.astype(np.float64)
    assert raw[tuple(vox.T)].mean() < raw[medium_clean.labels == 0].mean()
    none = generate(SyntheticParams(shape=MEDIUM.shape, seed=MEDIUM.seed, synapses=False))
    assert none.synapses.shape == (0, 3)
    np.testing.assert_array_equal(none.labels, medium.labels)


def test_thresholded_image_recovers_objects(medium_clean):
    raw, labels = medium_clean.aligned_raw.astype(np.float64), medium_clean.labels
    level = (raw[labels == 0].mean() + raw[labels > 0].mean()) / 2
    seg = cc3d.connected_components(raw > level, connectivity=6)
    assert _best_iou_fraction(labels, seg) > 0.6
    # the measure is not trivially satisfied: an unrelated truth does not match
    other = generate(SyntheticParams(shape=MEDIUM.shape, seed=MEDIUM.seed + 1, noise=0.0))
    assert _best_iou_fraction(other.labels, seg) < 0.2


def test_blurred_boundary_map_recovers_objects(medium):
    """The noisy image, inverted and blurred as a boundary map, thresholds into the objects."""
    labels = medium.labels
    boundary = ndimage.gaussian_filter(255.0 - medium.raw, (0.7, 0.7, 0.0))
    membrane, interior = boundary[labels == 0].mean(), boundary[labels > 0].mean()
    scores = []
    for f in (0.2, 0.3, 0.4):
        seg = cc3d.connected_components(
            boundary < interior + f * (membrane - interior), connectivity=6
        )
        scores.append(_best_iou_fraction(labels, seg))
    assert max(scores) > 0.6


def test_bad_params_rejected():
    with pytest.raises(InputError):
        SyntheticParams(shape=(0, 4, 4))
    with pytest.raises(InputError):
        SyntheticParams(anisotropy=0.0)
    with pytest.raises(InputError):
        SyntheticParams(max_shift=-1)


@settings(max_examples=12, deadline=None)
@given(
    x=st.integers(8, 40),
    y=st.integers(8, 40),
    z=st.integers(1, 8),
    seed=st.integers(0, 2**31),
    max_shift=st.integers(0, 3),
    aniso=st.sampled_from([1.0, 2.5]),
)
def test_invariants_hold_for_any_small_shape(x, y, z, seed, max_shift, aniso):
    p = SyntheticParams(
        shape=(x, y, z), seed=seed, max_shift=max_shift, anisotropy=aniso, neurite_spacing=6.0
    )
    v = generate(p)
    assert v.labels.shape == v.raw.shape == (x, y, z)
    _check_objects(v.labels)
    assert np.abs(v.shifts).max(initial=0) <= max_shift
    assert np.all(v.synapses >= 0) and np.all(v.synapses <= np.array([x, y, z]) - 1)
