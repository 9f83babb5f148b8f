"""Shared helpers of the benchmarks: timing, a synthetic EM-like test layer, Ray, results files.

Import this module before ray, cloudvolume or cloudfiles: it sets the environment they read at
import time (a loopback-only local Ray without auth or usage stats, and private cloud-files /
cloud-volume settings folders so no developer secrets or caches are picked up).
"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_CLIENT_DIR = tempfile.mkdtemp(prefix="petavox-bench-clients-")
atexit.register(shutil.rmtree, _CLIENT_DIR, ignore_errors=True)
os.environ.setdefault("CLOUD_FILES_DIR", _CLIENT_DIR)
os.environ.setdefault("CLOUD_VOLUME_DIR", _CLIENT_DIR)
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
SUMMARY = RESULTS_DIR / "summary.md"
README = BENCH_DIR / "README.md"
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
RESOLUTION = (8, 8, 40)


# ---- timing -------------------------------------------------------------------------------
@dataclass
class Timing:
    """Wall times (seconds) of repeated runs of one thing."""

    times: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_s": round(self.best, 4),
            "median_s": round(self.median, 4),
            "runs_s": [round(t, 4) for t in self.times],
        }

    def __str__(self) -> str:
        return f"best {self.best:.3f} s, median {self.median:.3f} s (n={len(self.times)})"


def time_runs(
    fn: Callable[[], Any],
    repeats: int,
    *,
    setup: Callable[[], Any] | None = None,
    teardown: Callable[[], Any] | None = None,
) -> Timing:
    """Time `fn` `repeats` times; `setup`/`teardown` run around each call, untimed."""
    timing = Timing()
    for _ in range(repeats):
        if setup is not None:
            setup()
        started = time.perf_counter()
        fn()
        timing.times.append(time.perf_counter() - started)
        if teardown is not None:
            teardown()
    return timing


Case = tuple[Callable[[], Any] | None, Callable[[], dict[str, float]]]


def interleave(cases: dict[str, Case], rounds: int, warmup: bool = True) -> dict[str, Timing]:
    """Run each case `rounds` times, round-robin with a rotating order, so that machine noise
    spreads over all cases alike.

    A case is ``(setup, fn)``: `setup` (untimed, may be None) prepares a fresh input, `fn` does
    the work and returns its own measured seconds by name (so it can time parts, or report a
    figure such as a stage's seconds). With `warmup`, one untimed round runs first.
    """
    names = list(cases)
    out: dict[str, Timing] = {}
    for r in range(-1 if warmup else 0, rounds):
        shift = max(r, 0) % len(names)
        for name in names[shift:] + names[:shift]:
            setup, fn = cases[name]
            if setup is not None:
                setup()
            settle()
            measured = fn()
            if r >= 0:
                for key, seconds in measured.items():
                    out.setdefault(key, Timing()).times.append(seconds)
    return out


def paired_ratio(num: Timing, den: Timing) -> float:
    """Median over rounds of num_i / den_i: robust to noise that comes and goes between rounds,
    as both cases of a round ran back to back (see `interleave`)."""
    return statistics.median(a / b for a, b in zip(num.times, den.times))


def settle() -> None:
    """Flush dirty pages of earlier writes so their write-back does not land in a timing."""
    if hasattr(os, "sync"):
        os.sync()


def mvx_per_s(voxels: int, seconds: float) -> float:
    """Throughput in mega-voxels per second."""
    return voxels / seconds / 1e6


# ---- test data ----------------------------------------------------------------------------
def _upsample_linear(a: np.ndarray, k: int, axis: int) -> np.ndarray:
    """Linear interpolation by an integer factor `k` along `axis` (output (n-1)*k long)."""
    n = a.shape[axis]
    w = (np.arange(k, dtype=np.float32) / k).reshape([1] * (axis + 1) + [k] + [1] * (2 - axis))
    a0 = np.expand_dims(np.take(a, range(n - 1), axis=axis), axis + 1)
    a1 = np.expand_dims(np.take(a, range(1, n), axis=axis), axis + 1)
    shape = list(a.shape)
    shape[axis] = (n - 1) * k
    return (a0 * (1 - w) + a1 * w).reshape(shape)


def em_like(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """An x,y,z uint8 volume that looks a little like EM: bright cells, dark thin membranes.

    A smooth random field (coarse noise, linearly upsampled 8× in x,y and 4× in z) is mapped
    through a lookup table that darkens its zero crossings, plus a little voxel noise. Gzip
    compresses it to about 80 % of its size, about as well as it does real EM.
    """
    from scipy import ndimage

    x, y, z = (int(s) for s in shape)
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((x // 8 + 2, y // 8 + 2, z // 4 + 2), dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, 1.0)
    coarse *= 1 / coarse.std()
    lut = (200 - 140 * np.exp(-((np.arange(-128, 128) / 16.0) ** 2))).astype(np.uint8)
    out = np.empty((x, y, z), dtype=np.uint8, order="F")
    step = 16  # z slices per piece: bounds the float32 temporaries
    for z0 in range(0, z, step):
        z1 = min(z, z0 + step)
        c0, c1 = z0 // 4, (z1 - 1) // 4 + 2
        f = _upsample_linear(coarse[:, :, c0 : c1 + 1], 4, 2)[:, :, z0 - 4 * c0 : z1 - 4 * c0]
        f = _upsample_linear(f, 8, 1)[:, :y]
        f = _upsample_linear(f, 8, 0)[:x]
        idx = np.clip(f * 48, -128, 127).astype(np.int16) + 128
        piece = lut[idx]
        piece += rng.integers(0, 8, size=piece.shape, dtype=np.uint8)
        out[:, :, z0:z1] = piece
    return out


def make_image_layer(
    url: str,
    shape: Sequence[int],
    chunk: Sequence[int] = (64, 64, 64),
    seed: int = 0,
    data: np.ndarray | None = None,
) -> np.ndarray:
    """Write an uncompressed raw uint8 image layer (mip 0 only) at a file:// `url`."""
    from petavox.tasks.core.geometry import Box, Vec3
    from petavox.tasks.core.layers import Layer, LayerSpec

    if data is None:
        data = em_like(shape, seed)
    spec = LayerSpec(
        layer_type="image",
        dtype="uint8",
        size=Vec3.of(data.shape),
        resolution=RESOLUTION,
        chunk_size=Vec3.of(chunk),
        encoding="raw",
    )
    layer = Layer.create(url, spec)  # petavox writes file:// chunks uncompressed
    zc = int(chunk[2])
    for z0 in range(0, data.shape[2], zc):
        z1 = min(data.shape[2], z0 + zc)
        box = Box((0, 0, z0), (data.shape[0], data.shape[1], z1))
        layer.write(box, np.asfortranarray(data[:, :, z0:z1]))
    return data


def copy_tree(src: Path, dst: Path) -> None:
    """A fresh copy of a layer folder (removes `dst` first)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)


def file_url(path: Path) -> str:
    return "file://" + str(path)


def read_mip(url: str, mip: int) -> np.ndarray:
    """A whole mip of a layer as an x,y,z array."""
    from cloudvolume import CloudVolume

    cv = CloudVolume(url, mip=mip, progress=False, fill_missing=False, cache=False)
    return np.asarray(cv[cv.bounds])[..., 0]


def compare_pyramids(url_a: str, url_b: str, mips: Iterable[int]) -> dict[str, Any]:
    """Per mip: equal, max |a-b|, fraction of voxels that differ."""
    out: dict[str, Any] = {}
    for mip in mips:
        a, b = read_mip(url_a, mip), read_mip(url_b, mip)
        if a.shape != b.shape:
            out[str(mip)] = {"shape_a": list(a.shape), "shape_b": list(b.shape)}
            continue
        diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
        out[str(mip)] = {
            "shape": list(a.shape),
            "equal": bool(not diff.any()),
            "max_abs_diff": int(diff.max()),
            "fraction_differing": round(float((diff > 0).mean()), 6),
        }
    return out


# ---- Ray ----------------------------------------------------------------------------------
NICENESS_ENV = "RAY_worker_niceness"  # read by the raylet that `ray.init` starts


def start_ray(workers: int, niceness: int | None = None):
    """A petavox `RaySession` on a fresh local Ray with `workers` CPUs; (session, seconds).

    Ray starts its workers at niceness 15 (`RAY_worker_niceness`), below every ordinary
    process: on a shared machine they lose the CPU to whatever else runs. `niceness` (e.g. 0)
    overrides that for this Ray, to measure the runner without the scheduling penalty.
    """
    from petavox.workflows.config import RayConfig
    from petavox.workflows.runner import RaySession

    saved = os.environ.get(NICENESS_ENV)
    if niceness is not None:
        os.environ[NICENESS_ENV] = str(niceness)
    session = RaySession(RayConfig(workers=workers))
    started = time.perf_counter()
    try:
        session.ensure()
    finally:
        if saved is None:
            os.environ.pop(NICENESS_ENV, None)
        else:
            os.environ[NICENESS_ENV] = saved
    return session, time.perf_counter() - started


def stop_ray(session=None) -> None:
    import ray

    if session is not None:
        session.shutdown()
    if ray.is_initialized():
        ray.shutdown()


# ---- profiling ----------------------------------------------------------------------------
# (label, file-path fragment, function name): cumulative time of that function. Labels with the
# same name add up (petavox and igneous reach the same cloud-volume calls by different roads).
PROFILE_POINTS: list[tuple[str, str, str]] = [
    ("read (cloud-volume download, decode)", "cloudvolume/frontends/precomputed.py", "download"),
    ("downsample (tinybrain)", "tinybrain/downsample.py", "downsample_with_averaging"),
    ("write (cloud-volume upload, total)", "datasource/precomputed/image/__init__.py", "upload"),
    ("  chunk encode + puts", "datasource/precomputed/image/tx.py", "threaded_upload_chunks"),
    ("    of which file puts", "cloudfiles/cloudfiles.py", "puts"),
    ("CloudVolume() construction", "cloudvolume/cloudvolume.py", "__new__"),
    ("np.pad (edge replication)", "numpy/lib/arraypad.py", "pad"),
    ("ledger segment writes", "workflows/ledger.py", "flush"),
]


def profile(
    fn: Callable[[], Any], top: int = 25, points: list[tuple[str, str, str]] | None = None
) -> dict[str, Any]:
    """cProfile `fn`: total, time per category (`points`, default `PROFILE_POINTS`), top
    functions by own time."""
    prof = cProfile.Profile()
    started = time.perf_counter()
    prof.enable()
    fn()
    prof.disable()
    wall = time.perf_counter() - started
    stats = pstats.Stats(prof)
    raw = stats.stats  # type: ignore[attr-defined]
    cats: dict[str, float] = {}
    for label, path_part, name in points or PROFILE_POINTS:
        total = 0.0
        for (filename, _line, func), (_cc, _nc, _tt, ct, _callers) in raw.items():
            if func == name and path_part in filename.replace(os.sep, "/"):
                total += ct
        cats[label] = round(total, 4)
    rows = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    hot = [
        {
            "function": f"{_short(filename)}:{line}({func})",
            "calls": nc,
            "tottime_s": round(tt, 4),
            "cumtime_s": round(ct, 4),
        }
        for (filename, line, func), (_cc, nc, tt, ct, _callers) in rows
    ]
    return {"wall_s": round(wall, 4), "categories_s": cats, "top_tottime": hot}


def _short(filename: str) -> str:
    """A source path without its machine-specific prefix (install folder or repository)."""
    name = filename.replace(os.sep, "/")
    m = re.search(r"/lib/python[\d.]+/(?:site-packages/)?(.*)$", name)
    if m:
        return m.group(1)
    for marker in ("/tasks/", "/workflows/", "/benchmarks/"):
        if marker in name:
            return marker.strip("/") + "/" + name.rsplit(marker, 1)[1]
    return name.rsplit("/", 1)[-1]


def print_profile(title: str, prof: dict[str, Any], top: int = 12) -> None:
    print(f"\n  profile: {title} (wall {prof['wall_s']:.2f} s under cProfile)")
    for label, seconds in prof["categories_s"].items():
        share = 100 * seconds / prof["wall_s"] if prof["wall_s"] else 0.0
        print(f"    {label:<40} {seconds:8.3f} s  {share:5.1f} %")
    print("    top functions by own time:")
    for row in prof["top_tottime"][:top]:
        print(f"      {row['tottime_s']:8.3f} s  {row['calls']:>7}  {row['function']}")


# ---- results ------------------------------------------------------------------------------
def row(
    benchmark: str,
    metric: str,
    value: float,
    unit: str,
    target: str = "",
    met: bool | None = None,
    note: str = "",
) -> dict[str, Any]:
    """One line of the summary table."""
    return {
        "benchmark": benchmark,
        "metric": metric,
        "value": round(float(value), 4),
        "unit": unit,
        "target": target,
        "met": met,
        "note": note,
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("petavox", "igneous-pipeline", "ray", "cloud-volume", "cloud-files", "tinybrain"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "-"
    return out


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "system": platform.system()}


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """`results/<name>.json` (with versions and machine), then refresh `results/summary.md`."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": name,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "machine": machine(),
        **payload,
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    refresh_summary()
    return path


def load_results() -> list[dict[str, Any]]:
    if not RESULTS_DIR.is_dir():
        return []
    out = []
    for path in sorted(RESULTS_DIR.glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"


def markdown_table(results: list[dict[str, Any]] | None = None) -> str:
    """All rows of all results files, one table."""
    results = load_results() if results is None else results
    lines = [
        "| benchmark | metric | value | unit | target | met | notes |",
        "|---|---|---:|---|---|---|---|",
    ]
    for res in results:
        size = " (quick)" if res.get("quick") else ""
        for r in res.get("rows", []):
            met = {True: "yes", False: "**no**", None: ""}[r.get("met")]
            lines.append(
                f"| {r['benchmark']}{size} | {r['metric']} | {_fmt(r['value'])} | {r['unit']} "
                f"| {r['target']} | {met} | {r['note']} |"
            )
    return "\n".join(lines)


def refresh_summary() -> str:
    results = load_results()
    header = ["# petavox benchmark results", ""]
    for res in results:
        v, m = res.get("versions", {}), res.get("machine", {})
        header.append(
            f"- {res['benchmark']}: {res.get('finished', '?')}, {res.get('workload', '')}; "
            f"{m.get('cpus', '?')} CPUs ({m.get('cpu', '?')}); petavox {v.get('petavox', '?')}, "
            f"igneous {v.get('igneous-pipeline', '?')}, ray {v.get('ray', '?')}"
        )
    text = "\n".join([*header, "", markdown_table(results), ""])
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    SUMMARY.write_text(text)
    return text


def update_readme_table() -> bool:
    """Replace the table between the results markers of README.md with the current one."""
    if not README.is_file():
        return False
    text = README.read_text()
    if README_BEGIN not in text or README_END not in text:
        return False
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    README.write_text(f"{head}{README_BEGIN}\n{markdown_table()}\n{README_END}{tail}")
    return True


def print_rows(rows: list[dict[str, Any]]) -> None:
    print()
    print(markdown_table([{"rows": rows}]))


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for one benchmark's layers (removed by the caller)."""
    return Path(tempfile.mkdtemp(prefix=f"petavox-bench-{prefix}-"))


def python() -> str:
    return sys.executable
