"""The ledger is checked against the data: a finished chunk whose objects are gone or changed
is not finished.

A finished chunk's record in the ledger lists the objects its task wrote, with their stored
sizes (see `petavox.workflows.ledger`). A bucket lifecycle rule, a person or a tool may delete
or replace them later. One listing per folder of names and sizes (never the data) tells which
finished chunks lost or changed an object under the plan's outputs. Resume recomputes them;
`petavox verify` reports them. Work folders (``intermediate/``) are not checked: deleting them
after a run is allowed, and a step that needs a missing one names it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from petavox.tasks.core import objects
from petavox.tasks.core.storage import join_url
from petavox.workflows.ledger import Finished, Ledger
from petavox.workflows.plan import Output, StagePlan, StageSteps


def output_roots(outputs: Iterable[Output]) -> tuple[str, ...]:
    """URL prefixes of the objects under `outputs` (for ``str.startswith``)."""
    return tuple(output.url.rstrip("/") + "/" for output in outputs)


def recorded_objects(record: dict) -> Iterator[tuple[str, str, str, int]]:
    """(layer URL, key, full path, stored size) of each object a record lists."""
    for url, sizes in record["objects"].items():
        for name, size in sizes.items():
            yield url, name, join_url(url, name), size


@dataclass
class BadChunks:
    """Finished chunks (a mask over grid positions) and global step with an object missing or
    of another size than written, and what is wrong with one of them."""

    mask: np.ndarray
    global_bad: bool = False
    example: str = ""

    @property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))


class _Listings:
    """Stored sizes of the objects of each folder, listed once."""

    def __init__(self, context) -> None:
        self.context, self.folders = context, {}

    def size(self, url: str, name: str) -> int | None:
        folder = name.rpartition("/")[0] + "/" if "/" in name else ""
        if (url, folder) not in self.folders:
            self.folders[(url, folder)] = objects.list_sizes(url, folder, self.context)
        return self.folders[(url, folder)].get(name)


def _problem(listings: _Listings, url: str, name: str, size: int) -> str:
    """What is wrong with one recorded object ("" if nothing)."""
    found = listings.size(url, name)
    if found == size:
        return ""
    what = "is missing" if found is None else f"has {found} bytes, {size} written"
    return f"{join_url(url, name)} {what}"


def chunks_with_bad_objects(
    plan: StagePlan, key: str, finished: Finished, ledger: Ledger
) -> BadChunks:
    """Which finished chunks of `plan` (and its global step), recorded under ledger key `key`,
    have an object under the plan's outputs missing or of another size than written.

    Segments are read one at a time, newest first (a chunk recorded twice is judged by its last
    run); objects the global step rewrote are judged by its record alone."""
    bad = BadChunks(mask=np.zeros(len(finished.mask), bool))
    if not plan.outputs or not (finished.count or finished.global_done):
        return bad
    roots, listings = output_roots(plan.outputs), _Listings(ledger.context)
    rewritten: set[tuple[str, str]] = set()
    if finished.global_done:
        record = ledger.global_record(plan.stage, key) or {"objects": {}}
        for url, name, path, size in recorded_objects(record):
            rewritten.add((url, name))
            problem = path.startswith(roots) and _problem(listings, url, name, size)
            if problem:
                bad.global_bad, bad.example = True, bad.example or problem
    seen = np.zeros(len(finished.mask), bool)
    for segment in ledger.segments(plan.stage, key, plan.grid.grid_shape, newest_first=True):
        for i, position in enumerate(segment.chunks.tolist()):
            if seen[position] or not finished.mask[position]:
                continue
            seen[position] = True
            for url, name, size in segment.objects_of(i):
                if not join_url(url, name).startswith(roots) or (url, name) in rewritten:
                    continue
                problem = _problem(listings, url, name, size)
                if problem:
                    bad.mask[position], bad.example = True, bad.example or problem
                    break
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
