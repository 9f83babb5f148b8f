"""What both synapse detectors share, per cleft: the owner rule and the synapse id, partners
and direction, the faces rule and the table.

A detector labels the clefts of a block (a chunk's write box grown by its halo) as connected
components; `owned_clefts` keeps those with `min_size` voxels and at most `max_extent` on every
axis whose owner voxel, the lowest in global (z, y, x) order, is in the write box: the cleft's
synapse id is that voxel's linear index in the volume plus one (`linear_index`), so every cleft
has one owner whatever the chunking.

Partners (`synapse_row`): a ray along ±axis, the smallest-variance axis of the cleft's voxels
(PCA, in nm), from every cleft voxel votes for the first segment it meets past the boundary
voxels (label 0 and both sides of a label change), so a cleft at a junction of three segments
still finds the two it separates; each side's segment is the one most rays met. The cleft
normal is then the direction across the membrane from one partner to the other: between the
mean positions of their voxels within `normal_radius` of the cleft's boundary voxels (the PCA
axis is a poor normal over a cleft only a few voxels in radius). The presynaptic side is the one
with the vesicle cloud: its segment has more dark voxels in a slab `vesicle_depth` voxels from
the membrane along the normal, less in the slab `psd_depth` (the postsynaptic density is a thin
dense band hugging the membrane on the other side, the vesicles a cloud further out). Positions
are in nm: voxel index × resolution.

Faces (`kept_at_faces`): a cleft touching the volume's outer faces (not a chunk's) is kept only
when both partners are found inside: a cut cleft with one side missing is not a synapse.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy import ndimage

from petavox.tasks.core.geometry import Box
from petavox.tasks.synapse import table as synapse_table


class PartnerSettings(Protocol):
    """What partner and direction finding reads of a detector's params (lengths in voxels
    along x)."""

    vesicle_depth: tuple[float, float]  # slab of the vesicle cloud
    psd_depth: tuple[float, float]  # slab of the postsynaptic density
    vesicle_threshold: float  # image below this in a slab counts as dark (0-1)
    reach: int  # how far rays look for the partners
    normal_radius: float  # the partners' voxels this close to the cleft give its normal
    # optional `whole_sides: bool` (default False): the direction cue reads every segmented
    # voxel on a side but the other partner's, not the side partner's alone (`_dark_fraction`)


def look(params: PartnerSettings) -> float:
    """How far (voxels along x) partner and direction finding look from a cleft voxel."""
    return max(params.reach, params.normal_radius, params.vesicle_depth[1], params.psd_depth[1])


def as_unit(raw: np.ndarray) -> np.ndarray:
    """uint8 0-255 or float 0-1 as float32 0-1."""
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255)
    return raw.astype(np.float32, copy=False)


def linear_index(voxels: np.ndarray, volume: Box) -> np.ndarray:
    """Index of global voxels (n, 3) in the volume's (z, y, x) order: the owner rule's key."""
    rel = voxels - np.asarray(volume.start, np.int64)
    nx, ny, _ = volume.shape
    return (rel[:, 2] * ny + rel[:, 1]) * nx + rel[:, 0]


def owned_clefts(
    cc: np.ndarray, read: Box, write: Box, volume: Box, min_size: int, max_extent: int
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The clefts (labels of `cc`, which covers `read`) of at least `min_size` voxels and at
    most `max_extent` on every axis whose owner voxel is in `write`: each as its voxels in the
    block, the same in the volume, and its synapse id."""
    origin = np.asarray(read.start, np.int64)
    for label, box in enumerate(ndimage.find_objects(cc), 1):
        if box is None:
            continue
        extent = [s.stop - s.start for s in box]
        local = np.argwhere(cc[box] == label)
        if len(local) < min_size or max(extent) > max_extent:
            continue
        voxels = local + [s.start for s in box]
        where = voxels + origin
        keys = linear_index(where, volume)
        owner = where[np.argmin(keys)]
        if all(a <= v < b for v, a, b in zip(owner, write.start, write.stop)):
            yield voxels, where, int(keys.min()) + 1


