"""The steps that build the region graph (in `segment`) and agglomerate from it (in `segment`
and `agglomerate`), and the graph's manifest that ties them together.

The manifest is the ``info`` of the supervoxel layer's ``region_graph/`` folder, written once
the graph is complete: the chunk grid of its octree, its identity, where it came from. The
agglomeration needs nothing else, so `agglomerate` can rerun at any threshold from the
supervoxel layer's URL alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.geometry import Box, Chunk, ChunkGrid, octree_level_grid, octree_levels
from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext, join_url
from petavox.tasks.segment.agglomerate_jobs import (
    MAPPING_FOLDER,
    MAPS,
    AgglomerateJob,
    MappingJob,
    MergeRule,
)
from petavox.tasks.segment.edits import Edits
from petavox.tasks.segment.label_counts import TOP_K
from petavox.tasks.segment.region_graph import GRAPH_FOLDER, ChunkGraphJob, NodeGraphJob
from petavox.tasks.segment.stitch_jobs import RelabelJob
from petavox.workflows.catalog import Catalog
from petavox.workflows.plan import ChunkJob, DriverHooks, Output, StagePlan, identity
from petavox.workflows.segment_checks import size_hooks

log = logging.getLogger("petavox")

VERSION = 1
NO_EDITS = Edits()
MANIFEST_TYPE = "petavox_region_graph"
AGGLOMERATION_KEY = "petavox_agglomeration"  # in a segmentation's info: how it was merged


@dataclass(frozen=True, kw_only=True)
class GraphManifest:
    """What the agglomeration needs to know about a region graph."""

    supervoxels: str  # the supervoxel layer's URL
    affinities: str  # the boundary map or affinities its contacts were measured on
    grid: ChunkGrid  # level 0 of the octree (no halo)
    identity: str  # changes whenever the supervoxels or the graph would

    @property
    def url(self) -> str:
        return join_url(self.supervoxels, GRAPH_FOLDER)

    @property
    def levels(self) -> int:
        return octree_levels(self.grid)

    def level_grid(self, level: int) -> ChunkGrid:
        return octree_level_grid(self.grid, level)

    def info(self) -> dict[str, Any]:
        grid = self.grid
        return {
            "@type": MANIFEST_TYPE,
            "version": VERSION,
            "supervoxels": self.supervoxels,
            "affinities": self.affinities,
            "identity": self.identity,
            "bounds": [list(grid.bounds.start), list(grid.bounds.stop)],
            "chunk_shape": list(grid.chunk_shape),
            "origin": list(grid.origin),
            "levels": self.levels,
            "tables": {
                "edges/<level>/<x>_<y>_<z>.parquet": "sv_a, sv_b (sv_a < sv_b), faces, "
                "affinity_sum, affinity_mean, part: each touching pair once",
                "supervoxels/<level>/<x>_<y>_<z>.parquet": "sv, voxels, closed, part: each "
                "supervoxel closed in one part, with all its voxels",
            },
        }

    @classmethod
    def from_info(cls, info: dict[str, Any], supervoxels: str) -> GraphManifest:
        if info.get("@type") != MANIFEST_TYPE or info.get("version") != VERSION:
            raise InputError(
                f"{join_url(supervoxels, GRAPH_FOLDER)}/info is not a petavox region graph "
                f"(version {VERSION}); rerun segment to rebuild it"
            )
        bounds = Box(*info["bounds"])
        grid = ChunkGrid(bounds, info["chunk_shape"], 0, origin=info["origin"])
        return cls(
            supervoxels=supervoxels,
            affinities=info["affinities"],
            grid=grid,
            identity=info["identity"],
        )


def supervoxels_beside(output: str, given: str | None = None) -> str:
    """The default supervoxel layer of the segmentation at URL `output`: beside it, named
    `supervoxels` for the default output `segmentation`, else `<name>_supervoxels`
    (`given`: the URL the config names instead)."""
    if given:
        return given
    parent, _, name = output.rstrip("/").rpartition("/")
    return f"{parent}/{'supervoxels' if name == 'segmentation' else name + '_supervoxels'}"


def read_manifest(catalog: Catalog, supervoxels: str) -> GraphManifest:
    """The manifest of the graph beside `supervoxels` (planned by an earlier stage, or stored);
    an `InputError` when the layer has none."""
    info = catalog.info(join_url(supervoxels, GRAPH_FOLDER))
    if info is None:
        raise InputError(
            f"{supervoxels} has no region graph ({GRAPH_FOLDER}/info): give the supervoxel "
            "layer a watershed-mode segment wrote, or run segment first"
        )
    return GraphManifest.from_info(info, supervoxels)


def _plan(label: str, stage: str, spec: dict, grid: ChunkGrid, job: ChunkJob, **kw) -> StagePlan:
    return StagePlan(label=label, stage=stage, version=VERSION, spec=spec, grid=grid, job=job, **kw)


def graph_plans(
    graph: GraphManifest, supervoxels: Layer, source: Layer, work: str, fill_missing: bool
) -> list[StagePlan]:
    """Contacts per chunk, then each level of the octree; the last writes the manifest."""
    name = supervoxels.url.rstrip("/").rsplit("/", 1)[-1]
    spec = {"graph": graph.identity}
    ctx = supervoxels.context
    out = (Output(supervoxels.url, GRAPH_FOLDER),)
    first = ChunkGraphJob(
        supervoxels=supervoxels,
        source=source,
        grid=graph.grid,
        graph_url=graph.url,
        work_url=work,
        fill_missing=fill_missing,
    )
    label = f"graph {name}: chunk contacts"
    used = {"outputs": out, "work": (work,)}
    plans = [_plan(label, "graph", {**spec, "level": 0}, graph.grid, first, **used)]
    for level in range(1, graph.levels + 1):
        job = NodeGraphJob(
            level=level,
            child_grid=graph.level_grid(level - 1),
            chunk_grid=graph.grid,
            graph_url=graph.url,
            work_url=work,
            context=ctx,
        )
        label = f"graph {name}: level {level}/{graph.levels}"
        grid = graph.level_grid(level)
        plans.append(_plan(label, "graph", {**spec, "level": level}, grid, job, **used))
    last = plans[-1]
    return [*plans[:-1], _replace_final(last, {graph.url: graph.info()})]


def _replace_final(plan: StagePlan, infos: dict[str, dict]) -> StagePlan:
    return replace(plan, final_infos={**plan.final_infos, **infos})


def merge_rule(params: Any, threshold: float) -> MergeRule:
    """The rule of a stage's params (`merge_size_penalty`, `merge_size_floor`) at `threshold`."""
    sizes = {"size_penalty": params.merge_size_penalty, "size_floor": params.merge_size_floor}
    return MergeRule(threshold=threshold, **sizes)


