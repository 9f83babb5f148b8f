"""The partner ranker (`partner_ranker`): what it sees of the segments around a cleft, that
those features tell the partner across the cleft from a neighbour at its rim, that its fit
learns a rule from examples, that a bad ranker file is refused with the fix, and that examples made
from a synthetic volume with perfect side channels teach the right pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cleft_volumes import bold, filled, perfect_sides

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Vec3
from petavox.tasks.core.layers import Layer, LayerSpec
from petavox.tasks.synapse.cleft_channel import CleftParams
from petavox.tasks.synapse.partner_ranker import (
    FEATURES,
    PAIR_FEATURES,
    PartnerRanker,
    candidates,
    fit_weights,
    load_ranker,
    pair_rows,
    save_ranker,
)
from petavox.tasks.synapse.ranker_examples import accuracy, ranker_examples
from petavox.workflows import train_partner_ranker

RES = (8.0, 8.0, 8.0)
FACE = FEATURES.index("log voxels over the cleft's face")
AXIS = FEATURES.index("mean distance from the cleft's axis / cleft radius")


def rim_neighbour() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cleft (x 10-11, y 6-17) between segment 1 (x < 10) and segment 2 (x >= 12), and
    segment 3 beside it past its rim (y >= 18, every x): the cleft, the segmentation, and side
    channels as a blurry model gives them: presynaptic probability on 2 near the cleft and on
    3 all around its rim (more of it than on 2), postsynaptic on 1."""
    seg = np.ones((22, 24, 12), np.uint32)
    seg[12:] = 2
    seg[:, 18:] = 3
    cleft = np.zeros(seg.shape, bool)
    cleft[10:12, 6:18, 2:10] = True
    seg[cleft] = 0
    sides = np.zeros((*seg.shape, 2), np.float32)
    sides[12:16, 6:18, 2:10, 0] = 0.6
    sides[:, 18:22, :, 0] = 0.6
    sides[6:10, 6:18, 2:10, 1] = 0.6
    return cleft, seg, sides


def test_candidates_see_the_face_and_the_rim():
    cleft, seg, sides = rim_neighbour()
    found = candidates(cleft, seg, sides, np.ones(3), reach=5.0)
    assert found.labels.tolist() == [1, 2, 3]
    face, axis = found.features[:, FACE], found.features[:, AXIS]
    assert face[0] > face[2] and face[1] > face[2]  # the partners lie over the cleft's face
    assert axis[2] > axis[0] and axis[2] > axis[1]  # the neighbour lies past its rim
    assert found.offset[0] * found.offset[1] < 0  # partners on opposite sides of its plane
    pre_mass = np.expm1(found.features[:, 0])
    assert pre_mass[2] > pre_mass[1]  # the most presynaptic mass is the neighbour's
    pairs, rows = pair_rows(found)
    assert len(pairs) == 6 and rows.shape == (6, 2 * len(FEATURES) + len(PAIR_FEATURES))


def test_the_features_tell_the_partner_across_the_cleft_from_the_rim():
    """Weights on mass alone (the first rule: the presynaptic partner has the most presynaptic
    mass, the postsynaptic one the most postsynaptic) take the neighbour at the rim; weights
    that also charge lying away from the cleft's axis take the partner across the cleft. A
    side without probability has no partner."""
    cleft, seg, sides = rim_neighbour()
    found = candidates(cleft, seg, sides, np.ones(3), reach=5.0)
    width = len(FEATURES)
    mass = np.zeros(2 * width + len(PAIR_FEATURES))
    mass[0] = mass[width + 1] = 1.0
    axis = mass.copy()
    axis[AXIS] = -5.0
    assert PartnerRanker(tuple(mass), "mass").choose(found) == (3, 1)
    assert PartnerRanker(tuple(axis), "axis").choose(found) == (2, 1)
    nothing = candidates(cleft, seg, np.zeros_like(sides), np.ones(3), reach=5.0)
    assert load_ranker().choose(nothing) == (0, 0)


