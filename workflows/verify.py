"""Markers are checked against the data: a finished chunk whose objects are gone or changed is
not finished.

A chunk's done-marker lists the objects its task wrote, with their stored sizes (see
`petavox.workflows.ledger`). A bucket lifecycle rule, a person or a tool may delete or replace
them later. One listing per folder of names and sizes (never the data) tells which finished
chunks lost or changed an object under the plan's outputs. Resume recomputes them; `petavox
verify` reports them. Work folders (``intermediate/``) are not checked: deleting them after a
run is allowed, and a step that needs a missing one names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from petavox.tasks.core import objects
from petavox.workflows.ledger import Ledger
from petavox.workflows.plan import Output, StagePlan, StageSteps

UNRECORDED = "its done-marker does not list the objects it wrote (an older petavox wrote it)"


def output_roots(outputs: Iterable[Output]) -> tuple[str, ...]:
    """URL prefixes of the objects under `outputs` (for ``str.startswith``)."""
    return tuple(output.url.rstrip("/") + "/" for output in outputs)


def recorded_objects(record: dict) -> Iterator[tuple[str, str, str, int]]:
    """(layer URL, key, full path, stored size) of each object a done-marker lists."""
    for url, sizes in record["objects"].items():
        for name, size in sizes.items():
            yield url, name, f"{url.rstrip('/')}/{name}", size


def chunks_with_bad_objects(
    plan: StagePlan, key: str, done: Iterable[str], ledger: Ledger
) -> dict[str, str]:
    """Finished chunks of `plan` (ids in `done`, markers under ledger key `key`) with an object
    under the plan's outputs missing or of another size than written, each with what is wrong.

    An object written by several chunks is expected as the last of them wrote it."""
    done = sorted(done)
    if not plan.outputs or not done:
        return {}
    roots = output_roots(plan.outputs)
    bad: dict[str, str] = {}
    last: dict[tuple[str, str], tuple[float, int, str, str]] = {}  # (when, size, chunk, path)
    for chunk_id, record in ledger.records(plan.stage, key, done).items():
        if record is None or "objects" not in record:
            bad[chunk_id] = UNRECORDED
            continue
        for url, name, path, size in recorded_objects(record):
            if path.startswith(roots):
                when = (record.get("finished", 0.0), size, chunk_id, path)
                last[(url, name)] = max(last.get((url, name), when), when)
    folders: dict[tuple[str, str], dict[str, int]] = {}
    for (url, name), (_, size, chunk_id, path) in sorted(last.items()):
        folder = name.rpartition("/")[0] + "/" if "/" in name else ""
        if (url, folder) not in folders:
            folders[(url, folder)] = objects.list_sizes(url, folder, ledger.context)
        found = folders[(url, folder)].get(name)
        if found != size and chunk_id not in bad:
            what = "is missing" if found is None else f"has {found} bytes, {size} written"
            bad[chunk_id] = f"{path} {what}"
    return bad


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
