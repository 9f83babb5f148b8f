"""`petavox proofreading`: a segmentation's agglomeration handed to proofreading tools.

A segmentation that `segment` (watershed mode) or `agglomerate` wrote names, in its info
(`AGGLOMERATION_KEY`), its supervoxel layer, the region graph it was merged from and its
supervoxel → segment table. From these the command writes:

- a webKnossos agglomerate file (`petavox.tasks.segment.webknossos_agglomerate`): each
  segment an agglomerate of supervoxels, with the region-graph edges inside it and their mean
  affinities, for webKnossos' supervoxel proofreading;
- a Neuroglancer state: the supervoxel layer with the agglomeration as ``equivalences`` (the
  supervoxels of a segment drawn as one object; merges and splits are edits of that list), and
  the image layer if given. Equivalences live in the state, so this is for small volumes
  (`--max-supervoxels`). Layers are named and sourced as `petavox view` names them: cloud
  layers as they are, local ones from ``http://127.0.0.1:PORT/NAME``, where
  ``petavox view URL... --port PORT`` (the same URLs, in the same order) serves them.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer, read_info
from petavox.tasks.core.storage import StorageContext, join_url, local_path, normalize_url
from petavox.tasks.segment.agglomerate_jobs import MAPPING_FOLDER, read_mapping
from petavox.tasks.segment.region_graph import GRAPH_FOLDER, read_columns
from petavox.tasks.segment.webknossos_agglomerate import Agglomeration, write_agglomerate_file
from petavox.workflows.agglomerate_plans import AGGLOMERATION_KEY, supervoxels_of
from petavox.workflows.config import StorageConfig
from petavox.workflows.file_server import HOST
from petavox.workflows.view import (
    DEFAULT_PORT,
    neuroglancer_link,
    open_view_layers,
    viewer_state,
)

DEFAULT_MAX_SUPERVOXELS = 100_000
LINK_LIMIT = 100_000  # characters: a longer link is not printed (load the state file instead)
DESCRIPTION = """\
Reads the segmentation's agglomeration (its supervoxel layer, region graph and supervoxel ->
segment table) and writes either or both of:

  --webknossos FILE          a webKnossos agglomerate file (HDF5): each segment an agglomerate
                             of supervoxels, with the region-graph edges inside it; place it in
                             the supervoxel layer's agglomerates/ folder in webKnossos.
  --neuroglancer-state FILE  a Neuroglancer state (JSON): the supervoxel layer with each
                             segment's supervoxels as equivalences (drawn as one object), and
                             --image under it. For small volumes: see --max-supervoxels.

