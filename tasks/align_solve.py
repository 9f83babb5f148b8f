"""Pairwise section displacements → one transform per section: translation, then elastic mesh.

Unknowns: per section z a field u_z (aligned(p) = raw_z(p + u_z(p))). A measured displacement d
of section z relative to section z' at p says u_z(p) − u_z'(p) = d. Both steps are sparse
weighted least squares, solved with a sparse direct solver on a banded system (sections in
order, so memory and time grow linearly with the number of sections, never a dense matrix):

1. translation per section from each pair's median displacement (links to z−1 and z−2, so a
   bad section is bridged);
2. an elastic mesh per section on what the translations leave: data springs at the patch
   centres (weighted by confidence), springs between neighbouring nodes in the section.

A weak spring ties every section to no displacement at all (`prior`): it fixes the global
position and keeps errors from accumulating into a drift over thousands of sections. Both steps
reweight their equations by residual (Huber, `robust` pixels) to shrug off bad patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from petavox.tasks.flow import PairFlow
from petavox.tasks.meshes import MeshGrid


@dataclass(frozen=True)
class SolveParams:
    mesh_spacing: float = 64.0  # pixels between mesh nodes
    stiffness: float = 0.5  # weight of the springs between neighbouring nodes
    prior: float = 0.02  # weight of the spring to no displacement (drift control)
    robust: float = 2.0  # Huber scale (pixels)
    min_confidence: float = 0.2  # patches below this are ignored
    rounds: int = 3  # reweighting rounds


@dataclass(frozen=True)
class Pair:
    moving: int  # section index (from 0) of the moving section
    reference: int
    flow: PairFlow


def _least_squares(rows: list, cols: list, vals: list, rhs: np.ndarray, n: int) -> np.ndarray:
    a = sparse.csr_matrix((vals, (rows, cols)), shape=(len(rhs), n))
    normal = (a.T @ a).tocsc()
    return np.column_stack([spsolve(normal, a.T @ rhs[:, c]) for c in range(rhs.shape[1])])


def pair_medians(pairs: list[Pair], min_confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: (median displacement (2,), weight = mean confidence of usable patches)."""
    medians, weights = np.zeros((len(pairs), 2)), np.zeros(len(pairs))
    for k, pair in enumerate(pairs):
        ok = pair.flow.confidence >= min_confidence
        if ok.any():
            medians[k] = np.median(pair.flow.displacement[ok], axis=0)
            weights[k] = pair.flow.confidence[ok].mean()
    return medians, weights


def solve_translations(pairs: list[Pair], sections: int, params: SolveParams) -> np.ndarray:
    """(sections, 2) translation of each section."""
    medians, base = pair_medians(pairs, params.min_confidence)
    weights = base.copy()
    t = np.zeros((sections, 2))
    for _ in range(params.rounds):
        rows, cols, vals = [], [], []
        rhs = []
        for k, pair in enumerate(pairs):
            w = weights[k]
            rows += [len(rhs), len(rhs)]
            cols += [pair.moving, pair.reference]
            vals += [w, -w]
            rhs.append(w * medians[k])
        for z in range(sections):
            rows.append(len(rhs))
            cols.append(z)
            vals.append(params.prior)
            rhs.append(np.zeros(2))
        t = _least_squares(rows, cols, vals, np.array(rhs), sections)
        residual = np.array([t[p.moving] - t[p.reference] - medians[k]
                             for k, p in enumerate(pairs)]).reshape(-1, 2)  # fmt: skip
        weights = base * _robust_weights(residual, params.robust)
    return t


def _aligned_points(points: np.ndarray, t: np.ndarray, mesh: MeshGrid, nodes: np.ndarray,
                    iterations: int = 5) -> np.ndarray:  # fmt: skip
    """Aligned positions p of raw positions q of a section: p + u(p) = q (fixed point)."""
    p = points - t
    for _ in range(iterations):
        p = points - t - mesh.interpolate(nodes, p)
    return p


def _robust_weights(residual: np.ndarray, scale: float) -> np.ndarray:
    """Huber weights; equations off by more than 4 scales are dropped outright."""
    norm = np.linalg.norm(residual, axis=-1)
    weight = np.where(norm <= scale, 1.0, scale / np.maximum(norm, 1e-12))
    weight[norm > 4 * scale] = 0.0
    return weight


def solve_mesh(pairs: list[Pair], sections: int, mesh: MeshGrid, translations: np.ndarray,
               params: SolveParams) -> np.ndarray:  # fmt: skip
    """(sections, nodes, 2) elastic displacement on top of the translations."""
    m = mesh.size
    data = []
    for pair in pairs:
        ok = pair.flow.confidence >= params.min_confidence
        if ok.any():
            target = pair.flow.displacement[ok] - (translations[pair.moving]
                                                   - translations[pair.reference])  # fmt: skip
            data.append((pair, pair.flow.points[ok], target, pair.flow.confidence[ok]))
    springs = mesh.neighbour_pairs()
    robust = [np.ones(len(d[2])) for d in data]
    nodes = np.zeros((sections, m, 2))
    for _ in range(params.rounds):
        # flows are measured at raw positions of the reference section; the fields live in
        # aligned coordinates: map the positions with the current solution
        weights = [mesh.weights(_aligned_points(q, translations[pair.reference], mesh,
                                                nodes[pair.reference]))
                   for pair, q, _, _ in data]  # fmt: skip
        nodes = _solve_nodes(data, weights, robust, springs, sections, m, params)
        nodes = nodes.reshape(sections, m, 2)
        robust = []
        for (pair, _, target, _), (index, weight) in zip(data, weights):
            here = np.einsum("nk,nkc->nc", weight, nodes[pair.moving][index])
            there = np.einsum("nk,nkc->nc", weight, nodes[pair.reference][index])
            robust.append(_robust_weights(here - there - target, params.robust))
    return nodes


def _solve_nodes(data: list, weights: list, robust: list, springs: np.ndarray, sections: int,
                 m: int, params: SolveParams) -> np.ndarray:  # fmt: skip
    rows, cols, vals, rhs = [], [], [], []
    n_rows = 0
    for (pair, _, target, conf), (index, weight), r in zip(data, weights, robust):
        w = np.sqrt(conf * r)[:, None]
        n = len(target)
        row = np.repeat(np.arange(n_rows, n_rows + n), 4)
        rows += [row, row]
        cols += [(pair.moving * m + index).ravel(), (pair.reference * m + index).ravel()]
        vals += [(w * weight).ravel(), (-w * weight).ravel()]
        rhs.append(w * target)
        n_rows += n
    for z in range(sections):
        k = len(springs)
        rows.append(np.repeat(np.arange(n_rows, n_rows + k), 2))
        cols.append((z * m + springs).ravel())
        vals.append(np.tile([params.stiffness, -params.stiffness], k))
        rhs.append(np.zeros((k, 2)))
        n_rows += k
    rows.append(np.arange(n_rows, n_rows + sections * m))
    cols.append(np.arange(sections * m))
    vals.append(np.full(sections * m, params.prior))
    rhs.append(np.zeros((sections * m, 2)))
    return _least_squares(np.concatenate(rows), np.concatenate(cols), np.concatenate(vals),
                          np.concatenate(rhs), sections * m)  # fmt: skip
