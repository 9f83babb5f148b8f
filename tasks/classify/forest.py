"""A random forest as plain arrays: trained by scikit-learn, kept as JSON (never pickled: a model
file from a bucket is data, not code) and applied in numpy, so a worker that only classifies
needs no scikit-learn and any version reads any model.

Missing values (NaN: a segment without a skeleton, a table without an image) are replaced by
`MISSING`, below every real feature value, before training and before prediction alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

MISSING = -1.0e9
FORMAT = "petavox-forest-1"


@dataclass(frozen=True)
class Tree:
    """One decision tree: node i splits on `feature[i]` at `threshold[i]` (left: ≤), or is a
    leaf (`left[i]` = -1) holding its class fractions `value[i]`."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray  # (nodes, classes)


@dataclass(frozen=True)
class Forest:
    classes: tuple[str, ...]
    features: tuple[str, ...]
    trees: tuple[Tree, ...]
    meta: dict[str, Any]  # what it was trained on (inputs, counts, cross-validated accuracy)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, classes): the trees' leaf fractions averaged."""
        x = filled(x)
        total = np.zeros((len(x), len(self.classes)))
        rows = np.arange(len(x))
        for tree in self.trees:
            node = np.zeros(len(x), np.int64)
            inner = tree.left[node] >= 0
            while inner.any():
                at = node[inner]
                go_left = x[rows[inner], tree.feature[at]] <= tree.threshold[at]
                node[inner] = np.where(go_left, tree.left[at], tree.right[at])
                inner = tree.left[node] >= 0
            total += tree.value[node]
        return total / max(len(self.trees), 1)

    def to_json(self) -> bytes:
        trees = [
            {k: getattr(t, k).tolist() for k in ("feature", "threshold", "left", "right", "value")}
            for t in self.trees
        ]
        doc = {
            "format": FORMAT,
            "classes": list(self.classes),
            "features": list(self.features),
            "meta": self.meta,
            "trees": trees,
        }
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()

    @staticmethod
    def from_json(data: bytes) -> Forest:
        doc = json.loads(data)
        if doc.get("format") != FORMAT:
            raise ValueError(f"not a petavox classifier (format {doc.get('format')!r})")
        trees = tuple(
            Tree(
                feature=np.asarray(t["feature"], np.int64),
                threshold=np.asarray(t["threshold"], np.float64),
                left=np.asarray(t["left"], np.int64),
                right=np.asarray(t["right"], np.int64),
                value=np.asarray(t["value"], np.float64),
            )
            for t in doc["trees"]
        )
        return Forest(tuple(doc["classes"]), tuple(doc["features"]), trees, doc.get("meta", {}))


def filled(x: np.ndarray) -> np.ndarray:
    """`x` with NaN as `MISSING` and ±inf clipped to ±1e12, rounded to float32 as
    scikit-learn rounds what it trains and predicts on (its thresholds lie between those)."""
    x = np.array(x, np.float64)
    x[np.isnan(x)] = MISSING
    return np.clip(x, -1e12, 1e12).astype(np.float32).astype(np.float64)


def fit(
    x: np.ndarray,
    y: np.ndarray,
    classes: tuple[str, ...],
    features: tuple[str, ...],
    *,
    trees: int = 100,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
) -> Forest:
    """A forest on rows `x` with class indices `y` (into `classes`), balanced by class."""
    from sklearn.ensemble import RandomForestClassifier

    model = RandomForestClassifier(
        n_estimators=trees,
        min_samples_leaf=2,
        class_weight="balanced",
        random_state=seed,
        n_jobs=1,
    )
    model.fit(filled(x), y)
    present = model.classes_.astype(np.int64)  # the class indices seen, ascending
    out = []
    for estimator in model.estimators_:
        t = estimator.tree_
        value = np.zeros((t.node_count, len(classes)))
        value[:, present] = t.value[:, 0, :]
        value /= np.maximum(value.sum(axis=1, keepdims=True), 1e-12)
        out.append(
            Tree(
                feature=np.where(t.children_left >= 0, t.feature, 0).astype(np.int64),
                threshold=t.threshold.astype(np.float64),
                left=t.children_left.astype(np.int64),
                right=t.children_right.astype(np.int64),
                value=value,
            )
        )
    return Forest(tuple(classes), tuple(features), tuple(out), dict(meta or {}))