Local (file://) layers are named in the state as `petavox view` names them and read from
http://127.0.0.1:PORT/NAME: run `petavox view URL... --port PORT` with the URLs the command
prints, then paste the state into the viewer's JSON editor ({}) or open the printed link.
Cloud layers are read directly."""


@dataclass(frozen=True, kw_only=True)
class SegmentationMapping:
    """A segmentation's agglomeration record and its supervoxel → segment table."""

    segmentation: str  # the segmentation layer's URL
    record: dict[str, Any]  # its info's `AGGLOMERATION_KEY`
    supervoxels: np.ndarray  # (n,) ids
    segments: np.ndarray  # (n,) the segment of each

    @property
    def supervoxel_layer(self) -> str:
        return supervoxels_of(self.record, self.segmentation)


def load_mapping(url: str, context: StorageContext) -> SegmentationMapping:
    """The agglomeration record and mapping table of the segmentation at `url`; an InputError
    when it has none or the table is empty."""
    try:
        url = normalize_url(url)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    record = Layer.open(url, context).info.get(AGGLOMERATION_KEY)
    if not isinstance(record, dict) or "supervoxels" not in record:
        raise InputError(
            f"{url} has no agglomeration ({AGGLOMERATION_KEY} in its info): give a "
            "segmentation that segment (watershed mode) or agglomerate wrote"
        )
    if record.get("mapping", MAPPING_FOLDER) != MAPPING_FOLDER:
        raise InputError(
            f"{url} keeps its mapping in {record['mapping']!r}; this petavox reads "
            f"{MAPPING_FOLDER!r}: upgrade petavox, or rerun agglomerate"
        )
    svs, segments = read_mapping(url, int(record["levels"]), context)
    if len(svs) == 0:
        raise InputError(
            f"{url}/{MAPPING_FOLDER} holds no supervoxels: the agglomeration has not finished; "
            "run segment or agglomerate again to complete it"
        )
    return SegmentationMapping(segmentation=url, record=record, supervoxels=svs, segments=segments)


def graph_url(mapping: SegmentationMapping, context: StorageContext) -> str:
    """The region graph's URL, checked to be the one the segmentation was merged from."""
    url = join_url(mapping.supervoxel_layer, GRAPH_FOLDER)
    info = read_info(url, context)
    if info is None:
        raise InputError(
            f"{mapping.supervoxel_layer} has no region graph ({GRAPH_FOLDER}/info): rerun "
            f"segment to rebuild it, then agglomerate for {mapping.segmentation}"
        )
    if info.get("identity") != mapping.record.get("graph"):
        raise InputError(
            f"the region graph at {url} ({info.get('identity')}) is not the one "
            f"{mapping.segmentation} was merged from ({mapping.record.get('graph')}): rerun "
            "agglomerate to remake the segmentation from it"
        )
    return url


def supervoxel_positions(mapping: SegmentationMapping, url: str, ctx) -> np.ndarray:
    """(n, 3) x, y, z of each mapped supervoxel (its closed row in the graph at `url`); an
    InputError when the mapping and the graph disagree on the supervoxels."""
    levels = int(mapping.record["levels"])
    rows = read_columns(url, "supervoxels", levels, ("sv", "closed", "x", "y", "z"), ctx)
    closed = rows["closed"].astype(bool)
    ids = rows["sv"][closed].astype(np.uint64)
    xyz = np.stack([rows[a][closed] for a in "xyz"], axis=1).astype(np.int64)
    order = np.argsort(ids)
    ids, xyz = ids[order], xyz[order]
    svs = mapping.supervoxels
    where = np.searchsorted(ids, svs).clip(max=max(len(ids) - 1, 0))
    found = ids[where] == svs if len(ids) else np.zeros(len(svs), bool)
    if not found.all() or len(ids) != len(svs):
        raise InputError(
            f"the mapping of {mapping.segmentation} holds {len(svs)} supervoxels "
            f"({int((~found).sum())} unknown to the graph), the region graph {len(ids)}: the "
            "agglomeration is incomplete or stale; run segment or agglomerate again"
        )
    return xyz[where]


def load_agglomeration(mapping: SegmentationMapping, context: StorageContext) -> Agglomeration:
    """The mapping with each supervoxel's position and the region graph's pairs."""
    url = graph_url(mapping, context)
    positions = supervoxel_positions(mapping, url, context)
    levels = int(mapping.record["levels"])
    edges = read_columns(url, "edges", levels, ("sv_a", "sv_b", "affinity_mean"), context)
    return Agglomeration(
        supervoxels=mapping.supervoxels,
        segments=mapping.segments,
        positions=positions,
        edges=np.stack([edges["sv_a"], edges["sv_b"]], axis=1).astype(np.uint64),
        affinities=edges["affinity_mean"].astype(np.float64),
    )


def equivalences(supervoxels: np.ndarray, segments: np.ndarray) -> list[list[str]]:
    """The supervoxels of each segment that has two or more, ascending, as Neuroglancer's
    ``equivalences`` (ids as strings: uint64 does not fit a JSON number)."""
    order = np.lexsort((supervoxels, segments))
    svs, segs = supervoxels[order], segments[order]
    starts = np.flatnonzero(np.r_[True, segs[1:] != segs[:-1]])
    groups = np.split(svs, starts[1:])
    return sorted(
        ([str(int(s)) for s in group] for group in groups if len(group) >= 2),
        key=lambda group: int(group[0]),
    )


def proofreading_state(
    mapping: SegmentationMapping,
    http_base: str | None,
    context: StorageContext,
    image: str | None = None,
) -> dict[str, Any]:
    """A Neuroglancer state: the image (if given), then the supervoxel layer with the
    agglomeration as equivalences; local layers read from `http_base` (`petavox view`)."""
    urls = [image, mapping.supervoxel_layer] if image else [mapping.supervoxel_layer]
    layers = open_view_layers(urls, context)
    if layers[-1].layer_type != "segmentation":
        raise InputError(f"{mapping.supervoxel_layer} is no segmentation layer: rerun segment")
    state = viewer_state(layers, http_base, context)
    state["layers"][-1]["equivalences"] = equivalences(mapping.supervoxels, mapping.segments)
    return state


def output_path(value: str, option: str) -> Path:
    """A local file to write, from a path or a file:// URL."""
    if "://" in value and not value.startswith("file://"):
        raise InputError(f"{option} {value}: give a local file (webKnossos and viewers read it)")
    return Path(local_path(value) or value).expanduser()


def cmd_proofreading(args: argparse.Namespace) -> int:
    """Write the webKnossos file and/or the Neuroglancer state of a segmentation."""
    if not args.webknossos and not args.neuroglancer_state:
        raise InputError(
            "nothing to write: give --webknossos FILE, --neuroglancer-state FILE, or both"
        )
    hdf5 = output_path(args.webknossos, "--webknossos") if args.webknossos else None
    state_file = (
        output_path(args.neuroglancer_state, "--neuroglancer-state")
        if args.neuroglancer_state
        else None
    )
    context = StorageConfig(s3_endpoint=args.s3_endpoint).context()
    mapping = load_mapping(args.segmentation, context)
    count = len(mapping.supervoxels)
    if state_file and count > args.max_supervoxels:
        raise InputError(
            f"{mapping.segmentation} has {count} supervoxels, more than --max-supervoxels "
            f"{args.max_supervoxels}: Neuroglancer keeps equivalences in its state, which is "
            "for small volumes; raise --max-supervoxels, or write only --webknossos"
        )
    state = None
    if state_file:  # made first: a bad --image stops before anything is written
        supervoxel_positions(mapping, graph_url(mapping, context), context)  # complete, current
        state = proofreading_state(mapping, f"http://{HOST}:{args.port}", context, args.image)
    if hdf5:
        dtype = Layer.open(mapping.supervoxel_layer, context).dtype
        tables = write_agglomerate_file(hdf5, load_agglomeration(mapping, context), dtype)
        print(
            f"webKnossos agglomerate file: {hdf5} ({tables.count} agglomerates of {count} "
            f"supervoxels, {len(tables.edges)} edges); place it in the supervoxel layer's "
            "agglomerates/ folder"
        )
    if state_file and state is not None:
        write_state(state_file, state, mapping, args)
    return 0


def write_state(
    path: Path, state: dict[str, Any], mapping: SegmentationMapping, args: argparse.Namespace
) -> None:
    """Write the Neuroglancer state file and say how to open it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=1) + "\n")
    merged = state["layers"][-1]["equivalences"]
    print(
        f"Neuroglancer state: {path} ({len(merged)} segments of two or more supervoxels, "
        f"over {len(mapping.supervoxels)} supervoxels)"
    )
    urls = [args.image, mapping.supervoxel_layer] if args.image else [mapping.supervoxel_layer]
    if any(local_path(normalize_url(u)) for u in urls):
        print(f"  its local layers are read from http://{HOST}:{args.port}/NAME: serve them with")
        print(f"  petavox view {' '.join(urls)} --port {args.port}")
        print("  then paste the state into a viewer's JSON editor ({}), or open the link below")
    link = neuroglancer_link(state)
    if len(link) <= LINK_LIMIT:
        print(f"  {link}")


def add_proofreading_parser(sub: Any) -> None:
    """`petavox proofreading` and its options."""
    p = sub.add_parser(
        "proofreading",
        help="hand a segmentation's agglomeration to proofreading: a webKnossos agglomerate "
        "file and/or a Neuroglancer state with the merges as equivalences",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "segmentation",
        metavar="SEGMENTATION_URL",
        help="segmentation layer written by segment (watershed mode) or agglomerate",
    )
    p.add_argument("--webknossos", metavar="FILE", help="write the webKnossos agglomerate (HDF5)")
    p.add_argument(
        "--neuroglancer-state",
        metavar="FILE",
        help="write the Neuroglancer state (JSON): supervoxels with the merges as equivalences",
    )
    p.add_argument("--image", metavar="URL", help="image layer to show under the supervoxels")
    p.add_argument(
        "--max-supervoxels",
        type=int,
        default=DEFAULT_MAX_SUPERVOXELS,
        metavar="N",
        help="refuse a Neuroglancer state over more supervoxels than this "
        f"(default {DEFAULT_MAX_SUPERVOXELS}); the webKnossos file has no such limit",
    )
    p.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="where the state reads local layers: http://127.0.0.1:PORT/NAME, as served by "
        f"`petavox view URL... --port PORT` (default {DEFAULT_PORT})",
    )
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    p.set_defaults(func=cmd_proofreading)
