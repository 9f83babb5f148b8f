"""Known misalignment for tests and benchmarks: per-section rotation and translation plus a
smooth warp.

Section z of the raw stack shows the aligned section with its content displaced by f_z(p) =
shift_z + (I − R(θ_z)ᵀ)(p − centre) + Σ_k a_k sin(2π (k · p) / λ_k + φ_k):
raw_z(q) = aligned_z(q − f_z(q)). The field that
aligns it back, u_z with aligned(p) = raw_z(p + u_z(p)), solves u = f(p + u) (`alignment`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from petavox.tasks.align.displacement import grid_points


@dataclass(frozen=True, kw_only=True)
class Misalignment:
    shifts: np.ndarray  # (z, 2) translation of each section's content, pixels
    waves: np.ndarray  # (z, k, 2, 4): per component x/y, [amplitude, kx, ky, phase]
    rotations: np.ndarray  # (z,) radians, about `centre`
    centre: tuple[float, float]

    def forward(self, z: int, points: np.ndarray) -> np.ndarray:
        """f_z at points (n, 2): where the content at each point came from, as a displacement."""
        c, s = np.cos(self.rotations[z]), np.sin(self.rotations[z])
        rel = points - np.asarray(self.centre)
        out = rel @ np.array([[1 - c, s], [-s, 1 - c]]) + self.shifts[z]  # content rotated by θ
        for k in range(self.waves.shape[1]):
            for c in range(2):
                amp, kx, ky, phase = self.waves[z, k, c]
                out[:, c] += amp * np.sin(kx * points[:, 0] + ky * points[:, 1] + phase)
        return out

    def alignment(self, z: int, points: np.ndarray, iterations: int = 30) -> np.ndarray:
        """u_z at points: the fixed point of u = f(p + u) (a contraction for gentle warps)."""
        u = self.forward(z, points)
        for _ in range(iterations):
            u = self.forward(z, points + u)
        return u


def random_misalignment(
    sections: int,
    max_shift: float,
    warp: float = 0.0,
    wavelength: float = 400.0,
    waves: int = 2,
    rotation: float = 0.0,
    centre: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
) -> Misalignment:
    """Shifts uniform in ±max_shift, rotations about `centre` uniform in ±rotation degrees;
    each warp wave's amplitude up to warp / waves."""
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-max_shift, max_shift, (sections, 2))
    rotations = np.deg2rad(rng.uniform(-rotation, rotation, sections))
    table = np.zeros((sections, waves, 2, 4))
    if warp > 0:
        angle = rng.uniform(0, 2 * np.pi, (sections, waves, 2))
        length = wavelength * rng.uniform(0.8, 1.25, (sections, waves, 2))
        table[..., 0] = rng.uniform(0.5, 1.0, (sections, waves, 2)) * warp / waves
        table[..., 1] = 2 * np.pi * np.cos(angle) / length
        table[..., 2] = 2 * np.pi * np.sin(angle) / length
        table[..., 3] = rng.uniform(0, 2 * np.pi, (sections, waves, 2))
    return Misalignment(shifts=shifts, waves=table, rotations=rotations, centre=centre)


def apply(aligned: np.ndarray, misalignment: Misalignment, labels: bool = False) -> np.ndarray:
    """The raw stack (x, y, z) that `misalignment` makes of an aligned one (cubic resampling,
    or nearest pixel for `labels`; zeros where content came from outside the section)."""
    nx, ny, nz = aligned.shape
    points = grid_points((0, 0), (nx, ny))
    raw = np.zeros_like(aligned)
    for z in range(nz):
        source = points - misalignment.forward(z, points)
        raw[:, :, z] = _sample(aligned[:, :, z], source, labels)
    return raw


def _sample(section: np.ndarray, source: np.ndarray, labels: bool) -> np.ndarray:
    """`section` (x, y) read at the (n, 2) points `source`, as an (x, y) section of its dtype:
    cubic, rounded and clipped to 0-255, or the nearest pixel for `labels`; 0 outside."""
    from scipy import ndimage

    if labels:
        values = ndimage.map_coordinates(section, source.T, order=0, mode="constant", cval=0)
    else:
        values = ndimage.map_coordinates(
            section.astype(np.float32), source.T, order=3, mode="constant", cval=0.0
        )
        values = np.clip(np.rint(values), 0, 255)
    return values.reshape(section.shape).astype(section.dtype)


def realigned(
    stack: np.ndarray, misalignment: Misalignment, error: Misalignment, labels: bool = False
) -> np.ndarray:
    """What an aligner that undid `misalignment` up to `error` makes of `apply(stack,
    misalignment)`: the content back in place, resampled twice and off by `error`'s field, with
    zeros where the misaligned sections had none (an aligned stack's black margins). Labels
    take the nearest pixel both ways, so they stay on the content that shows."""
    raw = apply(stack, misalignment, labels)
    nx, ny, nz = stack.shape
    points = grid_points((0, 0), (nx, ny))
    out = np.zeros_like(stack)
    for z in range(nz):
        source = points + misalignment.alignment(z, points) + error.forward(z, points)
        out[:, :, z] = _sample(raw[:, :, z], source, labels)
    return out


def residuals(found, misalignment: Misalignment, points: np.ndarray) -> np.ndarray:
    """Per-section RMS distance (pixels) between found and true alignment fields at `points`,
    less only their median difference over the whole stack (where the block sits is not
    observable). Nothing else is removed: a found field that bends or shears the stack where
    the truth does not counts in full. `found` is a `SectionTransforms` whose sections start
    at 0."""
    sections = len(misalignment.shifts)
    diff = np.stack(
        [
            found.at(found.first_section + z, points) - misalignment.alignment(z, points)
            for z in range(sections)
        ]
    )
    diff -= np.median(diff.reshape(-1, 2), axis=0)
    return np.sqrt((diff**2).sum(axis=-1).mean(axis=-1))


def straight_line_part(misalignment: Misalignment) -> float:
    """RMS (pixels, less the median) of the straight line in z through the known shifts: the
    part of them that no aligner keeping the content's steady motion through z can tell from
    it (a steady motion of the content and a steady trend of the shifts give the same images).
    For n independent shifts of standard deviation σ per axis it is about σ/√n per axis."""
    shifts = misalignment.shifts
    z = np.arange(len(shifts), dtype=np.float64)
    design = np.column_stack([np.ones_like(z), z])
    coef, *_ = np.linalg.lstsq(design, shifts, rcond=None)
    line = design @ coef
    line -= np.median(line, axis=0)
    return float(np.sqrt((line**2).sum(axis=1).mean()))
