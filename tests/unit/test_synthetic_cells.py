"""Tests of the synthetic generator's cell classes (somata, vessels, glia, myelin), opt-in."""

from __future__ import annotations

import hashlib

import cc3d
import numpy as np
import pytest
from scipy import ndimage

from petavox.tasks.core.errors import InputError
from petavox.tasks.synthetic.generator import SyntheticParams, SyntheticVolume, generate

CLASSES = {"neuron", "neurite", "glia", "vessel", "myelin"}
CELLS = (128, 128, 64)

#: sha256 of raw, labels and synapse_table of the default output, recorded before cell classes
#: were added: the default path must stay bit for bit the same.
DEFAULT_DIGESTS = {
    "seed0": (
        "08bf2823aff0c5bce6a90d805fb96736ea9f2bf2becf98cd4ddb4795ffc71916",
        "7f76de5f68c30c0966d757d2191b1f2fd85c57083984e2482bf2eb29ddf3d663",
        "03a368fd8b58d5d5dcbb5e5de5b1c0bbc85dae0800c0c0804429b346d7dd2afd",
    ),
    "seed1": (
        "a967d238c6c63a8ac62b98673e6bb55e1531ea8bf9f072dae815bcc543927e86",
        "4fe46f0e37aea251496a9e6d4770d07df30e1fb3f0c3ed6a3e80ed83ba92c3cd",
        "cfe239047790090bdd283ed19f03c7ae897e3923405c95a4d480f20908a3aa21",
    ),
    "seed2": (
        "3d28546189755aba5e15fff802cd841e01bb362f0fed09b0d12799410fd28bda",
        "ae9b8c36ea01f7571dda02820dbd10a8850fcde8bac3e1028131c05d365954bf",
        "0e72fd3bbb63f062f87d34e69c4d4602fcb5f65afca02b8b2b4253638fcfd3d2",
    ),
    "shifted": (
        "d938404abed338e2ebb5df608d397f1522b0330c30cf36bf9cd5832d828f2537",
        "cd837905990e0e083c98c78187426889ea5abde96a3dbc91221aef9ab09f8e3d",
        "5e89dcef1515473beaa88801a8701dd3092b65c108d8136f4c33574417256d6a",
    ),
}
DEFAULT_CASES = {
    **{f"seed{s}": SyntheticParams(shape=(96, 96, 32), seed=s) for s in range(3)},
    "shifted": SyntheticParams(
        shape=(64, 64, 24), seed=3, max_shift=4, cleft_labels=True, bold_synapses=True
    ),
}


@pytest.mark.parametrize("case", sorted(DEFAULT_CASES))
def test_default_output_is_unchanged(case):
    v = generate(DEFAULT_CASES[case])
    assert v.classes is None and v.oriented is None
    digests = tuple(hashlib.sha256(a.tobytes()).hexdigest() for a in _hashed(v))
    assert digests == DEFAULT_DIGESTS[case]


def _hashed(v: SyntheticVolume) -> list[np.ndarray]:
    return [v.raw, v.labels, v.synapse_table]


@pytest.fixture(scope="module", params=[0, 1, 2])
def cells(request) -> SyntheticVolume:
    return generate(SyntheticParams(shape=CELLS, seed=request.param, cell_classes=True))


@pytest.fixture(scope="module")
def clean_cells() -> SyntheticVolume:
    """No noise, no section jitter, no synapses: the painted looks as drawn (and blurred)."""
    return generate(
        SyntheticParams(
            shape=CELLS, seed=0, cell_classes=True, noise=0.0, section_jitter=0.0, synapses=False
        )
    )


def _class_map(v: SyntheticVolume) -> np.ndarray:
    """Each voxel's class name ("" on membrane)."""
    names = np.array([""] + [v.classes[i] for i in range(1, int(v.labels.max()) + 1)])
    return names[v.labels]


def _interior(labels: np.ndarray) -> np.ndarray:
    """Voxels at least 3 voxels (6-connected steps) from membrane: away from its blur."""
    return ndimage.binary_erosion(labels > 0, iterations=3)


def _vessel_parts(v: SyntheticVolume) -> tuple[list[int], list[int]]:
    """Vessel labels split into lumens (nothing but vessel within 2 voxels) and walls."""
    vessel = {i for i, c in v.classes.items() if c == "vessel"}
    lumens, walls = [], []
    for i in sorted(vessel):
        own = v.labels == i
        near = set(np.unique(v.labels[ndimage.binary_dilation(own, iterations=2)]).tolist())
        (lumens if near - {0, i} <= vessel else walls).append(i)
    return lumens, walls


def test_every_label_has_a_class_and_all_classes_are_present(cells):
    n = int(cells.labels.max())
    assert sorted(cells.classes) == list(range(1, n + 1))
    assert set(cells.classes.values()) == CLASSES
    assert cells.oriented == frozenset()
    assert int(cc3d.connected_components(cells.labels, connectivity=6).max()) == n
    assert len(cells.synapse_table) > 0


