"""Training a classifier on labelled rows, with its cross-validated accuracy: each fold's forest
is trained on the other folds and scored through `Forest.predict_proba`, the path that
classifies, so the figure is the shipped code's."""

from __future__ import annotations

from typing import Any

import numpy as np

from petavox.tasks.classify.forest import Forest, fit


def cross_validated(
    x: np.ndarray, y: np.ndarray, classes: tuple[str, ...], folds: int, seed: int, trees: int
) -> dict[str, Any]:
    """Accuracy over all rows, recall per class and the confusion counts (true × predicted),
    from `folds` stratified folds."""
    from sklearn.model_selection import StratifiedKFold

    predicted = np.zeros(len(y), np.int64)
    splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y)
    for train, test in splits:
        forest = fit(x[train], y[train], classes, (), trees=trees, seed=seed)
        predicted[test] = forest.predict_proba(x[test]).argmax(axis=1)
    confusion = np.zeros((len(classes), len(classes)), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    return {
        "folds": folds,
        "accuracy": float((predicted == y).mean()),
        "recall": dict(zip(classes, per_class.tolist())),
        "confusion": confusion.tolist(),
        "rows": len(y),
    }


def train(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    features: tuple[str, ...],
    *,
    folds: int,
    seed: int = 0,
    trees: int = 100,
    meta: dict[str, Any] | None = None,
) -> Forest:
    """A forest on all rows, with the cross-validation's figures in its `meta`."""
    scores = cross_validated(x, y, classes, folds, seed, trees)
    meta = {**(meta or {}), "cross_validation": scores}
    return fit(x, y, classes, features, trees=trees, seed=seed, meta=meta)
