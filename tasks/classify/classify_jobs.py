"""The `classify` stage's tasks: train a forest on the labelled segments (when the user gives
labels), classify every partition of the morphology table, then write the viewer's segment
properties and the totals.

Output folder (``classes/`` in the segmentation layer): ``segment_shard={k}/part.parquet``
(segment_id, class, probability and one probability column per class, ``p_<class>``, for the
segments of morphology partition k; a segment smaller than those the model learnt from is a
`FRAGMENT`, its probabilities NaN), ``_model.json`` (a trained forest), ``_summary.json``
(segments per class). Names starting with ``_`` are skipped by Parquet dataset readers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.classify.features import FEATURES, NEEDS, feature_matrix
from petavox.tasks.classify.labels import Labels
from petavox.tasks.classify.model_files import load_classifier
from petavox.tasks.classify.properties import NUMBERS, segment_properties
from petavox.tasks.classify.training import train
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Chunk, task_index
from petavox.tasks.core.objects import get, put, put_json
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.morphology.morphology_jobs import table_key
from petavox.tasks.morphology.table_reads import read_partition, rows_of
from petavox.tasks.synapse.table import columns_from_parquet, columns_to_parquet

MODEL_KEY = "_model.json"
#: the class of segments smaller than the model's training segments (its meta's min_voxels)
FRAGMENT = "fragment"
SUMMARY_KEY = "_summary.json"


def usable_features(inputs: dict[str, bool]) -> tuple[str, ...]:
    """The features a table measured with `inputs` has (image, skeletons, connectome)."""
    return tuple(f for f in FEATURES if inputs.get(NEEDS.get(f, ""), True))


def features_of(table: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return feature_matrix(table)[:, [FEATURES.index(n) for n in names]]


@dataclass(frozen=True, kw_only=True)
class TrainJob:
    """One task: the labelled segments' rows (read from only the partitions holding them), a
    forest trained on them and its cross-validated accuracy, written as ``_model.json``."""

    table_url: str
    shard_bits: int
    labels: Labels
    inputs: dict[str, bool]  # what the table was measured with
    classes_url: str
    folds: int
    trees: int
    seed: int
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        rows = rows_of(self.table_url, self.shard_bits, self.labels.ids, self.context)
        found = rows.get("segment_id", np.zeros(0, np.uint64))
        missing = np.setdiff1d(self.labels.ids, found)
        if len(missing):
            shown = ", ".join(str(int(i)) for i in missing[:5])
            raise InputError(
                f"{len(missing)} labelled segments are not in {self.table_url} ({shown}...); "
                "label segments of this segmentation (ids as the viewer shows them)"
            )
        names = usable_features(self.inputs)
        needed = sorted({NEEDS[f] for f in names if f in NEEDS})
        counts = np.bincount(self.labels.y, minlength=len(self.labels.classes))
        meta = {"inputs": needed, "labelled": dict(zip(self.labels.classes, counts.tolist()))}
        forest = train(
            features_of(rows, names),
            self.labels.y,
            self.labels.classes,
            names,
            folds=self.folds,
            seed=self.seed,
            trees=self.trees,
            meta=meta,
        )
        put(self.classes_url, MODEL_KEY, forest.to_json(), self.context)
        return forest.meta["cross_validation"]


@dataclass(frozen=True, kw_only=True)
class PredictJob:
    """Task k: every segment of morphology partition k, classified."""

    table_url: str
    classes_url: str
    model_url: str
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        shard = task_index(chunk)
        forest = load_classifier(self.model_url, self.context)
        table = read_partition(self.table_url, shard, self.context)
        p = forest.predict_proba(features_of(table, forest.features))
        best = p.argmax(axis=1) if len(p) else np.zeros(0, np.int64)
        small = table["voxels"] < forest.meta.get("min_voxels", 0)  # smaller than it learnt
        p[small] = np.nan
        names = np.array(forest.classes, dtype=object)
        out = {
            "segment_id": table["segment_id"],
            "class": np.where(small, FRAGMENT, names[best]).astype(str),
            "probability": p[np.arange(len(p)), best],
        }
        out.update({f"p_{c}": p[:, i] for i, c in enumerate(forest.classes)})
        put(self.classes_url, table_key(shard), columns_to_parquet(out), self.context)
        values, counts = np.unique(out["class"], return_counts=True)
        return dict(zip(values.tolist(), counts.tolist()))


@dataclass(frozen=True, kw_only=True)
class PropertiesJob:
    """One task: the segment properties of every segment of `min_voxels` or more, and the
    number of segments per class."""

    table_url: str
    classes_url: str
    model_url: str
    properties_url: str
    shards: int
    min_voxels: int
    context: StorageContext

    def run(self, chunk: Chunk) -> dict:
        kept: dict[str, list[np.ndarray]] = {}
        totals: dict[str, int] = {}
        for shard in range(self.shards):
            table = read_partition(self.table_url, shard, self.context)
            data = get(self.classes_url, table_key(shard), self.context)
            if data is None:
                raise FileNotFoundError(f"{self.classes_url}/{table_key(shard)} is missing")
            classes = columns_from_parquet(data)
            if not np.array_equal(classes["segment_id"], table["segment_id"]):
                raise ValueError(f"{self.classes_url}: partition {shard} is not the table's")
            for name in classes["class"].tolist():
                totals[name] = totals.get(name, 0) + 1
            keep = table["voxels"] >= self.min_voxels
            columns = {**{n: table[n] for n in NUMBERS}, **classes}
            for name, column in columns.items():
                kept.setdefault(name, []).append(column[keep])
        joined = {name: np.concatenate(parts) for name, parts in kept.items()}
        order = np.argsort(joined["segment_id"], kind="stable")
        joined = {name: column[order] for name, column in joined.items()}
        names = tuple(sorted(totals)) or ("none",)
        label = np.array([names.index(c) for c in joined["class"].tolist()], np.int64)
        info = segment_properties(
            joined["segment_id"],
            names,
            label,
            joined["probability"],
            {n: joined[n] for n in NUMBERS},
        )
        put_json(self.properties_url, "info", info, self.context)
        meta = load_classifier(self.model_url, self.context).meta
        summary = {
            "segments": sum(totals.values()),
            "classes": totals,
            "shown": len(label),
            "model": self.model_url,
            "cross_validation": meta.get("cross_validation"),
        }
        put_json(self.classes_url, SUMMARY_KEY, summary, self.context)
        return summary
