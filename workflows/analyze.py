"""`petavox analyze OUTPUT_URL`: what the reconstruction says. Segments per class and their sizes,
whether the neurons share a preferred direction (and which of them follow it),
and how strong the connections are (synapses per connected pair, the strongest pairs). Written
as ``analysis.json`` and three PNGs into ``OUTPUT_URL/analysis/``, and summarised on the
terminal. Reads the tables partition by partition and the edges file by file."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

from petavox.tasks.analysis import plots
from petavox.tasks.analysis.classes import class_sizes, class_summary
from petavox.tasks.analysis.connections import strengths
from petavox.tasks.analysis.orientation import orientation_test
from petavox.tasks.classify.classify_jobs import table_key
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import read_info
from petavox.tasks.core.objects import get, list_keys, put, put_json
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.morphology.table_reads import read_partition
from petavox.tasks.synapse.table import columns_from_parquet
from petavox.workflows.catalog import resolve_layer_url
from petavox.workflows.config import StorageConfig

SIZE_FACTOR = 10.0  # unclassified tables: test segments of this many times the median voxels
CONE = 20.0  # degrees: the aligned subset lies within this of the preferred direction
P_LEVEL = 0.01  # a preferred direction is reported below this p-value


def segment_rows(seg_url: str, context: StorageContext) -> list:
    """(morphology partition, its segments' classes or None) pairs of the layer's table."""
    info = read_info(seg_url, context)
    if info is None:
        raise InputError(f"{seg_url} is no layer; give the run's output and --segmentation")
    tables = info.get("morphology", {})
    if not tables:
        raise InputError(f"{seg_url} has no morphology table; run petavox morphology first")
    folder = "morphology" if "morphology" in tables else sorted(tables)[0]
    table_url, classes = join_url(seg_url, folder), info.get("classes")
    parts = []
    for shard in range(2 ** tables[folder]["shard_bits"]):
        rows = read_partition(table_url, shard, context)
        names = None
        if classes is not None:
            data = get(join_url(seg_url, classes), table_key(shard), context)
            names = columns_from_parquet(data)["class"] if data else None
        parts.append((rows, names))
    return parts


def is_classified(parts: list) -> bool:
    """Whether every partition of the table has its classes."""
    return all(names is not None for _, names in parts)


def neuron_axes(parts: list, size_factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Ids and axes of the neurons whose orientation is tested: the segments of class neuron
    (whole cells: a soma and its neurites) when the table is classified, else the large
    segments, of `size_factor` times the median voxels or more (whole cells and long
    processes, not the many short fragments whose axis says little). The axis is the
    skeleton's (the way the processes run; a soma's bulk would blur the voxels' axis), else
    the voxels'."""
    ids, voxels, axes = [], [], []
    for table, _ in parts:
        skeleton = np.column_stack([table[f"skeleton_axis_{a}"] for a in "xyz"])
        voxel = np.column_stack([table[f"axis_{a}"] for a in "xyz"])
        axes.append(np.where(np.isfinite(skeleton).all(axis=1, keepdims=True), skeleton, voxel))
        ids.append(table["segment_id"])
        voxels.append(table["voxels"])
    if not ids:
        return np.zeros(0, np.uint64), np.zeros((0, 3))
    size = np.concatenate(voxels)
    if is_classified(parts):
        keep = np.concatenate([np.asarray(names).astype(str) == "neuron" for _, names in parts])
    else:
        keep = size >= size_factor * np.median(size) if len(size) else size > 0
    return np.concatenate(ids)[keep], np.concatenate(axes).reshape(-1, 3)[keep]


def analyze(
    output: str,
    segmentation: str = "segmentation",
    connectome: str = "synapses",
    size_factor: float = SIZE_FACTOR,
    cone: float = CONE,
    context: StorageContext = StorageContext(),
) -> dict[str, Any]:
    """The analysis of the run at `output`, written under ``output/analysis/``."""
    seg_url = resolve_layer_url(output, segmentation)
    parts = segment_rows(seg_url, context)
    unclassified = [np.full(len(r["segment_id"]), "unclassified") for r, _ in parts]
    names = [n if n is not None else u for (_, n), u in zip(parts, unclassified)]
    sizes = class_sizes(zip(names, (r["volume_um3"] for r, _ in parts)))
    ids, axes = neuron_axes(parts, size_factor)
    found = orientation_test(axes, cone)
    aligned = np.abs(axes @ np.asarray(found.direction)) >= np.cos(np.radians(cone))
    result: dict[str, Any] = {
        "segmentation": seg_url,
        "classes": class_summary(sizes),
        "orientation": {
            **found.as_dict(),
            "preferred": found.aligned_p_value < P_LEVEL,
            "tested": "neurons" if is_classified(parts) else "large segments",
            "size_factor": size_factor,
            "aligned_ids": [int(i) for i in ids[aligned]],
        },
    }
    edges_url = join_url(resolve_layer_url(output, connectome), "edges")
    keys = sorted(list_keys(edges_url, "", context))
    if keys:
        tables = (columns_from_parquet(get(edges_url, k, context) or b"") for k in keys)
        result["connections"] = strengths(tables)
    folder = join_url(output, "analysis")
    put_json(folder, "analysis.json", result, context)
    put(folder, "classes.png", plots.class_sizes_png(sizes), context)
    put(folder, "orientation.png", plots.orientation_png(axes, found.direction, aligned), context)
    if "connections" in result:
        pngs = plots.strengths_png(result["connections"]["pairs_by_synapses"])
        put(folder, "connections.png", pngs, context)
    result["written"] = folder
    return result


def print_analysis(result: dict[str, Any]) -> None:
    print(f"analysis of {result['segmentation']} (written to {result['written']}):")
    for name, c in result["classes"].items():
        print(
            f"  {name}: {c['segments']} segments, {c['volume_um3']:.3g} µm³; median "
            f"{c['volume_p50_um3']:.3g} µm³ (10-90 %: {c['volume_p10_um3']:.3g}-"
            f"{c['volume_p90_um3']:.3g})"
        )
    o = result["orientation"]
    if o["preferred"]:
        d = ", ".join(f"{v:.2f}" for v in o["direction"])
        print(
            f"  {o['tested']}: {o['aligned']} of {o['count']} run along ({d}), within "
            f"{o['cone_degrees']:g}° (uniform axes: {o['expected_aligned']:.1f}; p = "
            f"{o['aligned_p_value']:.2g}); Bingham p = {o['p_value']:.2g} over them all"
        )
    else:
        print(
            f"  {o['tested']}: no preferred direction ({o['count']} of them; the largest "
            f"subset within {o['cone_degrees']:g}°, {o['aligned']}, has p = "
            f"{o['aligned_p_value']:.2g}; Bingham p = {o['p_value']:.2g})"
        )
    c = result.get("connections")
    if c:
        top = ", ".join(f"{s['pre']} -> {s['post']} ({s['synapses']})" for s in c["strongest"][:5])
        print(
            f"  connections: {c['pairs']} connected pairs, {c['synapses']} synapses, "
            f"{c['mean']:.2f} per pair; pairs with 5+: {c['pairs_with_at_least']['5']}; "
            f"strongest: {top or 'none'}"
        )


def cmd_analyze(args: argparse.Namespace) -> int:
    context = StorageConfig(s3_endpoint=args.s3_endpoint).context()
    result = analyze(
        args.output,
        args.segmentation,
        args.connectome,
        args.size_factor,
        args.cone,
        context,
    )
    print_analysis(result)
    if args.json:
        print(json.dumps(result))
    return 0


def add_analyze_parser(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="classes and sizes, the neurons' preferred orientation, the connection strengths "
        "of a run's output (JSON and PNGs in OUTPUT_URL/analysis)",
    )
    p.add_argument("output", metavar="OUTPUT_URL", help="the run's output root")
    p.add_argument("--segmentation", default="segmentation", help="its segmentation layer")
    p.add_argument("--connectome", default="synapses", help="its connectome (synapses output)")
    p.add_argument(
        "--size-factor",
        type=float,
        default=SIZE_FACTOR,
        help="an unclassified table's segments whose orientation is tested: this many times "
        "the median voxels or more (a classified one's: the class neuron)",
    )
    p.add_argument("--cone", type=float, default=CONE, help="aligned subset: degrees")
    p.add_argument("--json", action="store_true", help="also print the result as JSON")
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    p.set_defaults(func=cmd_analyze)
