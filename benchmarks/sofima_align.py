"""SOFIMA (Google's optical-flow + elastic-mesh aligner) as a serial-section alignment baseline,
run by `bench_align.py` beside petavox's `align` on the same stacks.

Follows SOFIMA's EM alignment notebook (notebooks/em_alignment.ipynb): cross-correlation flow
between each section and the one before it, `clean_flow` with the notebook's thresholds, an
elastic mesh relaxed section by section against the previous solved one (section 0 fixed), then
the inverted map renders every section. Single resolution: the notebook's extra 2x flow (merged
by `reconcile_flows`) is left out. Added by default: a whole-pixel coarse translation first (see
`align_sofima`). SOFIMA's flow is whole-pixel and, between differing sections, leans towards
zero shift, so chained section-to-section errors add up to a drift along z.

The PyPI wheel of sofima 0.1 is empty; `ensure_sofima` unpacks the sdist's modules instead.
Its dependencies must be installed first (see `INSTALL_HINT`).
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOFIMA_VERSION = "0.1"
# connectomics requires the (empty) sofima wheel, which requires opencv-python; --no-deps keeps
# a second copy of cv2 (opencv-python beside opencv-python-headless) out of the environment.
INSTALL_HINT = (
    f"{sys.executable} -m pip install jax absl-py dataclasses-json opt_einsum edt "
    f"opencv-python-headless && {sys.executable} -m pip install --no-deps connectomics"
)
_DEPENDENCIES = {"jax": "jax", "connectomics": "connectomics", "cv2": "opencv-python-headless"}
_DEPENDENCIES |= {"absl": "absl-py", "dataclasses_json": "dataclasses-json", "edt": "edt"}


def _unpack_sdist(cache: Path) -> None:
    """Download sofima's sdist into `cache` and copy its top-level modules to cache/sofima."""
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    pip += [f"sofima=={SOFIMA_VERSION}", "-d", str(cache)]
    done = subprocess.run(pip, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(pip)} failed:\n{done.stderr[-2000:]}")
    package = cache / "sofima"
    package.mkdir(exist_ok=True)
    with tarfile.open(cache / f"sofima-{SOFIMA_VERSION}.tar.gz") as sdist:
        for member in sdist.getmembers():
            parent, _, name = member.name.partition("/")
            if member.isfile() and "/" not in name and name.endswith((".py", "LICENSE")):
                source = sdist.extractfile(member)
                assert source is not None and parent == f"sofima-{SOFIMA_VERSION}"
                (package / name).write_bytes(source.read())


