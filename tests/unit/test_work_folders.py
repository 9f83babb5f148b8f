"""Every plan declares the work folders its job uses (`StagePlan.work`), so `petavox clean`
knows which stage needs which folder under ``intermediate/``: the jobs (and global steps) of
every stage in the stage-identity fixture's configs, and of an `agglomerate` stage, are searched
for work URLs (a `work_url` field anywhere in them, or any URL under ``intermediate/``). A
future stage that forgets to declare its folder fails here."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from typing import Any

import pytest
from test_stage_identities import FIXTURE, sources  # noqa: F401  (`sources` is a fixture)

from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run

AGGLOMERATE = {"stage": "agglomerate", "input": "supervoxels", "merge_threshold": [0.5]}


def configs() -> list[dict]:
    """The fixture's configs; the first with an `agglomerate` stage after its segment."""
    first, *rest = (recorded["config"] for recorded in FIXTURE["configs"])
    return [{**first, "stages": [*first["stages"], AGGLOMERATE]}, *rest]


def work_urls(value: Any, seen: set[int] | None = None) -> Iterator[str]:
    """Every `work_url` field in `value` (dataclasses, containers and partials, followed all
    the way down), and every other string naming something under ``intermediate/``."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, str):
        if "/intermediate/" in value:
            yield value
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            found = getattr(value, field.name)
            if field.name == "work_url":
                assert isinstance(found, str) and found, f"{type(value).__name__}.work_url"
            yield from work_urls(found, seen)
    elif isinstance(value, tuple | list | set | frozenset):
        for item in value:
            yield from work_urls(item, seen)
    elif isinstance(value, dict):
        for item in value.values():
            yield from work_urls(item, seen)
    elif isinstance(value, functools.partial):
        yield from work_urls((value.func, value.args, value.keywords), seen)


def inside(url: str, folder: str) -> bool:
    return url == folder or url.startswith(folder.rstrip("/") + "/")


@pytest.mark.parametrize("case", range(len(FIXTURE["configs"])))
def test_every_plan_declares_the_work_folders_its_job_uses(sources, case):  # noqa: F811
    config = parse_config(configs()[case])
    root = config.output + "/intermediate/"
    users = set()
    for plan in plan_run(config):
        used = set(work_urls(plan.job)) | set(work_urls(plan.global_step))
        undeclared = {u for u in used if not any(inside(u, w) for w in plan.work)}
        assert not undeclared, f"{plan.label}: uses {undeclared}, declares {plan.work}"
        assert all(w.startswith(root) and w.count("/") == root.count("/") + 1 for w in plan.work)
        assert all(any(inside(u, w) for u in used) for w in plan.work), plan.label  # none idle
        assert plan.use_ledger or not plan.work, f"{plan.label} reruns every time: no work"
        if plan.work:
            users.add(plan.work[0].removeprefix(root).split("/")[0])
    expected = {"align", "segment", "agglomerate", "skeletonize", "connectome"}
    assert users >= expected | ({"mesh"} if case == 1 else set())  # sharded meshes: config 1
