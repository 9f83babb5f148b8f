"""`classify.forest`, `labels` and `properties`: the JSON forest predicts what scikit-learn's
forest predicts (NaN as missing), survives a JSON round trip, and bad labels files are refused
with the line at fault."""

from __future__ import annotations

import json

import numpy as np
import pytest

from petavox.tasks.classify.forest import Forest, filled, fit
from petavox.tasks.classify.labels import parse_labels
from petavox.tasks.classify.model_files import load_classifier
from petavox.tasks.classify.properties import segment_properties
from petavox.tasks.classify.training import cross_validated
from petavox.tasks.core.errors import InputError

CLASSES = ("glia", "myelin", "neuron")


def blobs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes in 4 features, overlapping a little, some values missing."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(0, 1, (n, 4)) + np.array([[0, 0, 0, 0], [3.5, 0, 1, 0], [0, 3.5, 0, 1]])[y]
    x[rng.random((n, 4)) < 0.05] = np.nan
    return x, y


def test_the_json_forest_predicts_as_scikit_learn_does():
    from sklearn.ensemble import RandomForestClassifier

    x, y = blobs(300, 0)
    forest = fit(x, y, CLASSES, ("a", "b", "c", "d"), trees=20, seed=3)
    reference = RandomForestClassifier(
        n_estimators=20, min_samples_leaf=2, class_weight="balanced", random_state=3, n_jobs=1
    ).fit(filled(x), y)
    test, _ = blobs(200, 1)
    np.testing.assert_allclose(
        forest.predict_proba(test), reference.predict_proba(filled(test)), atol=1e-12
    )
    again = Forest.from_json(forest.to_json())
    np.testing.assert_array_equal(again.predict_proba(test), forest.predict_proba(test))
    assert again.classes == CLASSES and again.features == ("a", "b", "c", "d")


def test_a_class_missing_from_training_gets_probability_zero():
    x, y = blobs(200, 2)
    keep = y != 1
    forest = fit(x[keep], y[keep], CLASSES, ("a", "b", "c", "d"), trees=5)
    p = forest.predict_proba(x)
    assert p.shape == (200, 3) and (p[:, 1] == 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0)


def test_cross_validation_scores_well_separated_classes_high_and_noise_at_chance():
    x, y = blobs(300, 4)
    good = cross_validated(x, y, CLASSES, folds=5, seed=0, trees=30)
    assert good["accuracy"] > 0.8 and np.sum(good["confusion"]) == 300
    noise = np.random.default_rng(5).normal(size=x.shape)
    chance = cross_validated(noise, y, CLASSES, folds=5, seed=0, trees=30)
    assert chance["accuracy"] < 0.5


def test_labels_are_parsed_and_bad_ones_refused_with_their_line():
    text = "segment_id,class\n12,neuron\n7,glia\n\n12,neuron\n9,glia\n30,neuron\n"
    labels = parse_labels(text, "labels.csv", folds=2)
    assert labels.ids.tolist() == [7, 9, 12, 30]
    assert [labels.classes[i] for i in labels.y] == ["glia", "glia", "neuron", "neuron"]
    cases = [
        ("id,class\n1,a\n", "header"),
        ("segment_id,class\n1,a,b\n", "line 2"),
        ("segment_id,class\nx,a\n", "line 2: 'x' is not a segment id"),
        ("segment_id,class\n0,a\n", "not a segment id"),
        ("segment_id,class\n1,a b\n", "must be a word"),
        ("segment_id,class\n1,a\n1,b\n", "line 3: segment 1 is labelled twice"),
        ("segment_id,class\n1,a\n2,a\n", "two classes"),
        ("segment_id,class\n1,a\n2,a\n3,b\n", "fewer than 2"),
    ]
    for bad, words in cases:
        with pytest.raises(InputError, match=words):
            parse_labels(bad, "labels.csv", folds=2)


def test_segment_properties_hold_a_tag_per_segment_and_finite_numbers():
    ids = np.array([5, 2**40 + 1], np.uint64)
    info = segment_properties(
        ids, CLASSES, np.array([2, 0]), np.array([0.9, 0.6]), {"cable_nm": np.array([1.0, np.nan])}
    )
    json.dumps(info, allow_nan=False)  # what the viewer parses: no NaN
    props = {p["id"]: p for p in info["inline"]["properties"]}
    assert info["inline"]["ids"] == ["5", str(2**40 + 1)]
    assert props["class"]["tags"] == list(CLASSES) and props["class"]["values"] == [[2], [0]]
    assert props["label"]["values"] == ["neuron 0.90", "glia 0.60"]
    assert props["cable_nm"]["values"] == [1.0, 0.0]


def test_a_model_file_is_parsed_once_until_it_changes(tmp_path):
    x, y = blobs(100, 6)
    path = tmp_path / "model.json"
    path.write_bytes(fit(x, y, CLASSES, ("a", "b", "c", "d"), trees=3, seed=1).to_json())
    first = load_classifier(str(path))
    assert load_classifier(f"file://{path}") is first  # the same bytes: parsed once
    path.write_bytes(fit(x, y, CLASSES, ("a", "b", "c", "d"), trees=4, seed=2).to_json())
    changed = load_classifier(str(path))
    assert changed is not first and len(changed.trees) == 4
