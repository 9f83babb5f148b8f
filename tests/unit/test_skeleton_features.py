"""`morphology.skeleton_features` on skeletons whose answers are known by construction."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cloudvolume import Skeleton

from petavox.tasks.morphology.skeleton_features import skeleton_features


def y_shape() -> Skeleton:
    """A 300 nm trunk along z from a wide soma at the origin, forking into two 100 nm arms."""
    trunk = [(0.0, 0.0, 100.0 * k) for k in range(4)]
    arms = [(60.0, 0.0, 380.0), (-60.0, 0.0, 380.0)]
    vertices = np.array(trunk + arms)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [3, 5]])
    radius = np.array([900.0, 200.0, 150.0, 120.0, 50.0, 50.0], np.float32)
    return Skeleton(vertices, edges, radii=radius)


def test_cable_points_and_radius_of_a_fork():
    f = skeleton_features(y_shape())
    assert f["cable_nm"] == pytest.approx(300 + 2 * 100)
    assert f["end_points"] == 3 and f["branch_points"] == 1
    assert f["max_radius_nm"] == 900.0
    assert (f["max_radius_x"], f["max_radius_y"], f["max_radius_z"]) == (0.0, 0.0, 0.0)
    # only the first trunk edge (radii 900 and 200: mean 550) is half the widest or more
    assert f["thick_fraction"] == pytest.approx(100 / 500)


def test_a_tube_as_thick_all_along_is_all_thick():
    vertices = np.array([[0.0, 0, 100.0 * k] for k in range(5)])
    edges = np.array([[k, k + 1] for k in range(4)])
    radius = np.array([300.0, 310, 290, 305, 300], np.float32)
    assert skeleton_features(Skeleton(vertices, edges, radii=radius))["thick_fraction"] == 1.0


def test_the_axis_follows_most_of_the_cable():
    f = skeleton_features(y_shape())
    axis = np.array([f[f"skeleton_axis_{a}"] for a in "xyz"])
    assert np.linalg.norm(axis) == pytest.approx(1.0)
    assert math.degrees(math.acos(abs(axis[2]))) < 15  # the trunk and the arms' z part
    assert 0.8 < f["skeleton_alignment"] <= 1.0


def test_a_cable_along_x_and_an_isotropic_star():
    line = Skeleton(np.array([[0.0, 0, 0], [50, 0, 0], [120, 0, 0]]), np.array([[0, 1], [1, 2]]))
    f = skeleton_features(line)
    assert abs(f["skeleton_axis_x"]) == pytest.approx(1.0) and f["skeleton_alignment"] == 1.0
    star_vertices = np.array([[0.0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]])
    star = Skeleton(star_vertices, np.array([[0, 1], [0, 2], [0, 3]]))
    assert skeleton_features(star)["skeleton_alignment"] == pytest.approx(1 / 3)


def test_an_empty_skeleton_has_no_values():
    f = skeleton_features(Skeleton())
    assert all(math.isnan(v) for v in f.values())
