"""Cell classes in synthetic volumes (`SyntheticParams.cell_classes`): neurons with somata and
nuclei (some with processes along a preferred direction; class "neuron"), the neurites of
neurons whose somata lie elsewhere (class "neurite"), blood vessels (a lumen and a thick
wall, two objects), glia (thin sheets wrapping their neighbours, joined by a small body) and
myelin (dark lamellar rings around some neurites).

They are drawn as extra object cores (vessels, somata, glia before the ordinary neurites;
myelin after them), painted over the neuropil look before membranes, and followed through the
generator's relabelling to the final labels. Every draw comes from a random stream of its own,
so the output without cell classes does not change. Arrays are indexed [x, y, z]; lengths are
in xy voxels and positions physical (z scaled by the anisotropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from petavox.tasks.evaluate.synapse_scores import majority_objects
from petavox.tasks.synthetic.raster import STEP, bbox, random_unit, stamp, trace

if TYPE_CHECKING:
    from petavox.tasks.synthetic.generator import SyntheticParams

NEURON, GLIA, LUMEN, WALL, MYELIN = range(5)  # class codes of the core labels
CLASS_NAMES = ("neuron", "glia", "vessel", "vessel", "myelin")
_NUCLEUS, _ENVELOPE, _LAMELLA = 1, 2, 3  # marks; myelin lamellae alternate 3 and 4
_SOMA_CELL = 6.5  # one soma neuron per (_SOMA_CELL * neurite_spacing)^3 of volume
_GLIA_CELL = 3.5  # likewise for glia (as common as they are in cortex)
_VESSEL_CELL = 150.0  # one vessel per (_VESSEL_CELL xy voxels)^3


@dataclass(frozen=True)
class _Soma:
    centre: np.ndarray  # physical
    semi: np.ndarray  # semi-axes, physical
    rot: np.ndarray  # local ellipsoid axes -> physical: x = centre + rot @ local
    label: int


Tube = tuple[np.ndarray, np.ndarray, int]  # centreline (physical), radii, core label


class CellClasses:
    """The cell-class objects of one volume, from drawing to the final labels' classes."""

    def __init__(self, p: SyntheticParams, shape: tuple[int, ...]) -> None:
        self.p, self.shape, a = p, shape, p.anisotropy
        self.scale = np.array([1.0, 1.0, a])
        self.ext = np.array(shape, dtype=np.float64) * self.scale
        self.lo, self.hi = -0.5 * self.scale - 2, self.ext - 0.5 * self.scale + 2
        self.n_steps = int(np.linalg.norm(self.ext) * 1.3 / STEP) + 2
        self.axis = np.asarray(p.orientation, dtype=np.float64)
        self.axis = self.axis / np.linalg.norm(self.axis)
        self.rng = np.random.default_rng(np.random.SeedSequence([p.seed, 25]))
        self.kind: dict[int, int] = {}  # core label -> class code; absent: NEURON
        self.oriented: set[int] = set()  # core labels of the oriented neurons
        self.solid: set[int] = set()  # vessel and soma labels: neurites stop at them
        self.marks = np.zeros(shape, dtype=np.uint8)  # nuclei, envelopes, lamellae
        self.somata: list[_Soma] = []
        self.vessels: list[Tube] = []
        self.myelinated: list[int] = []  # core labels of the axons with myelin
        self.label = 0

    def _count(self, cell: float) -> int:
        return round(float(np.prod(self.ext)) / cell**3)

    def _new(self, kind: int) -> int:
        self.label += 1
        if kind != NEURON:
            self.kind[self.label] = kind
        return self.label

    def draw(self, core: np.ndarray) -> tuple[list[Tube], int]:
        """Vessels, somata neurons and glia into `core`; the somata's neurites, the last label."""
        self._draw_vessels(core)
        tubes = self._draw_neurons(core)
        n = self._count(_GLIA_CELL * self.p.neurite_spacing)
        for _ in range(
            max(n, 1) if self.somata or self.vessels else n
        ):  # one at least, to wrap them
            self._draw_glia(core, tubes)
        return tubes, self.label

    def _draw_vessels(self, core: np.ndarray) -> None:
        """Gently curving wide tubes right across the volume: a lumen inside a thick wall."""
        rng, sp, a = self.rng, self.p.neurite_spacing, self.p.anisotropy
        n = self._count(_VESSEL_CELL)
        n = max(n, 1) if self.ext.min() >= 64 else n
        for _ in range(n):
            outer = min(sp * rng.uniform(1.5, 2.5), 0.3 * self.ext.min())
            inner = outer * (1 - rng.uniform(0.4, 0.6))
            start, d = rng.uniform(0.2, 0.8, 3) * self.ext, random_unit(rng)
            lo, hi = self.lo - outer, self.hi + outer
            fwd = trace(rng, start, d, self.n_steps, lo, hi, wobble=0.15)
            bwd = trace(rng, start, -d, self.n_steps, lo, hi, wobble=0.15)
            pts = np.concatenate([bwd[::-1], start[None], fwd])[:: max(1, int(outer / 8))]
            lumen, wall = self._new(LUMEN), self._new(WALL)
            for label, r in ((lumen, inner), (wall, outer)):
                for i in range(0, len(pts), 8):  # in pieces: a wide ball has many voxels
                    stamp(core, pts[i : i + 8], np.full(len(pts[i : i + 8]), r), label, a)
            self.solid |= {lumen, wall}
            self.vessels.append((pts, np.full(len(pts), outer), wall))

    def _ellipsoid(self, centre, semi, rot) -> tuple[tuple[slice, ...] | None, np.ndarray]:
        """The box around an ellipsoid and each of its voxels' squared normalised radius."""
        sl, grid = bbox(self.shape, centre, float(np.max(semi)), self.p.anisotropy)
        if sl is None:
            return None, np.zeros(0)
        q = ((grid - centre) @ rot) / semi
        return sl, np.sum(q * q, axis=-1)

    def _draw_neurons(self, core: np.ndarray) -> list[Tube]:
        """Somata with nuclei and their neurites: first the oriented neurons, each where its
        processes run far, then the others (clear of those)."""
        sp, f = self.p.neurite_spacing, self.p.oriented_fraction
        n = self._count(_SOMA_CELL * sp)
        n = max(n, 1) if self.ext.min() >= 3 * sp else n
        n_oriented = max(1, round(f * n)) if f > 0 and n else 0
        tubes: list[Tube] = []
        for _ in range(n_oriented):
            soma = self._draw_soma(core, self.axis)
            if soma is not None:
                self.oriented.add(soma.label)
                tubes += self._draw_soma_neurites(core, soma, oriented=True)
        others = [self._draw_soma(core) for _ in range(n - n_oriented)]
        for soma in others:
            if soma is not None:
                tubes += self._draw_soma_neurites(core, soma, oriented=False)
        return tubes

    def _draw_soma(self, core: np.ndarray, along: np.ndarray | None = None) -> _Soma | None:
        """A round cell body clear of what is drawn, with a nucleus and its envelope (marks).
        With `along`: of the places tried (in the middle half first), the one reaching farthest."""
        rng, sp = self.rng, self.p.neurite_spacing
        r = min(sp * rng.uniform(1.2, 2.0), 0.3 * self.ext.min())
        semi = r * rng.uniform(0.85, 1.15, 3)
        rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        fits: list[np.ndarray] = []
        for lo, hi in [(0.0, 1.0)] if along is None else [(0.25, 0.75), (0.0, 1.0)]:
            for _ in range(20):
                centre = rng.uniform(lo, hi, 3) * self.ext
                sl, q = self._ellipsoid(centre, semi * 1.3, rot)  # keep room for glia between
                if sl is not None and not np.any(core[sl][q <= 1]):
                    fits.append(centre)
                    if along is None:
                        break
            if fits:
                break
        else:
            return None
        centre = fits[0] if along is None else max(fits, key=lambda c: self._reach(core, c, along))
        label = self._new(NEURON)
        sl, q = self._ellipsoid(centre, semi, rot)
        core[sl][q <= 1] = label
        centre_n = centre + rng.normal(0, 0.08, 3) * r
        semi_n = semi * rng.uniform(0.4, 0.52)
        sl, q = self._ellipsoid(centre_n, semi_n, rot)
        if sl is not None:
            own, marks = (core[sl] == label) & (q <= 1), self.marks[sl]
            marks[own] = _NUCLEUS
            marks[own & (q > (1 - 1.3 / semi_n.min()) ** 2)] = _ENVELOPE
        self.solid.add(label)
        self.somata.append(_Soma(centre, semi, rot, label))
        return self.somata[-1]

    def _reach(self, core: np.ndarray, centre: np.ndarray, along: np.ndarray) -> float:
        """How far a line through `centre` runs either way along `along` inside the volume
        before meeting a vessel or soma (summed)."""
        t = np.arange(0.0, self.n_steps, 2.0)
        total = 0.0
        for sign in (1, -1):
            vox = np.rint((centre + sign * t[:, None] * along) / self.scale).astype(np.int64)
            stop = ~np.all((vox >= 0) & (vox < self.shape), axis=1)
            stop[~stop] = np.isin(core[tuple(vox[~stop].T)], sorted(self.solid))
            first = np.flatnonzero(stop)
            total += t[first[0]] if first.size else t[-1]
        return total

    def _draw_soma_neurites(self, core: np.ndarray, soma: _Soma, oriented: bool) -> list[Tube]:
        """2-4 tapering neurites from a soma; 3-4 along +-`orientation` when `oriented`."""
        rng, sp, a = self.rng, self.p.neurite_spacing, self.p.anisotropy
        tubes = []
        for j in range(int(rng.integers(3 if oriented else 2, 5))):
            if oriented:
                d = self.axis * (1 if j % 2 == 0 else -1) + 0.12 * random_unit(rng)
                d /= np.linalg.norm(d)
            else:
                d = random_unit(rng)
            start = soma.centre + d * 0.7 * soma.semi.min()
            pts = trace(rng, start, d, self.n_steps, self.lo, self.hi, 0.1 if oriented else 0.45)
            pts = self._until_blocked(core, pts, soma.label)
            if len(pts) < 2:
                continue
            r_end = sp * 0.15 * np.exp(0.3 * rng.standard_normal())
            rad = r_end + (0.35 * sp - r_end) * np.exp(-np.arange(len(pts)) * STEP / sp)
            rad = np.clip(rad, 1.0, 0.45 * sp)
            stamp(core, pts, rad, soma.label, a)
            tubes.append((pts, rad, soma.label))
        return tubes

    def _until_blocked(self, core: np.ndarray, pts: np.ndarray, label: int) -> np.ndarray:
        """`pts` up to where it first enters a vessel or another soma."""
        vox = np.rint(pts / self.scale).astype(np.int64)
        ok = np.all((vox >= 0) & (vox < self.shape), axis=1)
        hit = np.zeros(len(pts), dtype=bool)
        hit[ok] = np.isin(core[tuple(vox[ok].T)], sorted(self.solid - {label}))
        first = np.flatnonzero(hit)
        return pts[: first[0]] if first.size else pts

    def _draw_glia(self, core: np.ndarray, tubes: list[Tube]) -> None:
        """Thin sheets over a soma, vessel or neurite (and whatever lies near), a small body
        next to the first sheet and thin processes from it to the others."""
        rng, sp, a = self.rng, self.p.neurite_spacing, self.p.anisotropy
        label = self._new(GLIA)
        anchor, normal = self._glia_anchor(tubes)
        self._draw_sheet(core, anchor, label)
        semi = sp * rng.uniform(0.3, 0.45, 3)
        body = anchor + normal * (1.0 + 0.6 * semi.min())  # touching the sheet
        rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        sl, q = self._ellipsoid(body, semi, rot)
        if sl is not None:
            sub = core[sl]
            sub[(q <= 1) & (sub == 0)] = label
        for _ in range(int(rng.integers(1, 4))):
            at = self._draw_sheet(core, body + random_unit(rng) * sp * rng.uniform(0.8, 1.6), label)
            if at is not None:
                n = int(np.ceil(np.linalg.norm(at - body) / STEP)) + 1
                stamp(core, np.linspace(body, at, n), np.full(n, 1.5), label, a)

    def _glia_anchor(self, tubes: list[Tube]) -> tuple[np.ndarray, np.ndarray]:
        """A point just outside a soma, vessel or soma neurite, and the outward direction."""
        rng = self.rng
        for _ in range(20):
            if self.somata and rng.random() < 0.5:
                s = self.somata[rng.integers(len(self.somata))]
                on = s.centre + s.rot @ (s.semi * random_unit(rng))
                normal = (on - s.centre) / np.linalg.norm(on - s.centre)
            elif self.vessels or tubes:
                pts, rad, _ = (self.vessels + tubes)[rng.integers(len(self.vessels) + len(tubes))]
                i = int(rng.integers(len(pts)))
                along = pts[min(i + 1, len(pts) - 1)] - pts[max(i - 1, 0)]
                along /= np.linalg.norm(along) + 1e-9
                normal = random_unit(rng)
                normal -= along * (normal @ along)
                normal /= np.linalg.norm(normal) + 1e-9
                on = pts[i] + normal * rad[i]
            else:
                break
            anchor = on + 1.5 * normal
            if np.all((anchor >= 0) & (anchor <= self.ext)):
                return anchor, normal
        return rng.uniform(0, 1, 3) * self.ext, random_unit(rng)

    def _draw_sheet(self, core: np.ndarray, centre: np.ndarray, label: int) -> np.ndarray | None:
        """A 2-3 voxel layer on the drawn objects within a random ellipsoid around `centre`;
        returns the centre of the voxels drawn (None: nothing near to wrap)."""
        rng, sp, a = self.rng, self.p.neurite_spacing, self.p.anisotropy
        semi = sp * rng.uniform(0.6, 1.3, 3)
        rot, _ = np.linalg.qr(rng.standard_normal((3, 3)))
        band = max(rng.uniform(2.0, 3.0), a)
        pad = band + 1.0
        sl, grid = bbox(self.shape, centre, float(semi.max()) + pad, a)
        if sl is None:
            return None
        sub = core[sl]
        if not np.any(sub) or np.all(sub):
            return None
        dist = ndimage.distance_transform_edt(sub == 0, sampling=(1.0, 1.0, a))
        q = ((grid - centre) @ rot) / semi
        m = (np.sum(q * q, axis=-1) <= 1) & (sub == 0) & (dist <= band)
        if not m.any():
            return None
        sub[m] = label
        return grid[m].mean(axis=0)

    def myelinate(self, core: np.ndarray, tubes: list[Tube], label: int) -> None:
        """Wrap 15-25 % of the ordinary neurites (labels after ours, thick ones preferred) in a
        ring of myelin, 0.5-1 radius thick (2 voxels at least), labels from `label` + 1 on."""
        rng, a = self.rng, self.p.anisotropy
        ordinary = sorted({lab for _, _, lab in tubes if lab > self.label})
        if not ordinary:
            return
        radii: dict[int, list[float]] = {}
        for _, rad, lab in tubes:
            if len(rad):  # a branch traced from outside the volume has no points
                radii.setdefault(lab, []).append(float(rad.mean()))
        ordinary = [o for o in ordinary if o in radii]
        if not ordinary:
            return
        mean_r = np.array([np.mean(radii[o]) for o in ordinary])
        n = max(1, round(rng.uniform(0.15, 0.25) * len(ordinary)))
        chosen = rng.choice(ordinary, n, replace=False, p=mean_r**2 / np.sum(mean_r**2))
        self.myelinated = sorted(int(c) for c in chosen)
        for axon in self.myelinated:
            label += 1
            self.kind[label] = MYELIN
            f = rng.uniform(0.5, 1.0)
            for pts, rad, _ in (t for t in tubes if t[2] == axon and len(t[1])):
                thick = np.maximum(f * rad, 2.0)
                stamp(core, pts, rad + thick, label, a)
                for k in range(1, int(np.ceil(thick.max())) + 1):  # ring by ring: lamellae
                    r_k = (rad + np.minimum(k, thick))[::2]
                    stamp(self.marks, pts[::2], r_k, _LAMELLA + k % 2, a)

    def trim(self, cores: np.ndarray, core: np.ndarray) -> None:
        """Give the Voronoi share of myelin and vessel walls farther than a voxel from their
        rings to the nearest object outside (not a myelinated axon or a lumen): the rings stay
        round and as thick as drawn, not the territory of what they wrap."""
        n = int(core.max())
        codes = self._codes(n)
        ring = (codes == MYELIN) | (codes == WALL)
        wide = ring[cores] & ~ndimage.binary_dilation(ring[core])
        inner = ring | (codes == LUMEN)
        inner[[axon for axon in self.myelinated if axon <= n]] = True
        free = inner[core]
        free |= core == 0
        if not wide.any() or free.all():
            return
        idx = ndimage.distance_transform_edt(
            free,
            sampling=(1.0, 1.0, self.p.anisotropy),
            return_distances=False,
            return_indices=True,
        )
        cores[wide] = core[tuple(i[wide] for i in idx)]

    def _codes(self, n: int) -> np.ndarray:
        """Class code of each core label 0..n."""
        codes = np.full(n + 1, NEURON, dtype=np.uint8)
        for label, kind in self.kind.items():
            if label <= n:
                codes[label] = kind
        return codes

    def paint(self, img: np.ndarray, texture: np.ndarray, cores: np.ndarray) -> np.ndarray:
        """Draw the classes' looks into `img` (float32, before membranes; `texture` is the
        neuropil's low-frequency texture, `cores` the Voronoi core labels); returns where
        mitochondria may go: neuron cytoplasm outside nuclei."""
        rng = self.rng
        kind = self._codes(int(cores.max()))[cores]
        grain = ndimage.gaussian_filter(rng.standard_normal(img.shape, dtype=np.float32), 0.7)
        grain /= max(float(grain.std()), 1e-6)
        tone = rng.uniform(0.86, 0.92, int(cores.max()) + 1).astype(np.float32)
        m = kind == GLIA  # pale (electron-lucent, lighter than any neuron), little texture
        img[m] = tone[cores[m]] + 0.25 * texture[m] + 0.01 * grain[m]
        m = kind == LUMEN  # bright and flat
        img[m] = 0.9 + 0.05 * texture[m]
        m = kind == WALL  # medium grey, grainy
        img[m] = 0.5 + 0.6 * texture[m] + 0.06 * grain[m]
        m = kind == MYELIN  # very dark, lamellar
        stripes = np.where(self.marks[m] == _LAMELLA, -0.04, 0.04).astype(np.float32)
        img[m] = 0.2 + stripes + 0.2 * texture[m] + 0.02 * grain[m]
        m = self.marks == _NUCLEUS  # darker, granular
        img[m] = 0.85 * img[m] + 0.06 * grain[m]
        m = self.marks == _ENVELOPE
        img[m] = 0.32 + 0.03 * grain[m]
        nucleus = (self.marks == _NUCLEUS) | (self.marks == _ENVELOPE)
        return (kind == NEURON) & ~nucleus

    def final(self, labels: np.ndarray, cores: np.ndarray) -> tuple[dict[int, str], frozenset[int]]:
        """Each final label's class and the oriented neurons' final labels, from the core label
        covering most of its voxels: "neuron" if that is a soma's (the soma and the neurites
        drawn from it), "neurite" if it is any other neuronal one."""
        covering = majority_objects(labels, cores)  # ties: the smaller core label
        covering.pop(0, None)  # membrane
        ids = np.array(sorted(covering), np.int64)
        best = np.array([covering[i] for i in ids.tolist()], np.int64)
        codes = self._codes(int(cores.max()))[best]
        somata = {s.label for s in self.somata}
        classes = {
            int(i): "neurite" if c == NEURON and int(b) not in somata else CLASS_NAMES[c]
            for i, c, b in zip(ids, codes, best)
        }
        oriented = frozenset(int(i) for i, c in zip(ids, best) if int(c) in self.oriented)
        return classes, oriented
