"""Montage accuracy and speed on tiles cut from real FIB-SEM sections, beside SOFIMA.

Each case cuts one section of ../shared/data/neuroproof_sample1 (250×250 px) into 3×3 tiles
(`tasks/synthetic/tiles.py`: 15, 20 or 25 % overlap, stage errors up to ±20 px, rotations up to
±1°, scales up to ±0.5 %, a 1.5 px radial lens distortion, vignetting and a scan gradient,
noise), then montages them in this process, one core, timing each phase: match, solve, shading
(flat-field), render (the whole section). Figures per case:

- placement residual: where the montage puts each tile pixel against where it truly is, RMS,
  only the mean offset removed (the acceptance bar: ≤ 0.5 px);
- image residual: the montaged section against the original, patch by patch (32 px patches
  every 16 px, `align`'s matcher, confident patches only), RMS after removing the mean offset:
  a measure that needs no transforms, so it scores SOFIMA's montage the same way;
- seams: each pair's brightness step over its overlap against the pixel noise there;
- throughput: tile pixels per second per core over the four phases.

`--large 2048` adds 3×3 tiles of a microscope's size (2048 px, 10 % overlap, the same damage)
cut from a section built of distinct real sections (`mosaic_section`): placement and
throughput, the section rendered in 1024 px boxes as the render step's chunks are.

SOFIMA (`sofima_montage.py`, run in its own Python with jax: `--sofima PYTHON`) montages the
same tiles; its wall time includes starting jax and compiling.

    .venv/bin/python benchmarks/bench_montage.py [--sections 20,60,...] [--sofima PYTHON] [--quick]
        [--large 2048]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

from petavox.tasks.align.flow import FlowParams, estimate_pair
from petavox.tasks.montage.flatfield import estimate_shading, seam_steps
from petavox.tasks.montage.tile_matches import MatchParams
from petavox.tasks.montage.tile_render import CubicSampler, render_box
from petavox.tasks.montage.tile_solve import TileSolveParams, montage_tiles
from petavox.tasks.synthetic.tiles import (
    TileDamage,
    cut_tiles,
    mosaic_section,
    placement_residuals,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "neuroproof_sample1" / "raw.npz"
OVERLAPS = (0.15, 0.2, 0.25)
SOFIMA_SCRIPT = Path(__file__).resolve().parent / "sofima_montage.py"


def rms(values: np.ndarray) -> float:
    return float(np.sqrt((np.asarray(values) ** 2).mean())) if len(values) else float("nan")


def image_residual(found: np.ndarray, original: np.ndarray) -> dict[str, float]:
    """Patch displacements of `found` against `original` (same shape, [x, y]), RMS after the
    mean, over patches matched with confidence ≥ 0.5."""
    flow = estimate_pair(
        original.astype(np.float32), found.astype(np.float32), FlowParams(patch=32, spacing=16)
    )
    ok = flow.confidence >= 0.5
    d = flow.displacement[ok]
    d = d - d.mean(axis=0) if len(d) else d
    return {"rms_px": rms(np.linalg.norm(d, axis=1)), "patches": int(ok.sum())}


def in_section_frame(image: np.ndarray, start: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` (rendered from section position `start`) on the original's pixel grid."""
    out = np.zeros(size, np.float32)
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.array(image.shape), size)
    out[lo[0] : hi[0], lo[1] : hi[1]] = image[
        lo[0] - start[0] : hi[0] - start[0], lo[1] - start[1] : hi[1] - start[1]
    ]
    return out


def montage_timed(cut, size: tuple[int, int], box: int) -> dict[str, Any]:
    """Montage `cut` in this process, timing each phase; the section rendered in `box` px
    squares, as the render step's chunks do."""
    times = {}
    started = time.perf_counter()
    matches, transforms = montage_tiles(cut.tiles, cut.stage, MatchParams(), TileSolveParams())
    times["match and solve"] = time.perf_counter() - started
    started = time.perf_counter()
    pairs = [(m.first, m.second) for m in matches if len(m.confidence)]
    shading = estimate_shading(cut.tiles, transforms, pairs)
    images = [shading.correct(t, k) for k, t in enumerate(cut.tiles)]
    times["shading"] = time.perf_counter() - started
    started = time.perf_counter()
    samplers = [CubicSampler(i) for i in images]
    rendered = np.zeros(size, np.float32)
    for x in range(0, size[0], box):
        for y in range(0, size[1], box):
            shape = (min(box, size[0] - x), min(box, size[1] - y))
            rendered[x : x + shape[0], y : y + shape[1]] = render_box(
                samplers, transforms, (x, y), shape
            )
    times["render"] = time.perf_counter() - started
    seams = seam_steps(images, transforms, pairs)
    pixels = sum(t.size for t in cut.tiles)
    return {
        "tile": list(cut.tiles[0].shape),
        "placement_rms_px": rms(placement_residuals(transforms, cut.truth, step=4)),
        "lens_px": transforms[0].lens.kappa,
        "seam_step_max": max(s["step"] for s in seams),
        "seam_step_over_noise_max": max(s["step"] / s["noise"] for s in seams),
        "seconds": times,
        "mpx_per_s": pixels / sum(times.values()) / 1e6,
        "rendered": rendered,
    }


def montage_case(section: np.ndarray, overlap: float, seed: int) -> dict[str, Any]:
    cut = cut_tiles(section, TileDamage(overlap=overlap, seed=seed))
    out = montage_timed(cut, section.shape, max(section.shape))
    out["image"] = image_residual(out.pop("rendered"), section)
    return {**out, "cut": cut}


