"""Synthetic EM-like volumes (serial-section electron microscopy of neuropil) with ground truth.

Objects (smooth branching tubes for neurites, ellipsoids for somata/boutons) are rasterised as
small "cores"; every voxel then goes to its nearest core (a Voronoi partition in physical units,
so the objects fill space and touch as in real neuropil). A one-voxel layer on each label boundary
becomes membrane (label 0), and every label is one 6-connected component with ids 1..N.
Boundaries parallel to the sections are membrane only when anisotropy <= membrane_width + 0.5;
with thicker sections, objects in neighbouring sections touch (as in serial-section EM labels).

The image has bright textured cytoplasm, dark mitochondria, dark membranes, synapse-like clefts
with vesicle clouds, a slight in-plane blur, per-section brightness jitter and Gaussian noise.
Each synapse has a direction: a dark cleft disk on the membrane between two objects, a denser
band (PSD) on the postsynaptic side and a vesicle cloud on the presynaptic side; the generator
returns them as a table (`SYNAPSE_DTYPE`) and optionally the cleft voxels as a label volume.
With `cell_classes`, the volume also holds neurons with somata and nuclei, blood vessels, glia
and myelin (see `cells`), and each label's class is returned.
All arrays are indexed [x, y, z]. Everything is deterministic from `SyntheticParams.seed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from math import erf

import cc3d
import fastremap
import numpy as np
from scipy import ndimage

from petavox.tasks.core.errors import InputError
from petavox.tasks.synthetic.cells import CellClasses
from petavox.tasks.synthetic.raster import (
    STEP,
    bbox,
    membrane_growth,
    random_unit,
    smooth_noise,
    stamp,
    trace,
)
from petavox.tasks.synthetic.synapses import SYNAPSE_DTYPE, add_synapses

_MEM_GAIN = 2.0  # membrane profile gain: the dark band saturates over ~membrane_width
_MEM_VAL = 0.1  # membrane intensity before blur and noise

#: Draws the cell classes over (image, texture) before membranes; returns where mitochondria may go.
_Paint = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True, kw_only=True)
class SyntheticParams:
    """What to generate. Lengths are in xy voxels unless said otherwise."""

    shape: tuple[int, int, int] = (256, 256, 64)  # x, y, z voxels
    seed: int = 0
    n_neurites: int | None = None  # None: trace tubes until the density set by neurite_spacing
    n_blobs: int | None = None  # None: scale with volume size
    membrane_width: float = 1.5  # voxels
    noise: float = 0.08  # std of gaussian noise on [0,1] intensities
    max_shift: int = 0  # per-section misalignment in x,y voxels (0 = aligned)
    synapses: bool = True
    anisotropy: float = 1.0  # z voxel size / xy voxel size
    n_synapses: int | None = None  # None: scale with volume size
    neurite_spacing: float = 14.0  # typical distance between neighbouring neurite centrelines
    branch_prob: float = 0.3  # chance that a neurite has a side branch
    mito_density: float = 0.04  # mitochondria per voxel of neurite centreline
    psf_sigma: float = 0.5  # in-plane blur, voxels
    section_jitter: float = 0.03  # std of per-section brightness gain/offset
    min_object_voxels: int = 20  # smaller fragments are merged into a neighbour or made membrane
    cleft_labels: bool = False  # also return the cleft voxels labelled by synapse (1..n)
    bold_synapses: bool = False  # thick PSD, dense vesicle cloud (as in EM); False: faint ones
    cell_classes: bool = False  # also somata, vessels, glia and myelin; return label classes
    oriented_fraction: float = 0.0  # of the somata neurons, with processes along `orientation`
    orientation: tuple[float, float, float] = (1.0, 0.0, 0.0)  # physical x, y, z; any length

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or min(self.shape) < 1:
            raise InputError(f"synthetic shape {self.shape} must be three positive sizes")
        if self.anisotropy <= 0 or self.neurite_spacing <= 2 or self.membrane_width <= 0:
            raise InputError("synthetic anisotropy, neurite_spacing and membrane_width too small")
        if self.max_shift < 0 or self.noise < 0:
            raise InputError("synthetic max_shift and noise must not be negative")
        if not 0.0 <= self.oriented_fraction <= 1.0:
            raise InputError(f"synthetic oriented_fraction {self.oriented_fraction} not in 0..1")
        if self.oriented_fraction > 0 and not self.cell_classes:
            raise InputError("synthetic oriented_fraction needs cell_classes=True")
        o = np.asarray(self.orientation, dtype=np.float64)
        if o.shape != (3,) or not np.all(np.isfinite(o)) or not np.any(o):
            raise InputError(f"synthetic orientation {self.orientation} is not a direction")


@dataclass(kw_only=True)
class SyntheticVolume:
    """A generated volume; all arrays indexed [x, y, z]."""

    raw: np.ndarray  # uint8 image, misaligned when max_shift > 0
    labels: np.ndarray  # uint32 ground truth of the aligned volume, 0 = membrane
    shifts: np.ndarray  # int64 (z, 2): (dx, dy) applied to each section
    synapses: np.ndarray  # float64 (n, 3): cleft centres x, y, z (aligned coordinates)
    aligned_raw: np.ndarray  # uint8 image before the shifts (== raw when max_shift == 0)
    synapse_table: np.ndarray  # SYNAPSE_DTYPE (n,): the same centres with partners and normal
    clefts: np.ndarray | None = None  # uint32: synapse i's cleft voxels are i + 1 (cleft_labels)
    classes: dict[int, str] | None = None  # label -> neuron|neurite|glia|vessel|myelin
    oriented: frozenset[int] | None = None  # labels of neurons along `orientation` (cell_classes)


def generate(params: SyntheticParams = SyntheticParams()) -> SyntheticVolume:
    """Generate a synthetic volume and its ground truth from `params`."""
    p = params
    shape = tuple(int(s) for s in p.shape)
    rng_geo, rng_img, rng_syn, rng_fin, rng_mis = (
        np.random.default_rng(s) for s in np.random.SeedSequence(p.seed).spawn(5)
    )
    cells = CellClasses(p, shape) if p.cell_classes else None
    core, tubes = _draw_cores(p, shape, rng_geo, cells)
    cores = _voronoi(core, p.anisotropy)
    if cells is not None:
        cells.trim(cores, core)
    obj = _merge_small(cores, p.min_object_voxels)
    labels, mem_xy, mem_z = _membranes(obj, p)
    paint = None if cells is None else partial(cells.paint, cores=cores)
    img = _render(obj, labels, mem_xy, mem_z, tubes, p, rng_img, paint)
    classes, oriented = (None, None) if cells is None else cells.final(labels, cores)
    clefts = np.zeros(shape, np.uint32) if p.cleft_labels else None
    table = add_synapses(img, labels, clefts, p, rng_syn) if p.synapses else None
    table = np.zeros(0, SYNAPSE_DTYPE) if table is None else table
    aligned = _finish(img, p, rng_fin)
    shifts, raw = _misalign(aligned, p.max_shift, rng_mis)
    centres = np.column_stack([table["x"], table["y"], table["z"]]).reshape(-1, 3)
    return SyntheticVolume(
        raw=raw,
        labels=labels,
        shifts=shifts,
        synapses=centres,
        aligned_raw=aligned,
        synapse_table=table,
        clefts=clefts,
        classes=classes,
        oriented=oriented,
    )


def _draw_cores(
    p: SyntheticParams, shape, rng, cells: CellClasses | None
) -> tuple[np.ndarray, list]:
    """Rasterise object cores; returns the core label volume and the tubes' centrelines.
    With `cells`, its objects come first (free blobs then stay small) and myelin last."""
    a, sp = p.anisotropy, p.neurite_spacing
    ext = np.array([shape[0], shape[1], shape[2] * a], dtype=np.float64)
    lo, hi = -0.5 * np.array([1, 1, a]) - 2, ext - 0.5 * np.array([1, 1, a]) + 2
    vol_phys = float(np.prod(ext))
    n_steps = int(np.linalg.norm(ext) * 1.3 / STEP) + 2
    core = np.zeros(shape, dtype=np.uint32)
    tubes, label = ([], 0) if cells is None else cells.draw(core)
    n_blobs = p.n_blobs if p.n_blobs is not None else round(vol_phys / (40 * sp**3))
    free = rng.random(n_blobs) < 0.5  # the rest are boutons swelling on a neurite
    for _ in range(int(free.sum())):  # somata / glia-like blobs, own label, drawn first
        label += 1
        r = sp * (rng.uniform(0.9, 1.8) if rng.random() < 0.25 else rng.uniform(0.35, 0.6))
        r = r if cells is None else min(r, 0.6 * sp)  # cells draws the somata and glia
        semi = r * rng.uniform(0.7, 1.3, 3)
        _draw_ellipsoid(core, rng.uniform(0, 1, 3) * ext, semi, rng, label, a)

    target_len = vol_phys / sp**2
    total, count, n_min = 0.0, 0, (3 if p.n_neurites is None else p.n_neurites)
    while count < n_min or (p.n_neurites is None and total < target_len):
        count, label = count + 1, label + 1
        start, d = rng.uniform(0, 1, 3) * ext, random_unit(rng)
        fwd, bwd = trace(rng, start, d, n_steps, lo, hi), trace(rng, start, -d, n_steps, lo, hi)
        pieces = [np.concatenate([bwd[::-1], start[None], fwd])]
        if rng.random() < p.branch_prob and len(pieces[0]) > 8:
            at = pieces[0][rng.integers(2, len(pieces[0]) - 2)]
            b = d + 1.2 * random_unit(rng)
            pieces.append(trace(rng, at, b / np.linalg.norm(b), n_steps, lo, hi))
        r0 = sp * 0.15 * np.exp(0.3 * rng.standard_normal()) * (1.8 if rng.random() < 0.2 else 1)
        for k, pts in enumerate(pieces):
            rad = r0 * (0.7 if k else 1.0) * np.exp(0.25 * smooth_noise(rng, len(pts), 1, 10))
            rad = np.clip(rad[:, 0], 1.0, 0.45 * sp)
            stamp(core, pts, rad, label, a)
            tubes.append((pts, rad, label))
            total += len(pts) * STEP

    for _ in range(int((~free).sum())):  # boutons / varicosities on random neurites
        if not tubes:
            break
        pts, rad, lab = tubes[rng.integers(len(tubes))]
        i = rng.integers(len(pts))
        _draw_ellipsoid(core, pts[i], rad[i] * rng.uniform(1.8, 3.0, 3), rng, lab, a)
    if cells is not None:
        cells.myelinate(core, tubes, label)
    return core, tubes


def _draw_ellipsoid(vol, centre, semi, rng, value: int, aniso: float) -> None:
    """Write `value` into the empty voxels of a randomly rotated ellipsoid."""
    rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    sl, grid = bbox(vol.shape, centre, float(np.max(semi)), aniso)
    if grid is None:
        return
    q = ((grid - centre) @ rot) / semi
    inside = np.sum(q * q, axis=-1) <= 1.0
    sub = vol[sl]
    sub[inside & (sub == 0)] = value


def _voronoi(core: np.ndarray, aniso: float) -> np.ndarray:
    """Give every voxel the label of its nearest core voxel (physical distances)."""
    if not core.any():
        return np.ones(core.shape, dtype=np.uint32)
    idx = ndimage.distance_transform_edt(
        core == 0, sampling=(1.0, 1.0, aniso), return_distances=False, return_indices=True
    )
    return core[tuple(idx)]


def _merge_small(obj: np.ndarray, min_voxels: int) -> np.ndarray:
    """Split labels into 6-connected pieces; merge tiny ones into the neighbour touched most."""
    cc = cc3d.connected_components(obj, connectivity=6, out_dtype=np.uint32)
    sizes = np.bincount(cc.reshape(-1))
    small = set(np.flatnonzero(sizes < min_voxels).tolist()) - {0}
    if small:
        best: dict[int, tuple[int, int]] = {}
        for (u, v), area in sorted(cc3d.contacts(cc, connectivity=6).items()):
            for s, o in ((u, v), (v, u)):
                if s in small and o not in small and area > best.get(s, (0, -1))[1]:
                    best[s] = (o, area)
        mapping = {s: o for s, (o, _) in best.items()}
        if mapping:
            fastremap.remap(cc, mapping, preserve_missing_labels=True, in_place=True)
    return cc


def _z_membranes(p: SyntheticParams) -> bool:
    """Whether boundaries between sections are labelled (and drawn fully dark) as membrane."""
    return p.anisotropy <= p.membrane_width + 0.5


def _membranes(obj: np.ndarray, p: SyntheticParams):
    """Mark one side of every label boundary as membrane; returns labels, in-plane and z masks."""
    bx, by, bz = (np.zeros(obj.shape, dtype=bool) for _ in range(3))
    bx[:-1] = obj[:-1] != obj[1:]
    by[:, :-1] = obj[:, :-1] != obj[:, 1:]
    bz[:, :, :-1] = obj[:, :, :-1] != obj[:, :, 1:]
    mem_xy = bx | by
    grow = membrane_growth(p.membrane_width)
    if grow > 0:
        cross = ndimage.generate_binary_structure(2, 1)[:, :, None]
        mem_xy = ndimage.binary_dilation(mem_xy, cross, iterations=grow)
    # A boundary parallel to the sections is a membrane voxel only when sections are about as
    # thin as the membrane; thicker sections are mostly cytoplasm, so objects touch across z.
    labels = np.where(mem_xy | (bz & _z_membranes(p)), 0, obj).astype(np.uint32)
    labels = cc3d.connected_components(labels, connectivity=6, out_dtype=np.uint32)
    sizes = np.bincount(labels.reshape(-1))
    tiny = sizes < p.min_object_voxels
    tiny[0] = False
    if tiny.any():
        sliver = tiny[labels]
        labels[sliver] = 0
        mem_xy |= sliver
    labels, _ = fastremap.renumber(labels, in_place=True)
    return labels.astype(np.uint32, copy=False), mem_xy, bz & ~mem_xy


def _lowfreq(rng, shape, cell: float = 4.0) -> np.ndarray:
    """Smooth unit-ish noise with features about `cell` voxels across."""
    small = [max(2, int(np.ceil(s / cell)) + 1) for s in shape]
    g = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), 1.0)
    g /= max(float(g.std()), 1e-6)
    zoom = [s / m for s, m in zip(shape, small)]
    out = ndimage.zoom(g, zoom, order=1, grid_mode=True, mode="grid-constant")
    return out[: shape[0], : shape[1], : shape[2]]


def _render(
    obj, labels, mem_xy, mem_z, tubes, p: SyntheticParams, rng, paint: _Paint | None = None
) -> np.ndarray:
    """Noise-free intensities in [0, 1] (float32)."""
    tone = rng.uniform(0.62, 0.82, int(obj.max()) + 1).astype(np.float32)
    texture = 0.05 * _lowfreq(rng, obj.shape)
    img = tone[obj] + texture
    inside = labels > 0
    if paint is not None:
        inside &= paint(img, texture)
    if tubes:
        pts = np.concatenate([t[0] for t in tubes])
        tangent = np.concatenate(
            [np.gradient(t[0], axis=0) if len(t[0]) > 1 else t[0] * 0 for t in tubes]
        )
        n_mito = rng.poisson(p.mito_density * len(pts))
        for i in rng.integers(0, len(pts), n_mito):
            thin = p.neurite_spacing / 14.0 * rng.uniform(1.5, 3.0)
            _draw_mito(img, obj, inside, pts[i], tangent[i], thin, p.anisotropy, rng)
    w = p.membrane_width
    s = max(0.35, np.sqrt(max(w * w - 1, 0.1)) / 2.355)
    thick = 2 * membrane_growth(w) + 1
    peak = float(erf(thick / (2 * np.sqrt(2) * s)))
    m = ndimage.gaussian_filter(mem_xy.astype(np.float32), (s, s, 0)) * (_MEM_GAIN / peak)
    z_dark = 1.0 if _z_membranes(p) else w / p.anisotropy
    np.maximum(m, mem_z * np.float32(z_dark), out=m)
    np.clip(m, 0, 1, out=m)
    mem_val = _MEM_VAL + 0.6 * (texture - texture.mean())
    return (img * (1 - m) + mem_val * m).astype(np.float32)


def _draw_mito(img, obj, inside, centre, tangent, thin: float, aniso: float, rng) -> None:
    """A dark elongated ellipsoid along a neurite, clipped to the object at its centre."""
    v = np.rint(centre / (1, 1, aniso)).astype(int)
    if np.any(v < 0) or np.any(v >= obj.shape):
        return
    axis = tangent / (np.linalg.norm(tangent) + 1e-9)
    long = thin * rng.uniform(1.5, 4.0)
    sl, grid = bbox(obj.shape, centre, long, aniso)
    d = grid - centre
    along = d @ axis
    q = (along / long) ** 2 + (np.sum(d * d, axis=-1) - along**2) / thin**2
    m = (q <= 1) & (obj[sl] == obj[tuple(v)]) & inside[sl]
    img[sl][m] = np.float32(rng.uniform(0.28, 0.4))


def _finish(img: np.ndarray, p: SyntheticParams, rng) -> np.ndarray:
    """Blur in-plane, jitter section brightness, add noise and quantise to uint8."""
    if p.psf_sigma > 0:
        img = ndimage.gaussian_filter(img, (p.psf_sigma, p.psf_sigma, 0))
    nz = img.shape[2]
    gain = 1 + p.section_jitter * rng.standard_normal(nz).astype(np.float32)
    offset = 0.5 * p.section_jitter * rng.standard_normal(nz).astype(np.float32)
    img = img * gain + offset
    if p.noise > 0:
        img += np.float32(p.noise) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.rint(np.clip(img, 0, 1) * 255).astype(np.uint8)


def _misalign(aligned: np.ndarray, max_shift: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Shift each section z by shifts[z] = (dx, dy): raw[x + dx, y + dy, z] = aligned[x, y, z].

    Content shifted out is dropped (no wrap-around); uncovered voxels get the volume's median.
    """
    nx, ny, nz = aligned.shape
    shifts = np.zeros((nz, 2), dtype=np.int64)
    if max_shift == 0:
        return shifts, aligned
    shifts[:] = rng.integers(-max_shift, max_shift + 1, size=(nz, 2))
    raw = np.full_like(aligned, int(np.median(aligned)))
    for z, (dx, dy) in enumerate(shifts):
        src = (slice(max(-dx, 0), nx - max(dx, 0)), slice(max(-dy, 0), ny - max(dy, 0)), z)
        dst = (slice(max(dx, 0), nx - max(-dx, 0)), slice(max(dy, 0), ny - max(-dy, 0)), z)
        raw[dst] = aligned[src]
    return shifts, raw


def boundary_from_labels(labels: np.ndarray, noise: float = 0.1, seed: int = 0) -> np.ndarray:
    """A float32 boundary map (1 = membrane) from ground truth: blurred membranes plus noise.

    Stands in for a good CNN's output when testing segmentation apart from inference.
    """
    rng = np.random.default_rng(seed)
    is_membrane = labels == 0
    membrane = ndimage.gaussian_filter(is_membrane.astype(np.float32), 0.5)
    membrane /= max(float(membrane[is_membrane].mean()), 1e-6) if is_membrane.any() else 1.0
    noisy = membrane + rng.normal(0, noise, labels.shape).astype(np.float32)
    return np.clip(noisy, 0, 1).astype(np.float32)
