"""Markers are checked against the data: a finished chunk whose storage objects are gone is
not finished.

A chunk's done-marker says its task wrote its objects; a bucket lifecycle rule, a person or a
tool may delete them later. For each volume product of a plan (a layer's data or one of its
scales) the objects a chunk writes follow from its write box and the layer's chunking, so one
listing per scale folder (names only, never the data) tells which finished chunks lost
objects. Resume recomputes them; `petavox verify` reports them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from petavox.tasks.core import objects
from petavox.tasks.core.geometry import Box, Vec3
from petavox.tasks.core.layers import Layer, read_info
from petavox.tasks.core.storage import StorageContext
from petavox.workflows.ledger import Ledger
from petavox.workflows.plan import Output, StagePlan, StageSteps


def _mip_of(layer: Layer, output: Output) -> int | None:
    """The mip a volume product covers; None for a product that is not voxels (a mesh)."""
    if output.part == "":
        return 0
    if not output.part.startswith("scale:"):
        return None
    key = output.part.removeprefix("scale:")
    keys = [s["key"] for s in layer.info["scales"]]
    return keys.index(key) if key in keys else None


def _box_at(layer: Layer, box: Box, mip: int) -> Box:
    if mip == 0:
        return box
    ratio = [round(a / b) for a, b in zip(layer.resolution(mip), layer.resolution(0))]
    return box.scale_down(Vec3.of(ratio))


def chunks_missing_objects(
    plan: StagePlan, done: Iterable[str], context: StorageContext
) -> dict[str, list[str]]:
    """Finished chunks of `plan` (ids in `done`) with objects missing, each with one of them."""
    done = set(done)
    missing: dict[str, list[str]] = {}
    if not done:
        return missing
    for output in plan.outputs:
        info = read_info(output.url, context)
        if info is None:
            continue  # not a volume layer (a folder of tables): nothing to derive its keys from
        layer = Layer(output.url, info, context)
        mip = _mip_of(layer, output)
        if mip is None:
            continue
        folder = layer.scale(mip)["key"]
        listed = set(objects.list_keys(layer.url, f"{folder}/", context))
        for chunk in plan.grid:
            if chunk.id not in done:
                continue
            box = _box_at(layer, chunk.write_box, mip)
            gone = [k for k, _ in layer.storage_chunks(box, mip) if k not in listed]
            if gone:
                missing.setdefault(chunk.id, []).append(f"{layer.url}/{gone[0]}")
    return missing


STAGES_FOLDER = "stages"


def remember_stage(steps: StageSteps, ledger: Ledger) -> None:
    """Keep the stage's config entry in the ledger, so `verify OUTPUT` can plan it again."""
    if steps.outputs:
        key = f"{STAGES_FOLDER}/{steps.name}-{steps.identity}.json"
        if objects.get(ledger.url, key, ledger.context) is None:
            objects.put_json(ledger.url, key, dict(steps.params), ledger.context)


def remembered_stages(ledger: Ledger) -> list[dict]:
    """The config entries of every stage that wrote to the output, oldest first by name."""
    entries = []
    for key in sorted(objects.list_keys(ledger.url, f"{STAGES_FOLDER}/", ledger.context)):
        data = objects.get(ledger.url, key, ledger.context)
        if data:
            entries.append(json.loads(data))
    return entries