def touches_faces(where: np.ndarray, volume: Box) -> bool:
    """Whether any of the global voxels `where` (n, 3) lies on the volume's outer faces."""
    low = np.any(where == np.asarray(volume.start, np.int64))
    high = np.any(where == np.asarray(volume.stop, np.int64) - 1)
    return bool(low or high)


def kept_at_faces(row: dict, where: np.ndarray, volume: Box) -> bool:
    """A cleft on the volume's faces is a synapse only with both partners found (nonzero,
    different); one away from the faces always is."""
    if not touches_faces(where, volume):
        return True
    return bool(row["pre_id"] and row["post_id"] and row["pre_id"] != row["post_id"])


def as_table(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows (dicts with every column) as a checked synapse table."""
    if not rows:
        return synapse_table.empty()
    return synapse_table.checked({k: np.array([r[k] for r in rows]) for k in synapse_table.COLUMNS})


def synapse_row(
    where: np.ndarray,
    voxels: np.ndarray,
    img: np.ndarray,
    seg: np.ndarray,
    edge: np.ndarray,
    res: np.ndarray,
    params: PartnerSettings,
    darkness: np.ndarray | None = None,
) -> dict:
    """Centroid, partners and their points (nm) of one cleft (`where`: global voxels, `voxels`:
    the same in the block). Rays start from every cleft voxel, or with `darkness` (the
    cytoplasm darkness of the block) from its darker half: the part of a cleft flanked by the
    postsynaptic density and the vesicle cloud, not the membrane of a third segment it runs
    onto at a junction."""
    points = where * res
    centre = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    axis = vectors[:, 0]
    starts = voxels
    if darkness is not None:
        dark = darkness[tuple(voxels.T)]
        starts = voxels[dark <= np.median(dark)]
    hits = [_hits(seg, edge, starts * res, sign * axis, res, params) for sign in (1.0, -1.0)]
    labels = _partners(hits)
    on_edge = edge[tuple(voxels.T)]
    membrane = (where[on_edge] if on_edge.any() else where).mean(axis=0) * res
    origin = where[0] - voxels[0]  # the block's first voxel; the geometry below is global
    normal = _across(seg, origin, labels, membrane, res, params.normal_radius * res[0], axis)
    sides = []
    for sign, label, other, found in zip((1.0, -1.0), labels, labels[::-1], hits):
        depth = float(np.median(found[label])) if label else float(res[0])
        side = Side(label=label, other=other, centre=membrane, normal=sign * normal)
        vesicles = _dark_fraction(img, seg, origin, side, params.vesicle_depth, res, params)
        vesicles -= _dark_fraction(img, seg, origin, side, params.psd_depth, res, params)
        sides.append((label, depth, vesicles))
    (pre, pre_depth, _), (post, post_depth, _) = sorted(sides, key=lambda s: -s[2])
    if pre != sides[0][0]:
        normal = -normal
    return geometry_row(
        centre, centre + normal * pre_depth, centre - normal * post_depth, pre, post
    )


def geometry_row(
    centre: np.ndarray, pre_point: np.ndarray, post_point: np.ndarray, pre: int, post: int
) -> dict:
    """A synapse's centroid, partner points (nm, x y z) and partners as table-row entries."""
    row = {"pre_id": pre, "post_id": post}
    for prefix, point in (("", centre), ("pre_", pre_point), ("post_", post_point)):
        row.update({f"{prefix}{axis}": point[i] for i, axis in enumerate("xyz")})
    return row


def _hits(
    seg: np.ndarray,
    edge: np.ndarray,
    starts: np.ndarray,
    normal: np.ndarray,
    res: np.ndarray,
    params: PartnerSettings,
) -> dict[int, list[float]]:
    """The segments rays along `normal` from every cleft voxel (`starts`, nm in the block) meet
    first past the boundary voxels (`edge`), each with the distances (nm) of its hits."""
    step = res[0] / 2
    steps = np.arange(1, 2 * params.reach + 1) * step
    ray = np.rint((starts[:, None] + steps[None, :, None] * normal) / res).astype(np.int64)
    ray = np.clip(ray, 0, np.array(seg.shape) - 1)
    index = tuple(np.moveaxis(ray, -1, 0))
    inside = ~edge[index]
    first = np.argmax(inside, axis=1)
    met = inside[np.arange(len(ray)), first]
    hits: dict[int, list[float]] = {}
    for label, k in zip(seg[index][met, first[met]], first[met]):
        hits.setdefault(int(label), []).append(float(steps[k]))
    return hits


def _partners(hits: list[dict[int, list[float]]]) -> tuple[int, int]:
    """The segment on each side: the one most of its rays met; when both sides' favourites are
    one segment, the side that met it less often takes its next (0: none)."""
    ranked = [sorted(h, key=lambda k: (-len(h[k]), k)) for h in hits]
    first = [r[0] if r else 0 for r in ranked]
    if first[0] and first[0] == first[1]:
        weak = int(len(hits[0][first[0]]) >= len(hits[1][first[1]]))
        first[weak] = ranked[weak][1] if len(ranked[weak]) > 1 else 0
    return first[0], first[1]


def _ball(
    shape: tuple[int, ...], origin: np.ndarray, centre: np.ndarray, radius: float, res: np.ndarray
) -> tuple[tuple[slice, ...], np.ndarray]:
    """The box of the block (`shape`, first voxel `origin` in the volume) `radius` (nm) around a
    point (nm in the volume), and its voxels' offsets (nm) from the point, (..., 3): computed in
    volume coordinates, so that they are the same numbers in every block."""
    lo = np.maximum(np.floor((centre - radius) / res).astype(int) - origin, 0)
    hi = np.minimum(np.ceil((centre + radius) / res).astype(int) + 1 - origin, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    axes = ((np.arange(a, b) + o) * r - c for a, b, o, r, c in zip(lo, hi, origin, res, centre))
    return box, np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _across(
    seg: np.ndarray,
    origin: np.ndarray,
    labels: tuple[int, int],
    centre: np.ndarray,
    res: np.ndarray,
    radius: float,
    fallback: np.ndarray,
) -> np.ndarray:
    """The unit vector from the mean position of segment labels[1]'s voxels within `radius`
    (nm) of `centre` (nm) to that of labels[0]'s: the normal of the membrane between them
    (`fallback` when a partner is missing or has no voxel there)."""
    if not labels[0] or not labels[1]:
        return fallback
    box, grid = _ball(seg.shape, origin, centre, radius, res)
    ball = np.sum(grid * grid, axis=-1) <= radius * radius
    sub = seg[box]
    first, second = grid[ball & (sub == labels[0])], grid[ball & (sub == labels[1])]
    if not len(first) or not len(second):
        return fallback
    normal = first.mean(axis=0) - second.mean(axis=0)
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 0 else fallback


@dataclass(frozen=True, kw_only=True)
class Side:
    """One side of a cleft: its partner `label`, the partner on the other side, and the
    membrane point (nm) and unit normal pointing into this side."""

    label: int
    other: int
    centre: np.ndarray
    normal: np.ndarray


def _dark_fraction(
    img: np.ndarray,
    seg: np.ndarray,
    origin: np.ndarray,
    side: Side,
    depth: tuple[float, float],
    res: np.ndarray,
    params: PartnerSettings,
) -> float:
    """Fraction of the side's voxels darker than `vesicle_threshold` in the slab `depth`
    (voxels) from the centre along its normal, within its far depth (-1: no such voxel). A
    fraction, not a mean, so that the segments' own brightness does not matter. The side's
    voxels are its partner's; with `whole_sides` (the cleft-channel detector) every segmented
    voxel on that side but the other partner's, so that a partner split near the cleft (its
    piece beyond the split another segment) still shows its vesicle cloud or density."""
    if side.label == 0:
        return -1.0
    near, far = depth[0] * res[0], depth[1] * res[0]
    box, grid = _ball(seg.shape, origin, side.centre, far, res)
    along = grid @ side.normal
    sub = seg[box]
    if getattr(params, "whole_sides", False):
        ours = (sub != 0) & (sub != side.other)
    else:
        ours = sub == side.label
    mask = ours & (along >= near) & (along <= far)
    mask &= np.sum(grid * grid, axis=-1) <= far * far
    values = img[box][mask]
    return float(np.mean(values < params.vesicle_threshold)) if len(values) else -1.0
