"""Shape features of one segment's skeleton (a cloud-volume `Skeleton`: vertices in nm, edges,
a radius per vertex: kimimaro's distance to the boundary, as `skeletonize` writes it).

Cable length is the sum of the edge lengths; end points have one edge, branch points three or
more. The largest radius is the largest inscribed ball the skeleton passes through: a soma's is
several times a neurite's, and where it lies is the soma's position. The thick fraction is the
share of the cable whose edges (their ends' mean radius) are at least half that wide: small for
a soma and its thin neurites, large for a tube as thick all along. The principal axis is the
cable-length-weighted principal direction of the edges (each edge's direction counted by its
length, its sign ignored): for an elongated neuron, the way its processes run.
"""

from __future__ import annotations

import numpy as np

FEATURES = (
    "cable_nm",
    "end_points",
    "branch_points",
    "max_radius_nm",
    "max_radius_x",
    "max_radius_y",
    "max_radius_z",
    "thick_fraction",
    "skeleton_axis_x",
    "skeleton_axis_y",
    "skeleton_axis_z",
    "skeleton_alignment",
)


def skeleton_features(skeleton) -> dict[str, float]:
    """`FEATURES` of `skeleton`; NaN where it has no vertex (or no edge, for the cable's)."""
    vertices = np.asarray(skeleton.vertices, np.float64).reshape(-1, 3)
    edges = np.asarray(skeleton.edges, np.int64).reshape(-1, 2)
    radius = np.asarray(getattr(skeleton, "radius", np.zeros(len(vertices))), np.float64)
    out = dict.fromkeys(FEATURES, float("nan"))
    if not len(vertices):
        return out
    vectors = vertices[edges[:, 1]] - vertices[edges[:, 0]]
    lengths = np.linalg.norm(vectors, axis=1)
    degree = np.bincount(edges.ravel(), minlength=len(vertices))
    widest = int(np.argmax(radius)) if len(radius) else 0
    out.update(
        cable_nm=float(lengths.sum()),
        end_points=float(np.sum(degree == 1)),
        branch_points=float(np.sum(degree >= 3)),
        max_radius_nm=float(radius[widest]) if len(radius) else float("nan"),
        max_radius_x=float(vertices[widest, 0]),
        max_radius_y=float(vertices[widest, 1]),
        max_radius_z=float(vertices[widest, 2]),
    )
    if lengths.sum() > 0:
        thick = radius[edges].mean(axis=1) >= 0.5 * radius[widest]
        out["thick_fraction"] = float(lengths[thick].sum() / lengths.sum())
        # Σ l·u uᵀ = Σ v vᵀ / l over edges (u = v / l): the orientation tensor of the cable
        keep = lengths > 0
        tensor = (vectors[keep].T / lengths[keep]) @ vectors[keep] / lengths.sum()
        values, axes = np.linalg.eigh(tensor)
        axis = axes[:, 2] * np.sign(axes[np.argmax(np.abs(axes[:, 2])), 2])
        out.update(
            skeleton_axis_x=float(axis[0]),
            skeleton_axis_y=float(axis[1]),
            skeleton_axis_z=float(axis[2]),
            skeleton_alignment=float(values[2]),  # 1: all cable along the axis, 1/3: isotropic
        )
    return out