def agglomeration_record(graph: GraphManifest, rule: MergeRule, output: str) -> dict[str, Any]:
    """What the info of the segmentation at `output` says of its agglomeration
    (`AGGLOMERATION_KEY`): its supervoxels (``../name`` beside it, so a run folder can move),
    the graph's identity and octree levels, the merge rule, and where its supervoxel →
    segment table is."""
    parent, supervoxels = output.rstrip("/").rpartition("/")[0], graph.supervoxels.rstrip("/")
    beside = supervoxels.rpartition("/")[0] == parent
    return {
        "supervoxels": "../" + supervoxels.rpartition("/")[2] if beside else supervoxels,
        "graph": graph.identity,  # a mapping merged from another graph is stale
        "levels": graph.levels,
        "merge_threshold": rule.threshold,
        "merge_size_penalty": rule.size_penalty,
        "merge_size_floor": rule.size_floor,
        "mapping": MAPPING_FOLDER,
    }


def supervoxels_of(record: dict[str, Any], segmentation: str) -> str:
    """The URL of the supervoxel layer an agglomeration record names."""
    name = str(record["supervoxels"])
    if name.startswith("../"):
        return segmentation.rstrip("/").rpartition("/")[0] + "/" + name[3:]
    return name


def _rule_spec(graph: GraphManifest, rule: MergeRule, edits: Edits) -> dict[str, Any]:
    spec: dict[str, Any] = {"graph": graph.identity, **rule.__dict__}
    if edits:
        spec["edits"] = edits.digest()
    return spec


def work_folder(graph: GraphManifest, rule: MergeRule, root: str, edits: Edits) -> str:
    """Where the maps of one rule (with the edits) go, under the run's `root`."""
    agg_id = identity("agglomerate", VERSION, _rule_spec(graph, rule, edits))
    return join_url(root, "intermediate", "agglomerate", agg_id)


