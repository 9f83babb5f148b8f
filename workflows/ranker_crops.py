"""A lab's annotated crops as partner-ranker examples (`train_partner_ranker --crop`).

A crop is a JSON manifest naming five layers on the same voxels and a partners table:

    {"image": "aligned", "segmentation": "segmentation", "clefts": "clefts",
     "cleft_labels": "cleft_annotations", "ground_truth": "object_annotations",
     "partners": "partners.csv"}

`image` is the aligned EM, `segmentation` the pipeline's, `clefts` the synapse model's three
channels as `infer` wrote them, `cleft_labels` the annotated clefts (every voxel of cleft k is
k), `ground_truth` the annotated objects, and `partners.csv` has a header `cleft,pre,post` and
one row per annotated cleft (its presynaptic and postsynaptic object ids in `ground_truth`).
Layer paths without a scheme and the CSV are relative to the manifest's folder; URLs
(s3://, gs://, file://) are read as they are. Crops are read whole, so keep them to a few
hundred million voxels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import normalize_url
from petavox.tasks.synapse.cleft_channel import CleftParams
from petavox.tasks.synapse.ranker_examples import RankerExample, ranker_examples

LAYERS = ("image", "segmentation", "clefts", "cleft_labels", "ground_truth")


def crop_examples(manifest: Path, params: CleftParams) -> list[RankerExample]:
    """The examples of the crop `manifest` describes (see the module docstring)."""
    try:
        spec = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the crop manifest {manifest}: {err}") from err
    missing = [k for k in (*LAYERS, "partners") if not isinstance(spec.get(k), str)]
    if missing:
        raise InputError(
            f"{manifest} names no {', '.join(missing)}; a crop manifest names the layers "
            f"{', '.join(LAYERS)} and the partners CSV (see workflows/ranker_crops.py)"
        )
    folder = manifest.parent
    layers = {k: Layer.open(_url(spec[k], folder)) for k in LAYERS}
    bounds = layers["image"].bounds(0)
    for name, layer in layers.items():
        if layer.bounds(0) != bounds:
            raise InputError(
                f"{manifest}: {name} covers {layer.bounds(0)} but the image {bounds}; the five "
                "layers of a crop cover the same voxels"
            )
    if layers["clefts"].num_channels != 3:
        raise InputError(
            f"{manifest}: clefts has {layers['clefts'].num_channels} channel(s); the ranker "
            "learns from a synapse model's three (cleft, presynaptic side, postsynaptic side)"
        )
    data = {k: layer.read(bounds) for k, layer in layers.items()}
    one = {k: v[..., 0] if v.ndim == 4 and k != "clefts" else v for k, v in data.items()}
    pre, post = read_partners(folder / spec["partners"], int(one["cleft_labels"].max()))
    return ranker_examples(
        one["clefts"],
        one["image"],
        one["segmentation"],
        one["cleft_labels"],
        one["ground_truth"],
        pre,
        post,
        layers["image"].resolution(0),
        params,
    )


def read_partners(path: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`pre[k - 1]`, `post[k - 1]` of clefts 1..count from a `cleft,pre,post` CSV (0: none)."""
    pre, post = np.zeros(count, np.int64), np.zeros(count, np.int64)
    try:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                k = int(row["cleft"])
                if 1 <= k <= count:
                    pre[k - 1], post[k - 1] = int(row["pre"]), int(row["post"])
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise InputError(
            f"cannot read the partners table {path} ({err}); it is a CSV with a header "
            "cleft,pre,post and integer ids"
        ) from err
    if not (pre.any() or post.any()):
        raise InputError(f"{path} gives no partners for the crop's clefts 1..{count}")
    return pre, post


def _url(value: str, folder: Path) -> str:
    return normalize_url(value if "://" in value else str(folder / value))