def test_vessel_lumen_is_brighter_than_its_wall(cells):
    lumens, walls = _vessel_parts(cells)
    assert lumens and walls
    raw = cells.aligned_raw.astype(np.float64)
    lumen, wall = raw[np.isin(cells.labels, lumens)], raw[np.isin(cells.labels, walls)]
    assert lumen.mean() > wall.mean() + 60
    assert abs(wall.mean() - 0.5 * 255) < 30


def test_myelin_is_the_darkest_class(cells):
    raw, kind = cells.aligned_raw.astype(np.float64), _class_map(cells)
    means = {c: raw[kind == c].mean() for c in CLASSES}
    assert means["myelin"] < min(means[c] for c in CLASSES - {"myelin"}) - 40
    assert means["myelin"] < 0.3 * 255


def test_glia_are_light_and_smooth(cells):
    raw, kind = cells.aligned_raw.astype(np.float64), _class_map(cells)
    inner = _interior(cells.labels)
    glia, neurite = raw[inner & (kind == "glia")], raw[inner & (kind == "neurite")]
    assert len(glia) > 100
    assert glia.std() < 0.8 * neurite.std()
    assert glia.mean() > neurite.mean()


def test_no_mitochondria_outside_neurons(clean_cells):
    """Mitochondria (and nuclear envelopes) are the only dark things inside objects."""
    raw, kind = clean_cells.aligned_raw, _class_map(clean_cells)
    inner = _interior(clean_cells.labels)
    dark = raw < 0.5 * 255
    assert dark[inner & np.isin(kind, ["neuron", "neurite"])].mean() > 1e-3
    assert not dark[inner & (kind == "glia")].any()
    lumens, _ = _vessel_parts(clean_cells)
    assert not dark[inner & np.isin(clean_cells.labels, lumens)].any()


def test_somata_are_large(cells):
    """A neuron's soma is far thicker than a typical neurite (a few thick neurites come
    close: the classifier must also see the nucleus)."""
    depth = ndimage.distance_transform_edt(np.pad(cells.labels > 0, 1, constant_values=True))
    depth = depth[1:-1, 1:-1, 1:-1]
    of = {c: [i for i, k in cells.classes.items() if k == c] for c in ("neuron", "neurite")}
    assert of["neuron"] and of["neurite"]
    radius = {c: np.array(ndimage.maximum(depth, cells.labels, ids)) for c, ids in of.items()}
    assert radius["neuron"].min() >= max(10.0, 2 * np.median(radius["neurite"]))


def test_oriented_neurons_run_along_the_orientation():
    p = SyntheticParams(
        shape=(160, 160, 160),
        seed=0,
        cell_classes=True,
        oriented_fraction=0.5,
        orientation=(1.0, 0.6, -0.4),
    )
    v = generate(p)
    axis = np.array(p.orientation) / np.linalg.norm(p.orientation)
    sizes = np.bincount(v.labels.ravel())
    big = [i for i in v.oriented if sizes[i] >= 2000]
    assert len(big) >= 2
    assert all(v.classes[i] == "neuron" for i in v.oriented)
    angles = []
    for i in big:
        _, vectors = np.linalg.eigh(np.cov(np.argwhere(v.labels == i).T.astype(np.float64)))
        angles.append(np.degrees(np.arccos(min(1.0, abs(float(vectors[:, -1] @ axis))))))
    assert np.mean(np.array(angles) < 15) >= 2 / 3, angles


def test_anisotropic_volume_keeps_the_invariants():
    v = generate(SyntheticParams(shape=(128, 128, 32), anisotropy=4.0, seed=3, cell_classes=True))
    n = int(v.labels.max())
    assert sorted(v.classes) == list(range(1, n + 1))
    assert set(v.classes.values()) == CLASSES
    assert int(cc3d.connected_components(v.labels, connectivity=6).max()) == n


def test_deterministic_from_seed():
    p = SyntheticParams(shape=(64, 64, 64), seed=4, cell_classes=True, oriented_fraction=1.0)
    a, b = generate(p), generate(p)
    for x, y in zip([*_hashed(a), a.aligned_raw], [*_hashed(b), b.aligned_raw]):
        np.testing.assert_array_equal(x, y)
    assert a.classes == b.classes and a.oriented == b.oriented and a.oriented
    c = generate(SyntheticParams(shape=(64, 64, 64), seed=5, cell_classes=True))
    assert not np.array_equal(a.labels, c.labels)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cell_classes": True, "oriented_fraction": 1.5},
        {"cell_classes": True, "oriented_fraction": -0.1},
        {"cell_classes": True, "oriented_fraction": float("nan")},
        {"cell_classes": True, "orientation": (0.0, 0.0, 0.0)},
        {"cell_classes": True, "orientation": (1.0, float("nan"), 0.0)},
        {"cell_classes": True, "orientation": (1.0, 0.0)},
        {"oriented_fraction": 0.5},
    ],
)
def test_bad_cell_params_rejected(kwargs):
    with pytest.raises(InputError):
        SyntheticParams(**kwargs)