def test_fit_learns_a_rule_from_examples():
    """Pairs whose first column minus second is highest are right (two right pairs in some
    examples); weights fit on 200 examples pick the right pair on 200 others."""
    rng = np.random.default_rng(0)

    def examples(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        made = []
        for _ in range(n):
            rows = rng.normal(size=(int(rng.integers(2, 12)), 3))
            score = rows[:, 0] - rows[:, 1]
            right = score >= np.sort(score)[-2 if rng.random() < 0.3 else -1]
            made.append((rows, right))
        return made

    w = fit_weights(examples(200))
    assert w[0] > 0 > w[1] and abs(w[2]) < 0.5 * w[0]
    test = examples(200)
    assert np.mean([right[np.argmax(rows @ w)] for rows, right in test]) >= 0.95
    with pytest.raises(InputError, match="no cleft"):
        fit_weights([])


def test_saved_rankers_load_and_bad_ones_are_refused(tmp_path):
    width = 2 * len(FEATURES) + len(PAIR_FEATURES)
    path = tmp_path / "ranker.json"
    save_ranker(path, np.arange(width) / 10, {"demos": []})
    loaded = load_ranker(str(path))
    assert loaded.weights == tuple(np.arange(width) / 10) and len(loaded.checksum) == 16
    assert loaded.checksum != load_ranker().checksum
    record = json.loads(path.read_text())
    for broken in ({**record, "features": record["features"][:-1]}, {**record, "weights": [1]}):
        bad = tmp_path / f"bad{len(broken['features'])}{len(broken['weights'])}.json"
        bad.write_text(json.dumps(broken))
        with pytest.raises(InputError, match="train_partner_ranker"):
            load_ranker(str(bad))
    with pytest.raises(InputError, match="cannot read the partner ranker"):
        load_ranker(str(tmp_path / "missing.json"))


def perfect_examples(seed: int) -> list:
    """The ranker examples of a synthetic volume with perfect side channels and a segmentation
    that fills the membranes."""
    volume = bold((seed,), (128, 128, 64))[0]
    truth = volume.synapse_table
    return ranker_examples(
        perfect_sides(volume),
        volume.raw,
        filled(volume.labels),
        volume.clefts,
        volume.labels,
        truth["pre"],
        truth["post"],
        RES,
        CleftParams(threshold=0.5),
    )


def test_examples_from_perfect_sides_teach_the_true_pairs():
    """On synthetic volumes with perfect side channels and a segmentation that fills the
    membranes, every found cleft yields an example, the shipped ranker picks the right pair,
    and so does one fit on those examples alone."""
    found = perfect_examples(31) + perfect_examples(32)
    assert len(found) >= 20
    assert accuracy(found, load_ranker()) >= 0.95
    fitted = PartnerRanker(tuple(fit_weights([(e.rows, e.right) for e in found])), "fit")
    assert accuracy(found, fitted) >= 0.95


def test_the_fitting_script_writes_a_ranker_that_loads(tmp_path, monkeypatch, capsys):
    """`train_partner_ranker` fits on its demos' examples (here from perfect sides, in place of
    reading demo folders), writes a ranker `load_ranker` reads, records the demo commands (not
    the folders' URLs) and scores its `--check` volumes."""
    found = perfect_examples(33)
    monkeypatch.setattr(train_partner_ranker, "demo_examples", lambda url, seed, p: (found, 128))
    out = tmp_path / "ranker.json"
    args = [str(out), "--demo", "file:///somewhere/d1", "7", "--check", "file:///else/d2", "8"]
    assert train_partner_ranker.main(args) == 0
    record = json.loads(out.read_text())
    assert record["trained_on"] == {
        "volumes": ["petavox demo --size 128 --seed 7"],
        "clefts": len(found),
    }
    assert "somewhere" not in out.read_text()
    assert accuracy(found, load_ranker(str(out))) >= 0.95
    printed = capsys.readouterr().out
    assert f"{len(found)} clefts with their partners" in printed and "check file:///else" in printed


def write_crop(folder: Path, volume, partners: str) -> Path:
    """A lab's crop of `volume` as precomputed layers, a partners CSV and its manifest."""
    arrays = {
        "image": volume.raw,
        "segmentation": filled(volume.labels).astype(np.uint32),
        "clefts": perfect_sides(volume),
        "cleft_labels": volume.clefts.astype(np.uint32),
        "ground_truth": volume.labels.astype(np.uint32),
    }
    for name, data in arrays.items():
        image = name in ("image", "clefts")
        spec = LayerSpec(
            layer_type="image" if image else "segmentation",
            dtype=data.dtype.name,
            size=Vec3.of(data.shape[:3]),
            resolution=RES,
            chunk_size=Vec3(64, 64, 32),
            num_channels=data.shape[3] if data.ndim == 4 else 1,
        )
        layer = Layer.create(f"file://{folder}/{name}", spec)
        layer.write(layer.bounds(0), data)
    (folder / "partners.csv").write_text(partners)
    manifest = folder / "crop.json"
    manifest.write_text(json.dumps({**{k: k for k in arrays}, "partners": "partners.csv"}))
    return manifest


def test_a_labs_annotated_crop_fits_a_ranker(tmp_path, capsys):
    """`--crop` reads a manifest of layers (paths relative to it) and a cleft,pre,post table;
    a bad table or a manifest without a layer is exit 2 with what to fix."""
    volume = bold((34,), (128, 128, 64))[0]
    table = volume.synapse_table
    pairs = enumerate(zip(table["pre"], table["post"]), 1)
    rows = "".join(f"{k},{p},{q}\n" for k, (p, q) in pairs)
    manifest = write_crop(tmp_path, volume, "cleft,pre,post\n" + rows)
    out = tmp_path / "ranker.json"
    argv = [str(out), "--crop", str(manifest), "--threshold", "0.5"]
    assert train_partner_ranker.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["trained_on"]["volumes"] == ["crop crop.json"]
    assert record["trained_on"]["clefts"] >= 10
    (tmp_path / "partners.csv").write_text("cleft;pre;post\n1;2;3\n")
    assert train_partner_ranker.main(argv) == 2
    assert "header cleft,pre,post" in capsys.readouterr().err
    spec = json.loads(manifest.read_text())
    (tmp_path / "crop.json").write_text(json.dumps({**spec, "ground_truth": None}))
    assert train_partner_ranker.main(argv) == 2
    assert "names no ground_truth" in capsys.readouterr().err
