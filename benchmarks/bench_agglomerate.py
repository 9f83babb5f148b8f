"""Re-agglomeration from the region graph against full `segment` runs, on gala `test` (real EM,
its boundary map) and on the demo (the built-in U-Net's boundaries on the synthetic volume).

    .venv/bin/python benchmarks/bench_agglomerate.py [--quick] [--cases gala,demo]

Per case, on one local Ray (2 CPUs), in this order:

1. one full `segment` at the case's default merge threshold;
2. `agglomerate` at the same threshold from its supervoxels: the segmentation must be equal, and
   the mapping table applied to the supervoxels must give it too;
3. a sweep of 8 thresholds with the ground truth, no layer written;
4. a full `segment` at each of the 8 thresholds, scored like `evaluate` (the largest difference
   from the sweep's scores), each followed by the sweep again: T is the median wall time of the
   9 full segments, S the median of the 8 sweeps beside them, reported as S / T;
5. memory: the largest agglomeration task's input (its graph part plus its children's carries,
   in graph rows) against the whole graph, on the volume and on the volume tiled 2 × 2 in x, y
   (4× the graph). Bounded means the largest task grows far less than the graph.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

GALA = common.BENCH_DIR.parent.parent / "shared" / "data" / "gala"
GALA_SEGMENT = {"chunk_shape": [64, 64, 32]}  # segment's defaults otherwise (0.875)
SWEEP = 8


def sweep_of(default: float) -> list[float]:
    """8 thresholds around the default, the default among them."""
    low = [round(default - 0.1 * k, 3) for k in range(4, 0, -1)]
    return [*low, default, *(round(default + 0.04 * k, 3) for k in (1, 2, 3))]


def run_stages(root: Path, session, stages: list[dict]) -> list:
    from petavox.workflows.config import parse_config
    from petavox.workflows.pipeline import run

    config = parse_config({"output": f"file://{root}", "stages": stages})
    return run(config, session=session, progress=False)


def read(root: Path, name: str) -> np.ndarray:
    from petavox.tasks.core.layers import Layer

    layer = Layer.open(f"file://{root}/{name}")
    return layer.read(layer.bounds(0))


def gala_inputs(folder: Path, tiles: int) -> list[dict]:
    """Ingest stages of gala `test`'s boundary map and ground truth, mirrored into tiles × tiles
    copies in x and y (so the tiles join without a seam)."""
    data = np.load(GALA / "test.npz")  # (z, y, x)

    def tiled(a: np.ndarray) -> np.ndarray:
        row = np.concatenate([a if i % 2 == 0 else a[:, :, ::-1] for i in range(tiles)], axis=2)
        return np.concatenate([row if j % 2 == 0 else row[:, ::-1] for j in range(tiles)], axis=1)

    gt = tiled(data["gt"]).astype(np.uint32)
    if tiles > 1:  # a mirrored copy of an object is another object
        offsets = np.zeros_like(gt)
        size = data["gt"].shape
        for j in range(tiles):
            for i in range(tiles):
                tile = (slice(None), slice(j * size[1], (j + 1) * size[1]))
                offsets[(*tile, slice(i * size[2], (i + 1) * size[2]))] = (j * tiles + i) << 20
        gt = np.where(gt > 0, gt + offsets, 0).astype(np.uint32)
    np.save(folder / "boundary.npy", tiled(data["boundary"]))
    np.save(folder / "gt.npy", gt)
    ingest = {"stage": "ingest", "resolution": [10, 10, 10], "storage_chunk": [32, 32, 16]}
    return [
        {**ingest, "input": str(folder / "boundary.npy"), "output": "boundary"},
        {**ingest, "input": str(folder / "gt.npy"), "output": "gt", "layer_type": "segmentation"},
    ]


def demo_inputs(folder: Path, size: int) -> tuple[list[dict], dict, float]:
    """The demo's stages up to `infer` (its ground truth named `gt`), its segment settings and
    its merge threshold."""
    from petavox.tasks.synthetic.misalignment import random_misalignment
    from petavox.workflows import demo

    volume = demo.demo_volume(size, 0)
    known = random_misalignment(volume.raw.shape[2], demo.MAX_SHIFT, demo.WARP, seed=0)
    config = demo.demo_config(f"file://{folder}", demo.write_stacks(volume, known, folder), {})
    stages = []
    for stage in config.stages:
        entry = stage.model_dump(exclude_unset=True)
        entry["stage"] = stage.stage
        if stage.stage in ("ingest", "align", "infer"):
            stages.append(entry)
        elif stage.stage == "segment":
            segment = {k: v for k, v in entry.items() if k not in ("stage", "input", "output")}
    for entry in stages:  # the ground truth under one name for both cases
        if entry.get("output") == "ground_truth":
            entry["output"] = "gt"
        if "carry" in entry:
            entry["carry"] = {
                k: ("gt" if v == "ground_truth" else v) for k, v in entry["carry"].items()
            }
    return stages, segment, demo.MERGE_THRESHOLD


def segment_seconds(reports: list) -> float:
    return sum(r.seconds for r in reports)


def graph_rows(root: Path, supervoxels: str) -> tuple[int, int]:
    """(rows of the whole graph, rows of the largest agglomeration task's input: its part and
    its children's carries, the largest over every threshold the run agglomerated at)."""
    from petavox.tasks.core.objects import get, get_arrays, list_keys
    from petavox.tasks.synapse.table import columns_from_parquet

    url = f"file://{root}/{supervoxels}/region_graph"
    info = json.loads((root / supervoxels / "region_graph" / "info").read_text())
    parts: dict[tuple[int, str], int] = {}
    for level in range(info["levels"] + 1):
        for key in list_keys(url, f"edges/{level}/"):
            rows = len(columns_from_parquet(get(url, key) or b"")["sv_a"])
            parts[(level, key.rsplit("/", 1)[-1].removesuffix(".parquet"))] = rows
    # every agglomeration of the run (each threshold): the largest carry of each node
    carries: dict[tuple[int, str], int] = {}
    for work in (root / "intermediate" / "agglomerate").iterdir():
        for level in range(info["levels"] + 1):
            for path in (work / "agglo-carry" / str(level)).glob("*.npz"):
                edges = get_arrays(f"file://{work}", f"agglo-carry/{level}/{path.name}")["edges"]
                carries[(level, path.stem)] = max(carries.get((level, path.stem), 0), len(edges))
    largest = 0
    for (level, node), rows in parts.items():
        x, y, z = (int(v) for v in node.split("_"))
        child = (
            [
                carries.get((level - 1, f"{2 * x + i}_{2 * y + j}_{2 * z + k}"), 0)
                for i in (0, 1)
                for j in (0, 1)
                for k in (0, 1)
            ]
            if level
            else [0]
        )
        largest = max(largest, rows + sum(child))
    return sum(parts.values()), largest


def run_case(
    name: str, scratch: Path, session, inputs: list[dict], segment: dict, default: float
) -> dict[str, Any]:
    from petavox.tasks.core.storage import StorageContext
    from petavox.tasks.evaluate.metrics import evaluate
    from petavox.tasks.segment.agglomerate_jobs import read_mapping
    from petavox.tasks.segment.equivalence import apply_maps

    root = scratch / name
    root.mkdir(parents=True, exist_ok=True)
    run_stages(root, session, inputs)
    base = {"stage": "segment", "input": "boundary", **segment}
    started = time.perf_counter()
    reports = run_stages(root, session, [{**base, "merge_threshold": default}])
    wall_t = time.perf_counter() - started
    seg_t = segment_seconds(reports)
    seg = read(root, "segmentation")
    run_stages(
        root, session, [{"stage": "agglomerate", "output": "again", "merge_threshold": default}]
    )
    same = bool(np.array_equal(read(root, "again"), seg))
    svs, segments = read_mapping(f"file://{root}/again", 8, StorageContext())
    table = np.stack([svs, segments], axis=1)[np.argsort(svs)]
    supervoxels = read(root, "supervoxels")
    mapped = apply_maps(supervoxels.ravel(), [table]).reshape(supervoxels.shape)
    same = same and bool(np.array_equal(mapped, seg))
    thresholds = sweep_of(default)
    sweep = {
        "stage": "agglomerate",
        "output": "sweep",
        "merge_threshold": thresholds,
        "ground_truth": "gt",
        "report": "sweep.json",
    }
    # each full segment (at each threshold) is timed, then a sweep beside it: medians of the
    # two, side by side (the machine is shared; single runs vary by 2x). The first sweep in
    # the process also imports matplotlib (for the PNG): reported apart.
    started = time.perf_counter()
    run_stages(root, session, [sweep])
    cold_s = time.perf_counter() - started
    rows = {
        r["merge_threshold"]: r for r in json.loads((root / "sweep.json").read_text())["scores"]
    }
    gt = read(root, "gt")
    worst, full_s, sweeps = 0.0, [wall_t], []
    for t in thresholds:
        out = f"full_{t}"
        started = time.perf_counter()
        run_stages(root, session, [{**base, "merge_threshold": t, "output": out}])
        full_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        sweep_reports = run_stages(root, session, [sweep])
        sweeps.append(time.perf_counter() - started)
        full = evaluate(read(root, out), gt).to_dict()
        worst = max(
            worst, *(abs(full[k] - rows[t][k]) for k in ("arand", "voi_split", "voi_merge"))
        )
        shutil.rmtree(root / out, ignore_errors=True)
    wall_t, wall_s = float(np.median(full_s)), float(np.median(sweeps))
    sweep_s = segment_seconds(sweep_reports)
    full_s = full_s[1:]  # the 8 thresholds' own runs
    graph, largest = graph_rows(root, "supervoxels")
    result = {
        "segment_s": seg_t,
        "segment_wall_s": wall_t,
        "agglomerate_equal": same,
        "sweep_s": sweep_s,
        "sweep_wall_s": wall_s,
        "sweep_over_segment": wall_s / wall_t,
        "sweep_first_in_process_wall_s": cold_s,
        "full_runs_wall_s": sum(full_s),
        "max_score_difference": worst,
        "graph_rows": graph,
        "largest_task_rows": largest,
        "scores": list(rows.values()),
    }
    print(
        f"{name}: segment {wall_t:.2f} s; agglomerate at {default} equal: {same}; sweep of "
        f"{len(thresholds)} {wall_s:.2f} s ({wall_s / wall_t:.1%} of one segment; the first in "
        f"the process, importing matplotlib, {cold_s:.2f} s); 8 full segments "
        f"{sum(full_s):.1f} s; largest score difference {worst:.2e}"
    )
    print(f"  graph {graph} rows, largest agglomeration task {largest} rows")
    for r in rows.values():
        print(
            f"    {r['merge_threshold']:.3f}: ARAND {r['arand']:.3f}, VOI {r['voi_split']:.3f} + "
            f"{r['voi_merge']:.3f}, {r['segments']} segments"
        )
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo at 128, no 4x tiling")
    parser.add_argument("--cases", default="gala,demo")
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    scratch = common.scratch_dir("agglomerate")
    session, _ = common.start_ray(2)
    out: dict[str, Any] = {}
    try:
        if "gala" in cases:
            inputs = gala_inputs(scratch, 1)
            out["gala"] = run_case("gala", scratch, session, inputs, GALA_SEGMENT, 0.875)
            if not args.quick:
                tiled = scratch / "tiled-inputs"
                tiled.mkdir()
                inputs4 = gala_inputs(tiled, 2)
                root = scratch / "gala4"
                run_stages(root, session, inputs4)
                run_stages(
                    root, session, [{"stage": "segment", "input": "boundary", **GALA_SEGMENT}]
                )
                graph, largest = graph_rows(root, "supervoxels")
                out["gala_4x"] = {"graph_rows": graph, "largest_task_rows": largest}
                g1 = out["gala"]
                print(
                    f"gala 2x2 tiled: graph {graph} rows ({graph / g1['graph_rows']:.1f}x), "
                    f"largest agglomeration task {largest} rows "
                    f"({largest / g1['largest_task_rows']:.2f}x)"
                )
        if "demo" in cases:
            folder = scratch / "demo-inputs"
            folder.mkdir()
            stages, segment, default = demo_inputs(folder, 128 if args.quick else 256)
            out["demo"] = run_case("demo", scratch, session, stages, segment, default)
    finally:
        common.stop_ray(session)
        shutil.rmtree(scratch, ignore_errors=True)
    rows = []
    for name in ("gala", "demo"):
        if name in out:
            r = out[name]
            rows.append(
                common.row(
                    "agglomerate",
                    f"{name}: sweep of 8 / one segment",
                    r["sweep_over_segment"],
                    "x",
                    "< 0.1",
                    r["sweep_over_segment"] < 0.1,
                )
            )
            rows.append(
                common.row(
                    "agglomerate",
                    f"{name}: sweep vs full runs, max score diff",
                    r["max_score_difference"],
                    "",
                    "0",
                    r["max_score_difference"] < 1e-9,
                )
            )
    out["rows"] = rows
    common.write_results("agglomerate", out)
    return out


if __name__ == "__main__":
    main()