def _warn_edits(_chunk: Chunk, result: dict) -> None:
    """The top node's report on the edits, for people."""
    for k in result.get("unseparated_splits", []):
        log.warning(
            "edit split %d did not separate its sides: other supervoxels join them; name more "
            "supervoxels of each side",
            k,
        )
    if result.get("unknown_supervoxels"):
        log.warning("edits name supervoxels the graph lacks: %s", result["unknown_supervoxels"])


def agglomerate_plans(
    graph: GraphManifest,
    rule: MergeRule,
    root: str,
    context: StorageContext,
    edits: Edits = NO_EDITS,
) -> list[StagePlan]:
    """The merge steps, level 0 to the top, into the rule's `work_folder`."""
    spec = _rule_spec(graph, rule, edits)
    name = graph.supervoxels.rstrip("/").rsplit("/", 1)[-1]
    work = work_folder(graph, rule, root, edits)
    plans = []
    for level in range(graph.levels + 1):
        job = AgglomerateJob(
            level=level,
            top=graph.levels,
            child_grid=graph.level_grid(level - 1) if level else None,
            graph_url=graph.url,
            rule=rule,
            work_url=work,
            context=context,
            edits=edits,
        )
        label = f"agglomerate {name}@{rule.threshold:g}: level {level}/{graph.levels}"
        step = {**spec, "level": level}
        top = DriverHooks(on_result=_warn_edits) if level == graph.levels else DriverHooks()
        grid = graph.level_grid(level)
        plans.append(_plan(label, "agglomerate", step, grid, job, hooks=top, work=(work,)))
    return plans


def mapping_plan(
    graph: GraphManifest,
    rule: MergeRule,
    root: str,
    target: str,
    context: StorageContext,
    edits: Edits = NO_EDITS,
) -> StagePlan:
    """The supervoxel → segment table, under the segmentation layer at `target`."""
    work = work_folder(graph, rule, root, edits)
    job = MappingJob(
        graph_url=graph.url, work_url=work, mapping_url=target, top=graph.levels, context=context
    )
    spec = {**_rule_spec(graph, rule, edits), "mapping": target}
    label = f"agglomerate {target.rstrip('/').rsplit('/', 1)[-1]}: mapping table"
    used = {"outputs": (Output(target, MAPPING_FOLDER),), "work": (work,)}
    return _plan(label, "agglomerate-mapping", spec, graph.grid, job, **used)


def relabel_plan(
    graph: GraphManifest,
    rule: MergeRule,
    root: str,
    layers: tuple[Layer, Layer],
    edits: Edits = NO_EDITS,
) -> StagePlan:
    """The supervoxels relabelled through the maps into the segmentation (`layers`: supervoxels,
    segmentation); the driver reports how much of it the largest segment holds."""
    supervoxels, target = layers
    work = work_folder(graph, rule, root, edits)
    job = RelabelJob(
        source=supervoxels,
        target=target,
        work_url=work,
        map_dir=MAPS,
        levels=tuple(range(graph.levels + 2)),  # and the edits' joins
        top_k=TOP_K,
    )
    spec = {**_rule_spec(graph, rule, edits), "output": target.url}
    name = target.url.rstrip("/").rsplit("/", 1)[-1]
    knob = ("merge_threshold", rule.threshold)
    return _plan(
        f"agglomerate {name}: relabel",
        "agglomerate-relabel",
        spec,
        graph.grid,
        job,
        layer_infos={target.url: target.info},
        outputs=(Output(target.url),),
        hooks=size_hooks(target.url, knob, len(graph.grid)),
        work=(work,),
    )


def segment_merges(
    graph: GraphManifest,
    rule: MergeRule,
    layers: tuple[Layer, Layer, Layer],
    *,
    work: str,
    root: str,
    fill_missing: bool,
) -> list[StagePlan]:
    """`segment`'s steps after stitching: the graph of the supervoxels (measured on the
    source), merges from it, the mapping table and the output; `layers` are (supervoxels,
    source, output), `work` is segment's work folder, `root` the run's output root."""
    supervoxels, source, target = layers
    plans = graph_plans(graph, supervoxels, source, work, fill_missing)
    return [
        *plans,
        *agglomerate_plans(graph, rule, root, target.context),
        mapping_plan(graph, rule, root, target.url, target.context),
        relabel_plan(graph, rule, root, (supervoxels, target)),
    ]