def large_case(stack: np.ndarray, side: int) -> dict[str, Any]:
    """3×3 tiles of `side` px (10 % overlap, the same damage) cut from a section built of
    distinct real sections (`mosaic_section`): a microscope's tile size."""
    size = int(side * 2.8) + 18
    cut = cut_tiles(mosaic_section(stack, size), TileDamage(overlap=0.1, seed=1, margin=8))
    out = montage_timed(cut, (size, size), 1024)
    out.pop("rendered")
    return out


def sofima_case(python: str, cut, overlap: float, section: np.ndarray) -> dict[str, Any]:
    """SOFIMA's montage of the same tiles, scored by the image residual."""
    rows, cols = cut.grid[1], cut.grid[0]
    tiles = np.stack(
        [np.stack([t.T for t in cut.tiles[r * cols : (r + 1) * cols]]) for r in range(rows)]
    )
    with tempfile.TemporaryDirectory() as folder:
        given, found = Path(folder) / "in.npz", Path(folder) / "out.npz"
        overlap_px = round(overlap * cut.tiles[0].shape[0])
        np.savez(given, tiles=tiles, overlap_px=overlap_px)
        started = time.perf_counter()
        done = subprocess.run(
            [python, str(SOFIMA_SCRIPT), str(given), str(found)], capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1:]}
        result = np.load(found)
        image = np.nan_to_num(result["image"]).T  # [x, y]
    # SOFIMA's frame: tile (0, 0) at its returned position; the original's: the truth's
    origin = np.rint(cut.truth[0].forward(np.zeros((1, 2)))[0] - result["positions"][0, 0])
    placed = in_section_frame(image, origin.astype(int), section.shape)
    return {"image": image_residual(placed, section), "wall_s": wall}


def summary_rows(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    name = "montage"
    placement = [c["petavox"]["placement_rms_px"] for c in cases]
    image = [c["petavox"]["image"]["rms_px"] for c in cases]
    steps = [c["petavox"]["seam_step_over_noise_max"] for c in cases]
    speed = [c["petavox"]["mpx_per_s"] for c in cases]
    rows = [
        common.row(
            name,
            "placement residual, worst section (RMS)",
            max(placement),
            "px",
            "≤ 0.5",
            max(placement) <= 0.5,
            f"{len(cases)} real sections",
        ),
        common.row(name, "image residual, worst section (RMS)", max(image), "px"),
        common.row(name, "seam step / noise, worst pair", max(steps), "x", "≤ 1", max(steps) <= 1),
        common.row(name, "match+solve+shading+render per core", float(np.median(speed)), "MPx/s"),
    ]
    sofima = [c["sofima"]["image"]["rms_px"] for c in cases if "image" in c.get("sofima", {})]
    if sofima:
        rows.append(
            common.row(
                name,
                "SOFIMA image residual, worst section (RMS)",
                max(sofima),
                "px",
                "petavox at most",
                max(image) <= max(sofima),
                f"{len(sofima)} sections",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="20,60,100,140,180,220")
    parser.add_argument("--sofima", default=None, help="a Python with jax and sofima")
    parser.add_argument("--quick", action="store_true", help="two sections")
    parser.add_argument("--large", type=int, default=0, help="also 3×3 tiles of this side (px)")
    args = parser.parse_args()
    stack = np.load(DATA)["raw"].transpose(2, 1, 0)
    sections = [int(z) for z in args.sections.split(",")][: 2 if args.quick else None]
    cases = []
    for k, z in enumerate(sections):
        overlap = OVERLAPS[k % len(OVERLAPS)]
        section = np.ascontiguousarray(stack[:, :, z])
        ours = montage_case(section, overlap, seed=z)
        cut = ours.pop("cut")
        case = {"section": z, "overlap": overlap, "petavox": ours}
        if args.sofima:
            case["sofima"] = sofima_case(args.sofima, cut, overlap, section)
        cases.append(case)
        theirs = case.get("sofima", {}).get("image", {}).get("rms_px")
        print(
            f"section {z}, overlap {overlap:.0%}, tiles {ours['tile']}: placement "
            f"{ours['placement_rms_px']:.3f} px RMS, image {ours['image']['rms_px']:.3f} px "
            f"({ours['image']['patches']} patches), lens {ours['lens_px']:.2f} px (true 1.5), "
            f"seam step/noise max {ours['seam_step_over_noise_max']:.2f}, "
            f"{ours['mpx_per_s']:.3f} MPx/s per core "
            + ", ".join(f"{p} {t:.2f} s" for p, t in ours["seconds"].items())
            + (f"; SOFIMA image {theirs:.3f} px" if theirs is not None else "")
            + (f" ({case['sofima']})" if "sofima" in case and theirs is None else "")
        )
    large = large_case(stack, args.large) if args.large else None
    if large:
        print(
            f"large: 3×3 tiles of {large['tile']} px, placement {large['placement_rms_px']:.3f} px"
            f" RMS, lens {large['lens_px']:.2f} px, seam step/noise max "
            f"{large['seam_step_over_noise_max']:.2f}, {large['mpx_per_s']:.3f} MPx/s per core: "
            + ", ".join(f"{p} {t:.1f} s" for p, t in large["seconds"].items())
        )
    rows = summary_rows(cases)
    for r in rows:
        print(f"  {r['metric']}: {r['value']} {r['unit']} {r['target']} {r['note']}")
    common.write_results("montage", {"cases": cases, "large": large, "summary": rows})


if __name__ == "__main__":
    main()
