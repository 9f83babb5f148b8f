"""Alignment: accuracy on known misalignment (synthetic and real gala crops), throughput of
estimate + solve + render per core, and how the solve grows with the number of sections.

    .venv/bin/python benchmarks/bench_align.py [--quick] [--sections 100,1000,10000]

Accuracy: residual RMS (pixels) between solved and known transforms after removing one global
3-D affine transform, and the mean correlation of neighbouring sections before and after.
Throughput: `align` through the Ray runner with 1 CPU on file:// layers. Solve scaling: exact
pairwise flows (plus noise) simulated from known transforms for N sections of 256×256 pixels
(z−1 and z−2 links, 49 patches each), solved in one process; time and peak memory.
"""

from __future__ import annotations

import argparse
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

import common
import numpy as np

GALA = common.BENCH_DIR.parent.parent / "shared" / "data" / "gala"


def neighbour_correlation(volume: np.ndarray, margin: int) -> float:
    inner = volume[margin:-margin, margin:-margin].astype(np.float64)
    return float(
        np.mean(
            [
                np.corrcoef(inner[..., z - 1].ravel(), inner[..., z].ravel())[0, 1]
                for z in range(1, volume.shape[2])
            ]
        )
    )


def align_case(
    name: str,
    aligned: np.ndarray,
    shift: float,
    warp: float,
    session,
    scratch: Path,
    rotation: float = 0.0,
    **align: Any,
) -> dict[str, Any]:
    """Misalign `aligned` (x, y, z uint8) by known transforms, run `align`, score it."""
    from petavox.tasks.align.displacement import grid_points
    from petavox.tasks.align.render import SectionTransforms
    from petavox.tasks.core.layers import Layer
    from petavox.tasks.core.objects import get_arrays
    from petavox.tasks.synthetic.misalignment import apply, random_misalignment, residuals
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    centre = (aligned.shape[0] / 2, aligned.shape[1] / 2)
    known = random_misalignment(
        aligned.shape[2], shift, warp, rotation=rotation, centre=centre, seed=7
    )
    raw = apply(aligned, known)
    root = scratch / name
    root.mkdir()
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
    reports = run(
        parse_config({"output": f"file://{root}", "stages": stages}),
        session=session,
        progress=False,
    )
    seconds = sum(r.seconds for r in reports if r.label.startswith("align"))
    (work,) = (root / "intermediate" / "align").iterdir()
    found = SectionTransforms.from_arrays(get_arrays(f"file://{work}", "transforms.npz"))
    margin = min(40, aligned.shape[1] // 4)
    stop = (aligned.shape[0] - margin, aligned.shape[1] - margin)
    points = grid_points((margin, margin), stop, 8)
    per_section = residuals(found, known, points)
    out_layer = Layer.open(f"file://{root}/aligned")
    result = out_layer.read(out_layer.bounds(0))
    row = {
        "shape": list(aligned.shape),
        "max_shift": shift,
        "warp": warp,
        "seconds": seconds,
        "residual_rms": float(np.sqrt((per_section**2).mean())),
        "residual_last": float(per_section[-1]),
        "residual_max": float(per_section.max()),
        "correlation_truth": neighbour_correlation(aligned, margin),
        "correlation_before": neighbour_correlation(raw, margin),
        "correlation_after": neighbour_correlation(result, margin),
    }
    print(
        f"{name} {tuple(aligned.shape)}, shifts ±{shift:g} px, warps {warp:g} px: residual "
        f"{row['residual_rms']:.2f} px RMS (last section {row['residual_last']:.2f}, worst "
        f"{row['residual_max']:.2f}); neighbour correlation {row['correlation_before']:.3f} "
        f"→ {row['correlation_after']:.3f} (unwarped {row['correlation_truth']:.3f}); "
        f"align {seconds:.1f} s"
    )
    return row


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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller volumes, fewer sections")
    parser.add_argument("--sections", help="solve scaling: comma-separated section counts")
    args = parser.parse_args(argv)
    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    counts = [
        int(n)
        for n in (args.sections or ("100,1000" if args.quick else "100,1000,10000")).split(",")
    ]
    out: dict[str, Any] = {"solve": [solve_scaling(n) for n in counts]}
    scratch = common.scratch_dir("align")
    session = None
    try:
        session, _ = common.start_ray(1)
        size, depth = (128, 24) if args.quick else (256, 64)
        synthetic = generate(SyntheticParams(shape=(size, size, depth), seed=4)).raw
        # the floor: what aligning the unmisaligned volume moves (its content drifts along z)
        out["floor"] = align_case("synthetic-unmisaligned", synthetic, 0, 0, session, scratch)
        out["translations"] = align_case("synthetic", synthetic, 30, 0, session, scratch)
        out["warps"] = align_case("synthetic-warped", synthetic, 30, 5, session, scratch)
        out["rotations"] = align_case(
            "synthetic-rotated",
            synthetic,
            30,
            5,
            session,
            scratch,
            rotation=3,
            tile=[size // 2, size // 2],
        )
        if (GALA / "test.npz").exists():
            gala = np.ascontiguousarray(np.load(GALA / "test.npz")["raw"].transpose(2, 1, 0))
            out["gala"] = align_case("gala-test", gala, 15, 3, session, scratch)
            out["gala_translations"] = align_case("gala-test-shifts", gala, 15, 0, session, scratch)
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)
    voxels = int(np.prod(out["warps"]["shape"]))
    rows = [
        common.row(
            "align",
            "estimate + solve + render per core",
            common.mvx_per_s(voxels, out["warps"]["seconds"]),
            "MVx/s",
            note=f"{tuple(out['warps']['shape'])} synthetic, Ray 1 CPU",
        ),
        common.row(
            "align",
            "residual, shifts ±30 px",
            out["translations"]["residual_rms"],
            "px",
            target="≤ 0.5",
        ),
        common.row(
            "align",
            "residual floor: the unmisaligned volume aligned",
            out["floor"]["residual_rms"],
            "px",
            note="content motion along z that the aligner follows",
        ),
        common.row(
            "align",
            "residual, shifts ±30 + warps 5 px",
            out["warps"]["residual_rms"],
            "px",
            target="≤ 1.0",
        ),
        common.row(
            "align",
            "residual, + rotations ±3°, xy tiles",
            out["rotations"]["residual_rms"],
            "px",
            target="≤ 1.0",
        ),
    ]
    for entry in out["solve"]:
        rows.append(
            common.row(
                "align",
                f"solve {entry['sections']} sections",
                entry["seconds"],
                "s",
                note=f"peak {entry['peak_mib']:.0f} MiB",
            )
        )
    if "gala" in out:
        g = out["gala"]
        rows.append(
            common.row(
                "align",
                "gala test residual, ±15 px + 3 px warps",
                g["residual_rms"],
                "px",
                note=f"correlation {g['correlation_before']:.3f} → {g['correlation_after']:.3f}",
            )
        )
    out["rows"] = rows
    common.write_results("align", out)
    common.print_rows(rows)
    return out


if __name__ == "__main__":
    main()
