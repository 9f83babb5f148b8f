"""Pairwise section displacements → one transform per section: translation, affine, then
elastic mesh.

Unknowns: per section z a field u_z (aligned(p) = raw_z(p + u_z(p))). A measured displacement d
of section z relative to section z' at p says u_z(p) − u_z'(p) = d. Every step is a sparse
weighted least squares, solved with a sparse direct solver on a banded system (sections in
order, so memory and time grow linearly with the number of sections, never a dense matrix):

1. translation per section from each pair's median displacement (links to z−1 and z−2, so a
   bad section is bridged): robust to anything, and the start of the next step;
2. an affine field per section (rotation, scale, shear, translation) from every patch: the
   rigid/affine stage, and where the patch positions are mapped from for the next step;
3. an elastic mesh per section, solved together with a refined affine: data springs at the
   patch centres (weighted by confidence), springs between neighbouring nodes in the section.

A weak spring ties every unknown to no displacement at all (`prior`): it fixes the global
position and keeps errors from accumulating into a drift over thousands of sections. Every step
reweights its equations by residual (Huber, `robust` pixels) to shrug off bad patches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import sparse
from scipy.sparse.linalg import spsolve

from petavox.tasks.align.displacement import MeshGrid, SectionAffines
from petavox.tasks.align.drift import keep_content_motion
from petavox.tasks.align.flow import PairFlow


@dataclass(frozen=True, kw_only=True)
class SolveParams:
    mesh_spacing: float = 64.0  # pixels between mesh nodes
    stiffness: float = 0.5  # weight of the springs between neighbouring nodes
    prior: float = 0.02  # weight of the spring to no displacement (drift control)
    linear_prior: float = 0.3  # the same for an affine's rotation/scale/shear (edge pixels)
    robust: float = 2.0  # Huber scale (pixels)
    min_confidence: float = 0.2  # patches below this are ignored
    rounds: int = 3  # reweighting rounds
    drift_window: float | str | None = "auto"  # sections of content motion kept (`drift`)


@dataclass(frozen=True, kw_only=True)
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
        residual = np.array(
            [t[p.moving] - t[p.reference] - medians[k] for k, p in enumerate(pairs)]
        ).reshape(-1, 2)
        weights = base * _robust_weights(residual, params.robust)
    return t


def aligned_points(
    points: np.ndarray, field: Callable[[np.ndarray], np.ndarray], iterations: int = 5
) -> np.ndarray:
    """Aligned positions p of raw positions q of a section: p + u(p) = q (fixed point)."""
    p = points - field(points)
    for _ in range(iterations):
        p = points - field(p)
    return p


def _full_field(
    affines: SectionAffines, mesh: MeshGrid, nodes: np.ndarray, k: int, points: np.ndarray
) -> np.ndarray:
    return affines.at(k, points) + mesh.interpolate(nodes, points)


def _robust_weights(residual: np.ndarray, scale: float) -> np.ndarray:
    """Huber weights; equations off by more than 4 scales are dropped outright."""
    norm = np.linalg.norm(residual, axis=-1)
    weight = np.where(norm <= scale, 1.0, scale / np.maximum(norm, 1e-12))
    weight[norm > 4 * scale] = 0.0
    return weight


@dataclass(frozen=True, kw_only=True)
class _Patches:
    """A pair's usable patches: raw positions in the reference, displacement, confidence."""

    pair: Pair
    points: np.ndarray
    displacement: np.ndarray
    confidence: np.ndarray


def _usable(pairs: list[Pair], min_confidence: float) -> list[_Patches]:
    out = []
    for pair in pairs:
        ok = pair.flow.confidence >= min_confidence
        if ok.any():
            flow = pair.flow
            out.append(
                _Patches(
                    pair=pair,
                    points=flow.points[ok],
                    displacement=flow.displacement[ok],
                    confidence=flow.confidence[ok],
                )
            )
    return out


