"""Synapse detection and partner assignment on one block of raw image + segmentation.

CLASSICAL DETECTOR (no trained model): clefts are the darkest thin structures on membranes
between two segments. A voxel is a cleft candidate when it lies on or next to a segment boundary
(label 0 or a label change), two different segments are within `contact_radius`, and the image
around it *inside the segments* is dark (the mean intensity of non-boundary voxels, Gaussian
weighted: the postsynaptic density and the vesicle cloud darken the cytoplasm next to a cleft,
while plain membrane, however thick, does not). Candidates are labelled (26-connected, cc3d);
a component is a cleft when it has `min_size` voxels, at most `max_extent` voxels on every axis
and a voxel darker than `seed_threshold`. Confidence grows with darkness and size.

Chunking: every block is a chunk's write box grown by a halo. A cleft belongs to the chunk
whose write box holds its owner voxel, the lowest of its voxels in global (z, y, x) order; its
synapse id is that voxel's linear index in the volume plus one. With a halo of at least
`required_halo`, every cleft of at most `max_extent` voxels is seen whole by its owner, with
exact features, and a component cut by the halo's outer face is wider than `max_extent` when its
lowest voxel is in the write box, so it is dropped; the synapse set is then the same for any
chunking (same ids, centroids, partners).

Partners: a ray along ±axis, the smallest-variance axis of the cleft's voxels (PCA, in nm), from
every cleft voxel votes for the first segment it meets past the boundary voxels (label 0 and
both sides of a label change), so a cleft at a junction of three segments still finds the two
it separates; each side's segment is the one most rays met. The cleft normal is then the
direction across the membrane from one partner to the other: between the mean positions of
their voxels within `normal_radius` of the cleft's boundary voxels (the PCA axis is a poor
normal: the candidate voxels are a slab about three voxels thick, the membrane and the dark
band on either side, over a cleft only a few voxels in radius, so the axis is often tens of
degrees off and the direction slabs below looked sideways). The presynaptic side is the one
with the vesicle cloud: its segment has more dark voxels in a slab `vesicle_depth` voxels from
the membrane along the normal, less in the slab `psd_depth` (the postsynaptic density is a
thin dense band hugging the membrane on the other side, the vesicles a cloud further out).
Positions are in nm: voxel index × resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np
from scipy import ndimage

from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.synapse import table as synapse_table

NO_DATA_WIDTH = 4  # voxels: in-plane squares of 0 this wide are no data, not a dark cleft


@dataclass(frozen=True, kw_only=True)
class DetectorParams:
    """Thresholds of the classical detector; lengths in voxels along x (scaled per axis)."""

    sigma: float = 1.0  # Gaussian weighting of the cytoplasm darkness
    voxel_threshold: float = 0.3  # candidate voxels: cytoplasm darkness below this (0-1)
    seed_threshold: float = 0.19  # a cleft has a voxel darker than this
    contact_radius: int = 2  # two different segments within this of a candidate
    min_size: int = 15  # voxels
    max_extent: int = 20  # voxels on every axis; larger components are not clefts
    vesicle_depth: tuple[float, float] = (3.0, 6.0)  # slab of the vesicle cloud
    psd_depth: tuple[float, float] = (0.5, 3.0)  # slab of the postsynaptic density
    vesicle_threshold: float = 0.4  # image below this in a slab counts as dark (0-1)
    reach: int = 10  # how far rays look for the partners
    normal_radius: float = 6.0  # the partners' voxels this close to the cleft give its normal


def axis_scale(resolution: tuple[float, float, float]) -> np.ndarray:
    """Voxels per x voxel on each axis (1 for isotropic data)."""
    return resolution[0] / np.asarray(resolution, np.float64)


def required_halo(params: DetectorParams, resolution: tuple[float, float, float]) -> Vec3:
    """The smallest halo (per axis, voxels) with which the synapse set does not depend on the
    chunking: clefts of up to `max_extent` whole, their features exact and their partners
    within reach."""
    scale = axis_scale(resolution)
    gauss = np.floor(4.0 * params.sigma * scale + 0.5)  # scipy's kernel radius
    contact = np.maximum(1, np.rint(params.contact_radius * scale))
    # no data looks NO_DATA_WIDTH further, the boundary mask one more, then it dilates
    features = gauss + contact + NO_DATA_WIDTH + 2
    look = max(params.reach, params.normal_radius, params.vesicle_depth[1], params.psd_depth[1])
    reach = np.ceil(look * scale) + 2
    return Vec3.of(int(params.max_extent + v) for v in np.maximum(features, reach))


def boundaries(seg: np.ndarray) -> np.ndarray:
    """Label 0, and both sides of a contact between two non-zero labels."""
    out = seg == 0
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        lo, hi = seg[tuple(a)], seg[tuple(b)]
        change = (lo != hi) & (lo != 0) & (hi != 0)
        out[tuple(a)] |= change
        out[tuple(b)] |= change
    return out


def _as_unit(raw: np.ndarray) -> np.ndarray:
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / np.float32(255)
    return raw.astype(np.float32, copy=False)


def candidates(
    img: np.ndarray, seg: np.ndarray, edge: np.ndarray, params: DetectorParams, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate mask and the cytoplasm darkness (mean of non-boundary voxels); `edge`:
    the `boundaries` of `seg`."""
    inside = (~edge).astype(np.float32)
    sigma = params.sigma * scale
    weight = ndimage.gaussian_filter(inside, sigma)
    darkness = ndimage.gaussian_filter(img * inside, sigma) / np.maximum(weight, 1e-3)
    size = tuple(int(2 * max(1, round(params.contact_radius * s)) + 1) for s in scale)
    top = np.iinfo(seg.dtype).max
    lowest = ndimage.minimum_filter(np.where(seg == 0, top, seg), size=size)
    highest = ndimage.maximum_filter(seg, size=size)
    two = (lowest != top) & (lowest != highest)
    near = ndimage.binary_dilation(edge, iterations=1)
    return near & two & (darkness < params.voxel_threshold), darkness


