"""Which two segments around a cleft are its partners, and which is presynaptic: a learned
ranker over the ordered pairs of segments near the cleft.

A synapse model's side channels come out as blurry rings around the cleft rather than two clean
halves, so the segment with the most presynaptic probability is often a neighbour touching the
cleft's rim, not the partner across it. Each segment within the side reach of a cleft is
described by `FEATURES` (its side-channel mass and peak, how much of it touches the cleft or
lies over the cleft's face rather than past its rim, how far it is), each ordered pair (a, b)
by both segments' features and whether they lie on opposite sides of the cleft's plane; a linear
score (`PartnerRanker.weights`) picks the pair, a presynaptic and b postsynaptic. The weights
are fit as a conditional logit (softmax over a cleft's pairs, the true pair the target:
`fit_weights`), on the pipeline's own segmentation and model output, by
`workflows.train_partner_ranker`. No library ranks a handful of candidates per item with a
conditional logit; it is 20 lines of numpy and scipy's L-BFGS.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import local_path

#: per segment near the cleft (masses are sums of probabilities 0-1 over voxels; lengths in
#: voxels along x, the other axes scaled by the resolution)
FEATURES = (
    "log presynaptic mass",
    "log postsynaptic mass",
    "log voxels within 1.5 of the cleft",
    "log voxels within 2.5 of the cleft",
    "log voxels over the cleft's face",
    "log voxels within reach",
    "mean distance from the cleft's axis / cleft radius",
    "mean distance from the cleft",
    "peak presynaptic probability",
    "peak postsynaptic probability",
)
PAIR_FEATURES = ("on opposite sides of the cleft", "distance between the sides' mean offsets / 3")
FORMAT = "petavox partner ranker"
BUILTIN = "builtin"
BUILTIN_PATH = Path(__file__).parent / "models" / "partner-ranker-synthetic.json"


@dataclass(frozen=True)
class Candidates:
    """The segments within reach of one cleft: ids, `FEATURES` rows, mean signed offset from the
    cleft's plane, and per voxel near the cleft its segment's index and side probabilities."""

    labels: np.ndarray  # (k,)
    features: np.ndarray  # (k, len(FEATURES))
    offset: np.ndarray  # (k,)
    index: np.ndarray  # (m,) into labels
    sides: np.ndarray  # (m, 2)
    near: np.ndarray  # crop-shaped bool: the m voxels


def candidates(
    cleft: np.ndarray, seg: np.ndarray, sides: np.ndarray, scale: np.ndarray, reach: float
) -> Candidates:
    """The candidates of the cleft `cleft` (a bool mask on a crop holding it and its reach);
    `seg` the crop's segmentation without cleft voxels, `sides` its (…, 2) probabilities 0-1,
    `scale` the voxel size per axis over x's."""
    dist = ndimage.distance_transform_edt(~cleft, sampling=scale)
    near = (dist <= reach) & (seg != 0)
    labels, index = np.unique(seg[near], return_inverse=True)
    weights = sides[near].astype(np.float64)
    cleft_points = np.argwhere(cleft) * scale
    centre = cleft_points.mean(axis=0)
    _, _, axes = np.linalg.svd(cleft_points - centre, full_matrices=False)
    normal = axes[-1]  # the cleft's thinnest direction
    flat = cleft_points - centre
    radius = float(np.sqrt(np.maximum((flat**2).sum(1) - (flat @ normal) ** 2, 0)).max()) + 1.0
    points = np.argwhere(near) * scale - centre
    offset = points @ normal
    axial = np.sqrt(np.maximum((points**2).sum(1) - offset**2, 0))
    d = dist[near]
    k = len(labels)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=values, minlength=k)

    count = total(np.ones(len(d)))
    peak = np.zeros((k, 2))
    np.maximum.at(peak, index, weights)
    features = np.column_stack(
        [
            np.log1p(total(weights[:, 0])),
            np.log1p(total(weights[:, 1])),
            np.log1p(total((d <= 1.5).astype(float))),
            np.log1p(total((d <= 2.5).astype(float))),
            np.log1p(total((axial <= radius).astype(float))),
            np.log1p(count),
            total(axial) / np.maximum(count, 1) / radius,
            total(d) / np.maximum(count, 1),
            peak,
        ]
    )
    return Candidates(labels, features, total(offset) / np.maximum(count, 1), index, weights, near)