def _affine_priors(params: SolveParams) -> np.ndarray:
    """Prior weights of one section's affine unknowns, in `SectionAffines.normalised` order."""
    return np.array([params.linear_prior, params.linear_prior, params.prior])


def solve_affines(
    pairs: list[Pair], sections: int, start: SectionAffines, params: SolveParams
) -> SectionAffines:
    """One affine field per section, starting from `start` (the translations)."""
    data = _usable(pairs, params.min_confidence)
    affines = start
    robust = [
        _robust_weights(
            d.displacement
            - (start.matrices[d.pair.moving, :, 2] - start.matrices[d.pair.reference, :, 2]),
            params.robust,
        )
        for d in data
    ]
    for _ in range(params.rounds):
        rows, cols, vals, rhs = [], [], [], []
        n_rows = 0
        designs = []
        for d, r in zip(data, robust):
            ref = d.pair.reference
            design = affines.normalised(aligned_points(d.points, partial(affines.at, ref)))
            designs.append(design)
            w = np.sqrt(d.confidence * r)[:, None]
            n = len(design)
            row = np.repeat(np.arange(n_rows, n_rows + n), 3)
            rows += [row, row]
            cols += [
                np.tile(3 * d.pair.moving + np.arange(3), n),
                np.tile(3 * ref + np.arange(3), n),
            ]
            vals += [(w * design).ravel(), (-w * design).ravel()]
            rhs.append(w * d.displacement)
            n_rows += n
        rows.append(np.arange(n_rows, n_rows + 3 * sections))
        cols.append(np.arange(3 * sections))
        vals.append(np.tile(_affine_priors(params), sections))
        rhs.append(np.zeros((3 * sections, 2)))
        solution = _least_squares(
            np.concatenate(rows),
            np.concatenate(cols),
            np.concatenate(vals),
            np.concatenate(rhs),
            3 * sections,
        )
        matrices = solution.reshape(sections, 3, 2).transpose(0, 2, 1)
        affines = SectionAffines(start.centre, start.scale, np.ascontiguousarray(matrices))
        robust = [
            _robust_weights(
                design @ (matrices[d.pair.moving] - matrices[d.pair.reference]).T - d.displacement,
                params.robust,
            )
            for d, design in zip(data, designs)
        ]
    return affines


def solve_mesh(
    pairs: list[Pair], sections: int, mesh: MeshGrid, affines: SectionAffines, params: SolveParams
) -> tuple[SectionAffines, np.ndarray]:
    """The elastic step, from the affine step's `affines`: (refined affines, (sections, nodes,
    2) mesh displacement on top of them).

    The affine is solved again together with the mesh, not held fixed: what part of a warp is
    "affine" depends on where the patches sit, which differs from pair to pair (the patch
    positions move with the reference section), so a fixed affine carries errors that the
    springs would stop the mesh from undoing. Jointly, the springs (on the nodes only) simply
    leave every linear part to the affine.
    """
    m = mesh.size
    data = _usable(pairs, params.min_confidence)
    springs = mesh.neighbour_pairs()
    robust = [np.ones(len(d.displacement)) for d in data]
    nodes = np.zeros((sections, m, 2))
    for _ in range(params.rounds):
        # flows are measured at raw positions of the reference section; the fields live in
        # aligned coordinates: map the positions with the current solution
        designs, weights = [], []
        for d in data:
            ref = d.pair.reference
            p = aligned_points(d.points, partial(_full_field, affines, mesh, nodes[ref], ref))
            designs.append(affines.normalised(p))
            weights.append(mesh.weights(p))
        solution = _solve_elastic(data, designs, weights, robust, springs, sections, m, params)
        solution = solution.reshape(sections, 3 + m, 2)
        affines = SectionAffines(
            affines.centre, affines.scale, np.ascontiguousarray(solution[:, :3].transpose(0, 2, 1))
        )
        nodes = solution[:, 3:]
        robust = []
        for d, design, (index, weight) in zip(data, designs, weights):
            mov, ref = d.pair.moving, d.pair.reference
            here = design @ solution[mov, :3] + np.einsum("nk,nkc->nc", weight, nodes[mov][index])
            there = design @ solution[ref, :3] + np.einsum("nk,nkc->nc", weight, nodes[ref][index])
            robust.append(_robust_weights(here - there - d.displacement, params.robust))
    return affines, nodes