def detect(
    raw: np.ndarray,
    seg: np.ndarray,
    read: Box,
    write: Box,
    volume: Box,
    resolution: tuple[float, float, float],
    params: DetectorParams,
) -> dict[str, np.ndarray]:
    """The synapses this block owns as a synapse table (`table`): `raw` and `seg` cover `read` (the
    write box grown by at least `required_halo`, clipped to the `volume`)."""
    img, seg = _as_unit(raw), np.where(no_data(raw), 0, seg)
    scale = axis_scale(resolution)
    edge = boundaries(seg)
    cand, darkness = candidates(img, seg, edge, params, scale)
    inner = write.grow(params.max_extent).intersection(read)
    keep = np.zeros_like(cand)
    keep[inner.slices(read.start)] = True
    cc = cc3d.connected_components(cand & keep, connectivity=26, out_dtype=np.uint32)
    res = np.asarray(resolution, np.float64)
    origin = np.asarray(read.start, np.int64)
    rows = []
    for label, box in enumerate(ndimage.find_objects(cc), 1):
        if box is None:
            continue
        extent = [s.stop - s.start for s in box]
        local = np.argwhere(cc[box] == label)
        if len(local) < params.min_size or max(extent) > params.max_extent:
            continue
        voxels = local + [s.start for s in box]
        dark = darkness[tuple(voxels.T)]
        if dark.min() >= params.seed_threshold:
            continue
        where = voxels + origin
        keys = linear_index(where, volume)
        owner = where[np.argmin(keys)]
        if not all(a <= v < b for v, a, b in zip(owner, write.start, write.stop)):
            continue
        row = _synapse(where, voxels, img, seg, edge, res, params)
        row.update(
            synapse_id=int(keys.min()) + 1,
            size=len(voxels),
            confidence=_confidence(float(dark.min()), len(voxels), params),
        )
        rows.append(row)
    if not rows:
        return synapse_table.empty()
    return synapse_table.checked({k: np.array([r[k] for r in rows]) for k in synapse_table.COLUMNS})