def ensure_sofima(cache: Path) -> None:
    """Make `from sofima import flow_field, ...` work, unpacking the sdist into `cache`."""
    missing = [pkg for mod, pkg in _DEPENDENCIES.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise RuntimeError(f"SOFIMA needs {', '.join(missing)}; install with: {INSTALL_HINT}")
    try:
        importlib.import_module("sofima.flow_field")
        return
    except ImportError:
        sys.modules.pop("sofima", None)
    cache = Path(cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    if not (cache / "sofima" / "flow_field.py").exists():
        _unpack_sdist(cache)
    if str(cache) not in sys.path:
        sys.path.insert(0, str(cache))
    importlib.invalidate_caches()
    importlib.import_module("sofima.flow_field")


@dataclass
class SofimaResult:
    """Aligned (x, y, z) stack and timings in seconds.

    `seconds` covers coarse + flow + mesh + render of the whole stack, after a JAX warm-up (flow
    and mesh on sections 0-1, compiled and run once) that `warmup_seconds` times apart;
    `stages` splits `seconds` into those four steps.
    """

    aligned: np.ndarray
    seconds: float
    warmup_seconds: float
    stages: dict[str, float]


def _flows(sections: np.ndarray, patch: int, stride: int, batch_size: int) -> np.ndarray:
    """Raw flow of each section to the one before: [4, z - 1, y, x], nodes `stride` px apart."""
    from sofima import flow_field

    calculator = flow_field.JAXMaskedXCorrWithStatsCalculator()
    flows = [
        calculator.flow_field(prev, curr, (patch, patch), (stride, stride), batch_size=batch_size)
        for prev, curr in itertools.pairwise(sections)
    ]
    flow = np.transpose(np.array(flows), [1, 0, 2, 3])  # [x, y, sharpness, peak ratio]
    pad = patch // 2 // stride  # node i then sits at pixel i * stride
    return np.pad(flow, [[0, 0], [0, 0], [pad, pad], [pad, pad]], constant_values=np.nan)


def _clean(flow: np.ndarray) -> np.ndarray:
    """The notebook's filter: uncertain vectors become NaN; [2, z, y, x]."""
    from sofima import flow_utils

    return flow_utils.clean_flow(
        flow, min_peak_ratio=1.6, min_peak_sharpness=1.6, max_magnitude=80, max_deviation=20
    )


def _relax(flow: np.ndarray, stride: int) -> np.ndarray:
    """Elastic mesh per section against the previous solved one: [2, z, y, x], section 0 = 0."""
    import jax.numpy as jnp
    from sofima import map_utils, mesh

    config = mesh.IntegrationConfig(
        dt=0.001,
        gamma=0.0,
        k0=0.01,
        k=0.1,
        stride=float(stride),
        num_iters=1000,
        max_iters=100000,
        stop_v_max=0.005,
        dt_max=1000,
        start_cap=0.01,
        final_cap=10,
        prefer_orig_order=True,
    )
    origin = jnp.array([0.0, 0.0])
    solved = [np.zeros_like(flow[:, :1])]
    for z in range(flow.shape[1]):
        prev = map_utils.compose_maps_fast(
            flow[:, z : z + 1], origin, stride, solved[-1], origin, stride
        )
        x, _, _ = mesh.relax_mesh(np.zeros_like(solved[0]), prev, config)
        solved.append(np.array(x))
    return np.concatenate(solved, axis=1)


def _render(
    sections: np.ndarray, solved: np.ndarray, stride: int, offsets: np.ndarray
) -> np.ndarray:
    """Warp every (y, x) section by its inverted map plus its coarse (x, y) offset; zero outside."""
    from connectomics.common import bounding_box
    from sofima import map_utils, warp

    map_box = bounding_box.BoundingBox(start=(0, 0, 0), size=(*solved.shape[:-3:-1], 1))
    inverse = map_utils.invert_map(solved, map_box, map_box, stride)
    # Nodes outside the solved mesh's hull come back NaN and would blank whole mesh cells:
    # extrapolate them; sources outside the image then read as 0 (OpenCV's constant border).
    inverse = map_utils.fill_missing(inverse, extrapolate=True)
    inverse += offsets.T[:, :, np.newaxis, np.newaxis]  # relative maps: a shift adds
    data_box = bounding_box.BoundingBox(start=(0, 0, 0), size=(*sections.shape[:0:-1], 1))
    out = np.zeros_like(sections)
    for z in range(len(sections)):
        image = sections[np.newaxis, z : z + 1]  # [channel, z, y, x]
        warped = warp.warp_subvolume(
            image, data_box, inverse[:, z : z + 1], map_box, stride, data_box, "lanczos"
        )
        out[z] = warped[0, 0]
    return out


def _coarse_offsets(sections: np.ndarray, patch: int, stride: int, batch: int) -> np.ndarray:
    """Integer (x, y) source offset of each section from chained median flows; section 0 at 0.

    A pair's median is over its cleaned vectors, or over all of them when fewer than 4 pass.
    """
    flow = _flows(sections, patch, stride, batch)
    cleaned = _clean(flow)
    steps = []
    for z in range(flow.shape[1]):
        vectors = cleaned[:, z].reshape(2, -1)
        if np.isfinite(vectors[0]).sum() < 4:
            vectors = flow[:2, z].reshape(2, -1)
        finite = np.isfinite(vectors).all(axis=0)
        steps.append(np.median(vectors[:, finite], axis=1) if finite.any() else np.zeros(2))
    return np.vstack([[0, 0], -np.cumsum(np.rint(steps), axis=0)]).astype(int)


def _translate(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """out[y, x] = image[y + dy, x + dx] for an integer (dx, dy), zero outside: no resampling."""
    margin = int(np.abs(offset).max())
    padded = np.pad(image, margin)
    (dx, dy), (h, w) = offset + margin, image.shape
    return padded[dy : dy + h, dx : dx + w]


def align_sofima(
    stack: np.ndarray, patch: int = 64, stride: int = 16, batch_size: int = 256, coarse: bool = True
) -> SofimaResult:
    """Align a uint8 (x, y, z) stack with SOFIMA; returns it in the same layout and dtype.

    `patch` and `stride` (pixels) size the flow patches and the mesh spacing; the notebook's
    160/40 suit 5000² sections at ~10 nm, 64/16 gives a 12×12 grid on 250² sections.
    `batch_size` only trades memory for speed. `coarse` first translates each section by whole
    pixels (chained median flows), as SOFIMA's flow expects roughly pre-aligned sections: its
    unnormalised cross-correlation underestimates shifts that are large for the patch; False
    runs the notebook recipe alone. Call `ensure_sofima` first.
    """
    sections = np.ascontiguousarray(stack.transpose(2, 1, 0))  # (z, y, x): SOFIMA's layout
    start = time.perf_counter()
    _relax(_clean(_flows(sections[:2], patch, stride, batch_size)), stride)  # JAX compiles
    warmup = time.perf_counter() - start
    marks = [time.perf_counter()]
    offsets = np.zeros((len(sections), 2), dtype=int)
    if coarse:  # integer pre-translation; composed into the rendering map, so no resampling
        offsets = _coarse_offsets(sections, patch, stride, batch_size)
    shifted = np.stack([_translate(s, o) for s, o in zip(sections, offsets)])
    marks.append(time.perf_counter())
    flow = _clean(_flows(shifted, patch, stride, batch_size))
    marks.append(time.perf_counter())
    solved = _relax(flow, stride)
    marks.append(time.perf_counter())
    aligned = _render(sections, solved, stride, offsets)
    marks.append(time.perf_counter())
    stages = dict(zip(("coarse", "flow", "mesh", "render"), np.diff(marks).tolist()))
    return SofimaResult(aligned.transpose(2, 1, 0), marks[-1] - marks[0], warmup, stages)
