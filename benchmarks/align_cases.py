"""Alignment accuracy cases for bench_align.py: known misalignment of real (and synthetic) EM,
aligned by petavox (content motion kept, and undone as before) and by SOFIMA, all scored alike.

Score (the image residual): per section, the phase-correlation offset of the central 130×130
pixels (at most the section minus 16 px margins) of the aligned section against the ORIGINAL
section, less the median offset over the stack; RMS and worst of the offsets' norms, and the
first-to-last drift |slope|·(n−1) of a straight line fitted to them along z.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import common
import numpy as np

from petavox.tasks.evaluate.alignment_scores import score_offsets, section_offsets
from petavox.tasks.synthetic.misalignment import straight_line_part

if TYPE_CHECKING:
    from petavox.tasks.synthetic.misalignment import Misalignment
    from petavox.workflows.runner import RaySession

DATA = common.BENCH_DIR.parent.parent / "shared" / "data"
NEUROPROOF = DATA / "neuroproof_sample1" / "raw.npz"
GALA = DATA / "gala"
#: method name → the `align` stage settings it runs with (None: SOFIMA)
METHODS: dict[str, dict[str, Any] | None] = {
    "petavox": {},  # defaults: drift_window auto, the content's own motion kept
    "petavox-undrift": {"drift_window": None},  # the old behaviour: every motion undone
    "sofima": None,
}
METRICS = ("rms", "worst", "drift", "s_per_section")
AVERAGED = (*METRICS, "blank", "seconds", "transform_rms", "warmup_seconds", "cpu_seconds")


@dataclass(frozen=True)
class Case:
    """A stack (x, y, z uint8, the truth), the misalignment it gets, the seeds it runs with."""

    name: str
    title: str
    original: np.ndarray
    max_shift: float
    warp: float = 0.0
    rotation: float = 0.0
    seeds: tuple[int, ...] = (0,)
    align: dict[str, Any] = field(default_factory=dict)  # extra `align` settings (all petavox)
    transforms: bool = False  # also score petavox's transforms against the known ones


def load_stack(path: Path, sections: int | None = None) -> np.ndarray | None:
    """The "raw" array (z, y, x) of an .npz as x, y, z, its first `sections`; None if absent."""
    if not path.is_file():
        print(f"skipped: {path.name} not found under {path.parent.name}/ (shared data folder)")
        return None
    with np.load(path) as data:
        raw = data["raw"][:sections]
    return np.ascontiguousarray(raw.transpose(2, 1, 0))


def score(offsets: np.ndarray) -> dict[str, float]:
    """RMS, worst and first-to-last drift (pixels) of per-section offsets, median removed;
    blank sections (NaN offsets) are counted and left out."""
    result = score_offsets(offsets)
    return {"rms": result.rms, "worst": result.worst, "drift": result.drift, "blank": result.blank}


def run_petavox(
    raw: np.ndarray, root: Path, session: RaySession, **align: Any
) -> tuple[np.ndarray, dict]:
    """`ingest` + `align` (mips 0) through the pipeline on file:// layers under `root`: the
    aligned x, y, z stack and {the align stage's seconds, its drift window, work folder URL}."""
    from petavox.tasks.core.layers import Layer
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    root.mkdir(parents=True)
    np.save(root / "raw.npy", raw.transpose(2, 1, 0))
    stages = [
        {
            "stage": "ingest",
            "input": str(root / "raw.npy"),
            "output": "raw",
            "resolution": [8, 8, 8],
            "storage_chunk": [64, 64, 16],
        },
        {"stage": "align", "mips": 0, **align},
    ]
    config = parse_config({"output": f"file://{root}", "stages": stages})
    reports = run(config, session=session, progress=False)
    seconds = sum(r.seconds for r in reports if r.label.startswith("align"))
    (work,) = (root / "intermediate" / "align").iterdir()
    report = json.loads((root / "aligned" / "alignment" / "report.json").read_text())
    window = report["summary"]["drift_window"]
    layer = Layer.open(f"file://{root}/aligned")
    info = {"seconds": seconds, "window": window, "work": f"file://{work}"}
    return layer.read(layer.bounds(0)), info


def transform_residual(work_url: str, known: Misalignment, shape: tuple[int, ...]) -> float:
    """RMS of the plain residual (`misalignment.residuals`) of petavox's solved transforms."""
    from petavox.tasks.align.displacement import grid_points
    from petavox.tasks.align.render import SectionTransforms
    from petavox.tasks.core.objects import get_arrays
    from petavox.tasks.synthetic.misalignment import residuals

    found = SectionTransforms.from_arrays(get_arrays(work_url, "transforms.npz"))
    margin = min(40, shape[1] // 4)
    points = grid_points((margin, margin), (shape[0] - margin, shape[1] - margin), 8)
    return float(np.sqrt((residuals(found, known, points) ** 2).mean()))


def run_sofima(raw: np.ndarray, sections: int | None) -> tuple[np.ndarray, dict[str, float]]:
    """SOFIMA on the first `sections` of `raw` (all if None): (aligned, timings)."""
    from sofima_align import align_sofima

    cpu = time.process_time()
    result = align_sofima(np.ascontiguousarray(raw[..., :sections]))
    cpu = time.process_time() - cpu  # all threads of this process, warm-up included
    n = result.aligned.shape[2]
    timings = {"seconds": result.seconds, "warmup_seconds": result.warmup_seconds}
    timings |= {"cpu_seconds": cpu, "sections": n, **result.stages}
    return result.aligned, timings


def _petavox(
    case: Case, raw: np.ndarray, method: str, known: Misalignment, ctx: dict[str, Any]
) -> dict:
    """One petavox run of a seed, scored; its per-section offsets under "offsets"."""
    root = ctx["scratch"] / f"{case.name}-{ctx['seed']}-{method}"
    aligned, info = run_petavox(raw, root, ctx["session"], **case.align, **METHODS[method] or {})
    offsets = section_offsets(aligned, case.original)
    row = score(offsets) | {"seconds": info["seconds"], "offsets": offsets}
    row |= {"s_per_section": info["seconds"] / raw.shape[2], "window": info["window"]}
    if case.transforms:
        row["transform_rms"] = transform_residual(info["work"], known, raw.shape)
    return row


def run_seed(case: Case, seed: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """Misalign `case` with `seed`, align it with every method in ctx["methods"], score all.

    When SOFIMA ran on the first n sections only, each petavox result is also scored on those
    ("petavox [:n]"): the like-for-like comparison."""
    from petavox.tasks.synthetic.misalignment import apply, random_misalignment

    original = case.original
    nx, ny, nz = original.shape
    known = random_misalignment(
        nz, case.max_shift, case.warp, rotation=case.rotation, centre=(nx / 2, ny / 2), seed=seed
    )
    raw = apply(original, known) if case.max_shift or case.warp else original
    rows: dict[str, dict[str, Any]] = {"misaligned": score(section_offsets(raw, original))}
    for method in ctx["methods"]:
        if METHODS[method] is not None:
            rows[method] = _petavox(case, raw, method, known, ctx | {"seed": seed})
            continue
        aligned, timing = run_sofima(raw, ctx["sofima_sections"])
        n = timing["sections"]
        rows[method] = score(section_offsets(aligned, original[..., :n])) | timing
        rows[method]["s_per_section"] = timing["seconds"] / n
        if n < nz:
            for name in [m for m in rows if m.startswith("petavox")]:
                rows[f"{name} [:{n}]"] = score(rows[name]["offsets"][:n])
    for row in rows.values():
        row.pop("offsets", None)
    return {"seed": seed, "floor": straight_line_part(known), "methods": rows}


def run_case(case: Case, ctx: dict[str, Any]) -> dict[str, Any]:
    """Every seed of `case`, the mean over seeds, and its table printed."""
    started = time.perf_counter()
    seeds = [run_seed(case, seed, ctx) for seed in case.seeds]
    names = list(seeds[0]["methods"])
    mean = {
        name: {
            key: float(np.mean([s["methods"][name][key] for s in seeds]))
            for key in seeds[0]["methods"][name]
            if key in AVERAGED
        }
        for name in names
    }
    result = {
        "name": case.name,
        "title": case.title,
        "shape": list(case.original.shape),
        "max_shift": case.max_shift,
        "warp": case.warp,
        "rotation": case.rotation,
        "floor": float(np.mean([s["floor"] for s in seeds])),
        "mean": mean,
        "seeds": seeds,
        "wall_seconds": time.perf_counter() - started,
    }
    print_case(result)
    return result


def _line(label: str, row: dict[str, Any]) -> str:
    text = f"  {label:<30}{row['rms']:8.2f}{row['worst']:8.2f}{row['drift']:8.2f}"
    if "s_per_section" in row:
        text += f"{row['s_per_section']:11.3f}"
    if "transform_rms" in row:
        text += f"{row['transform_rms']:11.2f}"
    if row.get("blank"):
        text += f"   {row['blank']:g} blank section(s) left out"
    if "window" in row:
        text += "   window " + ("off" if row["window"] is None else f"{row['window']:.3g}")
    return text


def print_case(result: dict[str, Any]) -> None:
    """One case's table: per method the mean over seeds, then each seed."""
    seeds = result["seeds"]
    floors = ", ".join(f"{s['floor']:.2f}" for s in seeds)
    shape = "×".join(map(str, result["shape"]))
    print(
        f"\n== {result['title']} ({shape}, {len(seeds)} seed(s), {result['wall_seconds']:.0f} s):"
        f" ambiguity floor {result['floor']:.2f} px RMS (per seed {floors})"
    )
    print(f"  {'method (px)':<30}{'RMS':>8}{'worst':>8}{'drift':>8}{'s/section':>11}", end="")
    print(f"{'transf. RMS':>11}" if "transform_rms" in result["mean"]["petavox"] else "")
    for name, row in result["mean"].items():
        if len(seeds) == 1:
            row = seeds[0]["methods"][name]  # the same numbers, and its drift window
        print(_line(name + (" (mean)" if len(seeds) > 1 else ""), row))
        if len(seeds) > 1:
            for s in seeds:
                print(_line(f"  seed {s['seed']}", s["methods"][name]))
    sofima = seeds[0]["methods"].get("sofima")
    if sofima:
        stages = ", ".join(f"{k} {sofima[k]:.1f}" for k in ("coarse", "flow", "mesh", "render"))
        print(
            f"  sofima (seed {seeds[0]['seed']}): {sofima['sections']} sections; {stages} s; "
            f"warm-up {sofima['warmup_seconds']:.1f} s; CPU {sofima['cpu_seconds']:.1f} s "
            f"(all threads, warm-up included) for {sofima['seconds']:.1f} s wall"
        )