def _solve_elastic(
    data: list[_Patches],
    designs: list,
    weights: list,
    robust: list,
    springs: np.ndarray,
    sections: int,
    m: int,
    params: SolveParams,
) -> np.ndarray:
    """Unknowns per section: 3 affine coefficients, then m nodes (per x/y component)."""
    k = 3 + m
    rows, cols, vals, rhs = [], [], [], []
    n_rows = 0
    for d, design, (index, weight), r in zip(data, designs, weights, robust):
        w = np.sqrt(d.confidence * r)[:, None]
        n = len(design)
        row = np.repeat(np.arange(n_rows, n_rows + n), 7)
        coefficients = np.concatenate([design, weight], axis=1)  # (n, 7)
        for section, sign in ((d.pair.moving, 1.0), (d.pair.reference, -1.0)):
            unknowns = section * k + np.concatenate(
                [np.tile(np.arange(3), (n, 1)), 3 + index], axis=1
            )
            rows.append(row)
            cols.append(unknowns.ravel())
            vals.append((sign * w * coefficients).ravel())
        rhs.append(w * d.displacement)
        n_rows += n
    for z in range(sections):
        count = len(springs)
        rows.append(np.repeat(np.arange(n_rows, n_rows + count), 2))
        cols.append((z * k + 3 + springs).ravel())
        vals.append(np.tile([params.stiffness, -params.stiffness], count))
        rhs.append(np.zeros((count, 2)))
        n_rows += count
    rows.append(np.arange(n_rows, n_rows + sections * k))
    cols.append(np.arange(sections * k))
    vals.append(
        np.tile(np.concatenate([_affine_priors(params), np.full(m, params.prior)]), sections)
    )
    rhs.append(np.zeros((sections * k, 2)))
    return _least_squares(
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(vals),
        np.concatenate(rhs),
        sections * k,
    )


def solve_motion(
    pairs: list[Pair],
    sections: int,
    start: tuple[int, int],
    stop: tuple[int, int],
    params: SolveParams,
) -> tuple[SectionAffines, np.ndarray, MeshGrid]:
    """All three steps for sections spanning [start, stop) in x, y: (affines, nodes, mesh), every
    motion between the sections (the content's own included; see `solve_sections`).
    The mesh reaches two node spacings beyond the sections, where rendering samples."""
    translations = solve_translations(pairs, sections, params)
    centre = ((start[0] + stop[0]) / 2, (start[1] + stop[1]) / 2)
    scale = max(stop[0] - start[0], stop[1] - start[1]) / 2
    affines = solve_affines(
        pairs, sections, SectionAffines.translations(centre, scale, translations), params
    )
    margin = 2 * params.mesh_spacing
    mesh = MeshGrid.covering(
        (int(start[0] - margin), int(start[1] - margin)),
        (int(stop[0] + margin), int(stop[1] + margin)),
        params.mesh_spacing,
    )
    affines, nodes = solve_mesh(pairs, sections, mesh, affines, params)
    return affines, nodes, mesh


def solve_sections(
    pairs: list[Pair],
    sections: int,
    start: tuple[int, int],
    stop: tuple[int, int],
    params: SolveParams,
) -> tuple[SectionAffines, np.ndarray, MeshGrid]:
    """`solve_motion`, less the content's smooth motion over `params.drift_window` (`drift`):
    the parts of the `SectionTransforms` that render the aligned stack."""
    affines, nodes, mesh = solve_motion(pairs, sections, start, stop, params)
    kept_affines, kept_nodes, _ = keep_content_motion(affines, nodes, params.drift_window)
    return kept_affines, kept_nodes, mesh
