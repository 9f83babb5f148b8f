"""Alignment: accuracy on known misalignment of real EM (neuroproof, gala) and synthetic stacks,
petavox beside SOFIMA in the same run; throughput per core; how the solve grows with sections.

    .venv/bin/python benchmarks/bench_align.py [--quick] [--seeds N] [--synthetic-seeds N]
        [--sofima-sections N] [--no-sofima] [--cases neuroproof,gala-test,...]
        [--sections 100,1000,10000]

Accuracy (`align_cases.py`): each stack is misaligned by known per-section shifts (and warps),
then aligned by petavox `align` (defaults: the content's own smooth motion through z kept), by
petavox with `drift_window: null` (every motion undone, the old behaviour) and by SOFIMA
(`sofima_align.py`; on the first 60 sections only unless `--sofima-sections`: it takes
~1.3 s/section). Every result is scored by its image residual against the original
sections: RMS, worst section and first-to-last drift of the per-section phase-correlation
offsets, median removed; beside the ambiguity floor, the straight-line-in-z part of the known
shifts. Throughput: `align` through the Ray runner with 1 CPU on file:// layers. Solve scaling:
exact pairwise flows (plus noise) simulated from known transforms for N sections of 256×256
pixels (z−1 and z−2 links, 49 patches each), solved in one process; time and peak memory.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import align_cases
import common
import numpy as np
from align_cases import GALA, NEUROPROOF, Case

#: case → (metric, upper bound) targets of petavox (defaults), from the alignment issue
TARGETS: dict[str, list[tuple[str, float]]] = {
    "neuroproof": [("rms", 0.5), ("worst", 1.5), ("drift", 1.0)],
    "neuroproof-warped": [("rms", 1.0)],
    "gala-train": [("rms", 0.5)],
    "gala-test": [("rms", 0.5)],
    "synthetic": [("rms", 0.5)],
    "synthetic-warped": [("rms", 1.0)],
    "synthetic-rotated": [("rms", 1.0)],
}
#: SOFIMA's default section limit (full run): on all 120 neuroproof sections, 3 seeds of 3
#: cases would take ~20 minutes of the run alone (~1.3 s/section, mostly its mesh relaxation)
SOFIMA_SECTIONS = 60
WORDS = {"rms": "RMS", "worst": "worst section", "drift": "first-to-last drift"}


def build_cases(quick: bool, seeds: tuple[int, ...], synthetic_seeds: int) -> list[Case]:
    """The accuracy cases; a real stack whose data is absent is skipped with a message."""
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    cases = []
    neuroproof = align_cases.load_stack(NEUROPROOF, 40 if quick else 120)
    if neuroproof is not None:
        cases += [
            Case("neuroproof", "neuroproof_sample1, shifts ±15 px", neuroproof, 15, seeds=seeds),
            Case(
                "neuroproof-warped",
                "neuroproof_sample1, shifts ±15 + warps 3 px",
                neuroproof,
                15,
                warp=3,
                seeds=seeds,
            ),
            Case("neuroproof-aligned", "neuroproof_sample1, not misaligned", neuroproof, 0),
        ]
    for part in ("train", "test"):
        gala = align_cases.load_stack(GALA / f"{part}.npz")
        if gala is not None:
            cases.append(Case(f"gala-{part}", f"gala {part}, shifts ±8 px", gala, 8, seeds=seeds))
    size, depth = (128, 24) if quick else (256, 64)
    synthetic = generate(SyntheticParams(shape=(size, size, depth), seed=4)).raw
    seeds = seeds[:synthetic_seeds]
    rotated = {"rotation": 3.0, "align": {"tile": [size // 2, size // 2]}}
    cases += [
        Case("synthetic-aligned", "synthetic, not misaligned", synthetic, 0, transforms=True),
        Case("synthetic", "synthetic, shifts ±30 px", synthetic, 30, seeds=seeds, transforms=True),
        Case(
            "synthetic-warped",
            "synthetic, shifts ±30 + warps 5 px",
            synthetic,
            30,
            warp=5,
            seeds=seeds,
            transforms=True,
        ),
        Case(
            "synthetic-rotated",
            "synthetic, shifts ±30 + warps 5 px + rotations ±3°, xy tiles",
            synthetic,
            30,
            warp=5,
            seeds=seeds,
            transforms=True,
            **rotated,
        ),
    ]
    return cases


def solve_scaling(sections: int) -> dict[str, float]:
    from petavox.tasks.align.displacement import MeshGrid, grid_points
    from petavox.tasks.align.flow import PairFlow
    from petavox.tasks.align.solve import Pair, SolveParams, solve_sections

    rng = np.random.default_rng(0)
    mesh = MeshGrid.covering((-64, -64), (320, 320), 64)
    t_true = rng.uniform(-30, 30, (sections, 2))
    warp = rng.normal(0, 1.0, (sections, mesh.size, 2))
    grid = grid_points((16, 16), (240, 240), 32)
    pairs = []
    for z in range(1, sections):
        for back in (1, 2):
            if z >= back:
                p = grid - t_true[z - back]
                d = (
                    t_true[z]
                    + mesh.interpolate(warp[z], p)
                    - t_true[z - back]
                    - mesh.interpolate(warp[z - back], p)
                )
                d += rng.normal(0, 0.05, d.shape)
                pairs.append(
                    Pair(
                        moving=z,
                        reference=z - back,
                        flow=PairFlow(points=grid, displacement=d, confidence=np.full(len(d), 0.8)),
                    )
                )
    params = SolveParams()
    tracemalloc.start()
    started = time.perf_counter()
    solve_sections(pairs, sections, (0, 0), (256, 256), params)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"solve {sections} sections ({mesh.size} nodes each, {len(pairs)} pairs): "
        f"{seconds:.2f} s, peak {peak / 2**20:.0f} MiB"
    )
    return {"sections": sections, "seconds": seconds, "peak_mib": peak / 2**20}


def _seeds(case: dict[str, Any], method: str, key: str) -> str:
    if len(case["seeds"]) < 2:
        return ""
    values = "/".join(f"{s['methods'][method][key]:.2f}" for s in case["seeds"])
    return f"seeds {values}"


def case_rows(case: dict[str, Any]) -> list[dict[str, Any]]:
    """Summary rows of one accuracy case: petavox against its targets, and against SOFIMA."""
    title, mean = case["title"], case["mean"]
    petavox = mean["petavox"]
    rows = []
    for key, bound in TARGETS.get(case["name"], [("rms", 0.0)]):
        notes = [_seeds(case, "petavox", key)]
        if key == "rms":
            notes.append(f"worst {petavox['worst']:.2f}, drift {petavox['drift']:.2f}")
            notes.append(f"ambiguity floor {case['floor']:.2f}" if case["floor"] else "")
            notes.append(f"old (drift_window null) {mean['petavox-undrift']['rms']:.2f}")
        rows.append(
            common.row(
                "align",
                f"{title}: petavox {WORDS[key]}",
                petavox[key],
                "px",
                target=f"≤ {bound:g}" if bound else "",
                met=petavox[key] <= bound if bound else None,
                note="; ".join(n for n in notes if n),
            )
        )
    if "sofima" in mean:
        sofima = mean["sofima"]
        sections = case["seeds"][0]["methods"]["sofima"]["sections"]
        blank = f"; {sofima['blank']:g} blank sections left out" if sofima["blank"] else ""
        first, ours = "", petavox
        if sections < case["shape"][2]:  # compared with petavox on the same sections
            first, ours = f"first {sections} sections; ", mean[f"petavox [:{sections}]"]
        rows.append(
            common.row(
                "align",
                f"{title}: SOFIMA RMS (petavox at least as accurate)",
                sofima["rms"],
                "px",
                target=f"≥ petavox {ours['rms']:.2f}",
                met=ours["rms"] <= sofima["rms"],
                note=f"{first}worst {sofima['worst']:.2f}, drift {sofima['drift']:.2f}{blank}",
            )
        )
    return rows


def speed_rows(cases: dict[str, Any]) -> list[dict[str, Any]]:
    """Seconds per section of each method on neuroproof, and petavox MVx/s per core."""
    rows = []
    if "neuroproof" in cases:
        case = cases["neuroproof"]
        for method, row in case["mean"].items():
            if method not in align_cases.METHODS:  # the misaligned stack, subsets
                continue
            note = "align stage (estimate + solve + render), Ray 1 CPU"
            if method == "sofima":
                sections = case["seeds"][0]["methods"]["sofima"]["sections"]
                note = (
                    f"{sections} sections, in-process, all cores; warm-up "
                    f"{row['warmup_seconds']:.1f} s apart; "
                    f"CPU {row['cpu_seconds']:.0f} s with warm-up"
                )
            rows.append(
                common.row(
                    "align",
                    f"{case['title']}: {method} time",
                    row["s_per_section"],
                    "s/section",
                    note=note,
                )
            )
    if "synthetic-warped" in cases:
        case = cases["synthetic-warped"]
        rows.append(
            common.row(
                "align",
                "estimate + solve + render per core",
                common.mvx_per_s(int(np.prod(case["shape"])), case["mean"]["petavox"]["seconds"]),
                "MVx/s",
                note=f"{tuple(case['shape'])} synthetic, Ray 1 CPU",
            )
        )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, fewer sections")
    parser.add_argument("--seeds", type=int, help="misalignment seeds per case (default 3)")
    parser.add_argument(
        "--synthetic-seeds", type=int, default=1, help="of those, for the synthetic cases"
    )
    parser.add_argument(
        "--sofima-sections",
        type=int,
        help=f"SOFIMA on the first N sections only; 0: all (default {SOFIMA_SECTIONS}, --quick 0)",
    )
    parser.add_argument("--no-sofima", action="store_true", help="leave SOFIMA out")
    parser.add_argument("--cases", help="comma-separated subset of the accuracy cases")
    parser.add_argument("--sections", help="solve scaling: comma-separated section counts")
    return parser.parse_args(argv)


def methods(no_sofima: bool) -> list[str]:
    """The methods to run: SOFIMA only when it imports (else skipped with the reason)."""
    names = [m for m in align_cases.METHODS if m != "sofima"]
    if no_sofima:
        return names
    from sofima_align import ensure_sofima

    try:
        ensure_sofima(Path(tempfile.gettempdir()) / "petavox-sofima")
    except RuntimeError as error:
        print(f"skipped SOFIMA: {error}")
        return names
    return [*names, "sofima"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    seeds = tuple(range(args.seeds or (1 if args.quick else 3)))
    cases = build_cases(args.quick, seeds, args.synthetic_seeds)
    if args.cases:
        wanted = args.cases.split(",")
        cases = [c for c in cases if c.name in wanted]
    ctx: dict[str, Any] = {"methods": methods(args.no_sofima)}
    limit = args.sofima_sections if args.sofima_sections is not None else SOFIMA_SECTIONS
    ctx["sofima_sections"] = None if args.quick and args.sofima_sections is None else limit or None
    if ctx["sofima_sections"] and "sofima" in ctx["methods"]:
        print(f"SOFIMA runs on the first {ctx['sofima_sections']} sections of each stack only")
    default = "100,1000" if args.quick else "100,1000,10000"
    counts = [int(n) for n in (args.sections or default).split(",")]
    out: dict[str, Any] = {"quick": args.quick, "solve": [solve_scaling(n) for n in counts]}
    ctx["scratch"] = common.scratch_dir("align")
    started = time.perf_counter()
    try:
        ctx["session"], _ = common.start_ray(1)
        out["cases"] = {c.name: align_cases.run_case(c, ctx) for c in cases}
    finally:
        common.stop_ray(ctx.get("session"))
        shutil.rmtree(ctx["scratch"], ignore_errors=True)
    out["accuracy_seconds"] = time.perf_counter() - started
    print(f"\naccuracy cases: {out['accuracy_seconds']:.0f} s")
    sofima = ctx["sofima_sections"] and f" (SOFIMA: first {ctx['sofima_sections']} sections)"
    out["workload"] = (
        f"{len(cases)} alignment cases × {len(seeds)} seed(s) (synthetic {args.synthetic_seeds}),"
        f" methods {', '.join(ctx['methods'])}{sofima or ''}; solve scaling "
        f"{', '.join(map(str, counts))} sections"
    )
    rows = speed_rows(out["cases"])
    for case in out["cases"].values():
        rows += case_rows(case)
    for entry in out["solve"]:
        note = f"peak {entry['peak_mib']:.0f} MiB"
        rows.append(
            common.row(
                "align", f"solve {entry['sections']} sections", entry["seconds"], "s", note=note
            )
        )
    out["rows"] = rows
    common.write_results("align", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