def no_data(raw: np.ndarray) -> np.ndarray:
    """Where the image has no data: in-plane runs of 0 at least NO_DATA_WIDTH wide (the black
    margin of an aligned section, a missing chunk) and the one-pixel rim around them
    (interpolated between data and black). A dark cleft may be 0 too, but never over a whole
    square of voxels (noise). No segment is there for the detector: such a margin is boundary,
    not dark cytoplasm."""
    square = np.ones((NO_DATA_WIDTH, NO_DATA_WIDTH, 1), bool)
    cores = ndimage.binary_erosion(np.asarray(raw) == 0, square)
    if not cores.any():
        return cores
    missing = ndimage.binary_dilation(cores, square)  # the opening of the zeros by the square
    return ndimage.binary_dilation(missing, np.ones((3, 3, 1), bool))


def linear_index(voxels: np.ndarray, volume: Box) -> np.ndarray:
    """Index of global voxels (n, 3) in the volume's (z, y, x) order: the owner rule's key."""
    rel = voxels - np.asarray(volume.start, np.int64)
    nx, ny, _ = volume.shape
    return (rel[:, 2] * ny + rel[:, 1]) * nx + rel[:, 0]


def _confidence(darkest: float, size: int, params: DetectorParams) -> float:
    depth = (params.voxel_threshold - darkest) / params.voxel_threshold
    return float(np.clip(depth, 0, 1) * size / (size + params.min_size))


def _synapse(
    where: np.ndarray,
    voxels: np.ndarray,
    img: np.ndarray,
    seg: np.ndarray,
    edge: np.ndarray,
    res: np.ndarray,
    params: DetectorParams,
) -> dict:
    """Centroid, partners and their points (nm) of one cleft (`where`: global voxels, `voxels`:
    the same in the block)."""
    points = where * res
    centre = points.mean(axis=0)
    _, vectors = np.linalg.eigh(np.cov((points - centre).T))
    axis = vectors[:, 0]
    hits = [_hits(seg, edge, voxels * res, sign * axis, res, params) for sign in (1.0, -1.0)]
    labels = _partners(hits)
    on_edge = edge[tuple(voxels.T)]
    membrane = (where[on_edge] if on_edge.any() else where).mean(axis=0) * res
    origin = where[0] - voxels[0]  # the block's first voxel; the geometry below is global
    normal = _across(seg, origin, labels, membrane, res, params.normal_radius * res[0], axis)
    sides = []
    for sign, label, found in zip((1.0, -1.0), labels, hits):
        depth = float(np.median(found[label])) if label else float(res[0])
        n = sign * normal
        vesicles = _dark_fraction(
            img, seg, origin, label, membrane, n, params.vesicle_depth, res, params
        ) - _dark_fraction(img, seg, origin, label, membrane, n, params.psd_depth, res, params)
        sides.append((label, depth, vesicles))
    (pre, pre_depth, _), (post, post_depth, _) = sorted(sides, key=lambda s: -s[2])
    if pre != sides[0][0]:
        normal = -normal
    pre_point = centre + normal * pre_depth
    post_point = centre - normal * post_depth
    return {
        "x": centre[0],
        "y": centre[1],
        "z": centre[2],
        "pre_x": pre_point[0],
        "pre_y": pre_point[1],
        "pre_z": pre_point[2],
        "post_x": post_point[0],
        "post_y": post_point[1],
        "post_z": post_point[2],
        "pre_id": pre,
        "post_id": post,
    }


def _hits(
    seg: np.ndarray,
    edge: np.ndarray,
    starts: np.ndarray,
    normal: np.ndarray,
    res: np.ndarray,
    params: DetectorParams,
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


def _dark_fraction(
    img: np.ndarray,
    seg: np.ndarray,
    origin: np.ndarray,
    label: int,
    centre: np.ndarray,
    normal: np.ndarray,
    depth: tuple[float, float],
    res: np.ndarray,
    params: DetectorParams,
) -> float:
    """Fraction of segment `label`'s voxels darker than `vesicle_threshold` in the slab `depth`
    (voxels) from the centre along `normal`, within its far depth (-1: no such voxel). A
    fraction, not a mean, so that the segments' own brightness does not matter."""
    if label == 0:
        return -1.0
    near, far = depth[0] * res[0], depth[1] * res[0]
    box, grid = _ball(seg.shape, origin, centre, far, res)
    along = grid @ normal
    mask = (seg[box] == label) & (along >= near) & (along <= far)
    mask &= np.sum(grid * grid, axis=-1) <= far * far
    values = img[box][mask]
    return float(np.mean(values < params.vesicle_threshold)) if len(values) else -1.0