def pair_rows(c: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Every ordered pair (a, b), a != b, of the candidates as index pairs (n, 2) and feature
    rows (n, 2 * len(FEATURES) + len(PAIR_FEATURES))."""
    k = len(c.labels)
    a, b = (g.ravel() for g in np.meshgrid(np.arange(k), np.arange(k), indexing="ij"))
    a, b = a[a != b], b[a != b]
    opposite = (c.offset[a] * c.offset[b] < 0).astype(float)
    apart = np.abs(c.offset[a] - c.offset[b]) / 3.0
    rows = np.column_stack([c.features[a], c.features[b], opposite, apart])
    return np.column_stack([a, b]), rows


@dataclass(frozen=True)
class PartnerRanker:
    """Linear scores of ordered candidate pairs; `checksum` names the weights in run specs."""

    weights: tuple[float, ...]
    checksum: str

    def choose(self, c: Candidates) -> tuple[int, int]:
        """(presynaptic, postsynaptic) segment ids; 0 for a side without a segment or without
        probability. One candidate is the side it has more mass of."""
        if len(c.labels) == 0:
            return 0, 0
        if len(c.labels) == 1:
            label = int(c.labels[0])
            pre, post = c.features[0, :2]
            return (0, 0) if pre == post == 0 else (label, 0) if pre >= post else (0, label)
        pairs, rows = pair_rows(c)
        a, b = pairs[int(np.argmax(rows @ np.asarray(self.weights)))]
        # a side no probability was seen on has no partner (log1p of a zero mass is 0)
        pre = int(c.labels[a]) if c.features[a, 0] > 0 else 0
        return pre, int(c.labels[b]) if c.features[b, 1] > 0 else 0


def fit_weights(examples: list[tuple[np.ndarray, np.ndarray]], l2: float = 0.1) -> np.ndarray:
    """Conditional-logit weights from (pair rows of a cleft, which pairs are right) examples:
    the softmax of a cleft's pair scores, the log of its right pairs' total probability
    maximised, L2-penalised (0.1: of 0.001-1, the best when each of demo seeds 401-413 was
    left out in turn: 0.915 of its clefts right, 0.910 at 0.01 and 0.001, 0.908 at 1)."""
    if not examples:
        raise InputError("no cleft with its true partners among its candidates to fit on")
    width = examples[0][0].shape[1]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = l2 * float(w @ w), 2 * l2 * w
        for rows, right in examples:
            s = rows @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            hit = p * right
            value -= float(np.log(hit.sum() + 1e-12))
            grad = grad - (hit @ rows / max(hit.sum(), 1e-12) - p @ rows)
        return value, grad

    return minimize(loss, np.zeros(width), jac=True, method="L-BFGS-B").x


def save_ranker(path: Path, weights: np.ndarray, trained_on: dict) -> None:
    """Write weights with the feature names they belong to and what they were fit on."""
    record = {
        "format": FORMAT,
        "features": list(FEATURES),
        "pair_features": list(PAIR_FEATURES),
        "weights": [round(float(w), 6) for w in weights],
        "trained_on": trained_on,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")


def load_ranker(source: str = BUILTIN) -> PartnerRanker:
    """The ranker in a file written by `save_ranker` (`builtin`: the shipped one), a local path
    or file:// URL: it is read where the run is planned, and its weights travel in the tasks."""
    local = source if "://" not in source else local_path(source)
    if local is None:
        raise InputError(
            f"the partner ranker {source} is not a local file; it is read on the machine that "
            "plans the run: copy it there and give its path"
        )
    path = BUILTIN_PATH if source == BUILTIN else Path(local)
    try:
        text = path.read_bytes()
        record = json.loads(text)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the partner ranker {source}: {err}") from err
    width = 2 * len(FEATURES) + len(PAIR_FEATURES)
    if (
        not isinstance(record, dict)
        or record.get("format") != FORMAT
        or record.get("features") != list(FEATURES)
        or record.get("pair_features") != list(PAIR_FEATURES)
        or len(record.get("weights", ())) != width
    ):
        raise InputError(
            f"{source} is not a partner ranker for this petavox (its format, feature names or "
            f"{width} weights differ); fit one with python -m "
            "petavox.workflows.train_partner_ranker"
        )
    checksum = hashlib.sha256(text).hexdigest()[:16]
    return PartnerRanker(tuple(float(w) for w in record["weights"]), checksum)
