"""Synapses drawn into a synthetic volume: a dark cleft disk on the membrane between two
objects, a denser band (PSD) on the postsynaptic side and a vesicle cloud on the presynaptic
side, returned as a table (`SYNAPSE_DTYPE`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from petavox.tasks.synthetic.raster import bbox, membrane_growth, stamp

if TYPE_CHECKING:
    from petavox.tasks.synthetic.generator import SyntheticParams


@dataclass(frozen=True, kw_only=True)
class _SynapseLook:
    """Intensities and sizes of a drawn synapse (the vesicle cloud's in cleft radii)."""

    cleft: float
    psd: float
    psd_depth: float  # voxels
    vesicle: float
    vesicles: tuple[int, int]  # count range
    cloud_offset: float
    cloud_spread: float


_FAINT = _SynapseLook(
    cleft=0.06,
    psd=0.22,
    psd_depth=1.8,
    vesicle=0.3,
    vesicles=(10, 24),
    cloud_offset=0.9,
    cloud_spread=0.6,
)
_BOLD = _SynapseLook(
    cleft=0.02,
    psd=0.12,
    psd_depth=3.0,
    vesicle=0.22,
    vesicles=(30, 60),
    cloud_offset=0.8,
    cloud_spread=0.45,
)

#: One synapse: cleft centre (voxels), the partners' ids, and the unit cleft normal pointing
#: towards the presynaptic side (in physical units: z scaled by the anisotropy).
SYNAPSE_DTYPE = np.dtype(
    [
        ("x", np.float64),
        ("y", np.float64),
        ("z", np.float64),
        ("pre", np.uint32),
        ("post", np.uint32),
        ("nx", np.float64),
        ("ny", np.float64),
        ("nz", np.float64),
    ]
)


def add_synapses(img, labels, clefts, p: SyntheticParams, rng) -> np.ndarray:
    """Darken clefts at some in-plane contacts, add vesicles on the presynaptic side; the
    synapses as a `SYNAPSE_DTYPE` table (cleft voxels into `clefts` unless it is None)."""
    a, sp = p.anisotropy, p.neurite_spacing
    n_syn = p.n_synapses
    if n_syn is None:
        n_syn = round(float(np.prod(labels.shape)) * a / (3 * sp) ** 3)
    o = membrane_growth(p.membrane_width) + 1  # offset from a membrane voxel to each side
    cands = []
    for ax in (0, 1):
        if labels.shape[ax] <= 2 * o:
            continue
        lab = np.moveaxis(labels, ax, 0)
        left, mid, right = lab[: -2 * o], lab[o:-o], lab[2 * o :]
        pos = np.argwhere((mid == 0) & (left > 0) & (right > 0) & (left != right))
        pos[:, 0] += o
        perm = [ax] + [i for i in range(3) if i != ax]
        xyz = np.empty_like(pos)
        xyz[:, perm] = pos
        cands.append(np.column_stack([xyz, np.full(len(pos), ax)]))
    cands = np.concatenate(cands) if cands else np.zeros((0, 4), dtype=np.int64)
    if n_syn <= 0 or len(cands) == 0:
        return np.zeros(0, SYNAPSE_DTYPE)
    cands = cands[rng.permutation(len(cands))[: 40 * n_syn]]
    scale = np.array([1.0, 1.0, a])
    min_sep = 2.5 * sp * 0.5
    centres: list[np.ndarray] = []
    rows = []
    for cand in cands:
        c = cand[:3] * scale
        if centres and np.min(np.linalg.norm(np.array(centres) - c, axis=1)) < min_sep:
            continue
        centres.append(c)
        cleft = None if clefts is None else (clefts, len(centres))
        pre, post, normal = _draw_synapse(img, labels, cleft, cand, o, c, p, rng)
        rows.append((*(c / scale), pre, post, *normal))
        if len(centres) >= n_syn:
            break
    return np.array(rows, dtype=SYNAPSE_DTYPE)


def _draw_synapse(
    img, labels, cleft, cand, o, c, p: SyntheticParams, rng
) -> tuple[int, int, np.ndarray]:
    """One cleft centred on membrane voxel `cand[:3]` between the labels `o` voxels either side;
    returns (pre id, post id, unit normal towards pre). `cleft`: (volume, value) to mark the
    cleft voxels in, or None."""
    a, look = p.anisotropy, (_BOLD if p.bold_synapses else _FAINT)
    e = np.zeros(3, dtype=np.int64)
    e[cand[3]] = o
    v = cand[:3]
    sides = [labels[tuple(v - e)], labels[tuple(v + e)]]
    k = int(rng.integers(2))
    pre, post = sides[k], sides[1 - k]
    rc = p.neurite_spacing / 14.0 * rng.uniform(3.0, 5.5)
    sl, grid = bbox(labels.shape, c, rc + 8.0, a)
    lab, sub = labels[sl], img[sl]
    d = grid - c
    near = np.sum(d * d, axis=-1) <= 36.0
    pre_pts = d[near & (lab == pre)]
    n = pre_pts.mean(axis=0) if len(pre_pts) else (-e if k == 0 else e).astype(np.float64)
    n /= np.linalg.norm(n) + 1e-9
    along = d @ n
    radial2 = np.sum(d * d, axis=-1) - along**2
    disk = radial2 <= rc * rc
    dark = disk & (lab == 0) & (np.abs(along) <= 2.0)
    sub[dark] = np.float32(look.cleft)
    if cleft is not None:
        cleft[0][sl][dark] = cleft[1]
    psd = disk & (lab == post) & (along < 0) & (along >= -look.psd_depth)
    sub[psd] = np.minimum(sub[psd], np.float32(look.psd))
    nv = int(rng.integers(*look.vesicles))
    spread = rng.standard_normal((nv, 3)) * (rc * look.cloud_spread)
    cloud = c + n * (rc * look.cloud_offset) + spread
    ves = np.zeros(lab.shape, dtype=np.uint8)
    origin = np.array([s.start for s in sl]) * np.array([1.0, 1.0, a])
    stamp(ves, cloud - origin, np.ones(nv), 1, a)
    hit = (ves > 0) & (lab == pre)
    sub[hit] = np.minimum(sub[hit], np.float32(look.vesicle))
    return int(pre), int(post), n
