"""`petavox clean OUTPUT_URL`: remove the work files (``intermediate/``) of finished stages.

Stages keep work files under ``<output>/intermediate/<stage>/<id>/`` (face slabs, stitching and
merge maps, section flows, shard buckets) that only their own later steps read; each plan names
the folders it uses (`StagePlan.work`). Clean plans every stage the output's ledger remembers, as
`petavox verify` does, and judges each folder there:

- used by a finished stage (every step with a ledger has all its chunks and its global step
  done, and no finished chunk lost an object): removed;
- used by no remembered stage, or only by stages whose products a later run took over (earlier
  parameters, an earlier input): stale, removed;
- used by an unfinished stage: a resume reads it, so clean refuses (`InputError`, exit 2) and
  removes nothing. So it does when a remembered stage cannot be planned (its input is gone or
  not written yet) and a folder no finished stage uses is there: that stage might need it.

Clean holds the output's driver lease (`petavox.workflows.lease`) while it judges and removes,
so no run can start meanwhile, and refuses while one holds it; `--dry-run` only reads. Nothing
outside ``intermediate/`` is touched, and a finished stage reruns without its work files (the
resume's check looks at the products only, see `petavox.workflows.verify`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pydantic import ValidationError

from petavox.tasks.core import objects
from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import join_url, normalize_url
from petavox.workflows.config import RunConfig, StorageConfig
from petavox.workflows.lease import DriverLease, OutputBusyError
from petavox.workflows.ledger import Ledger
from petavox.workflows.plan import StageSteps
from petavox.workflows.provenance import epoch_of
from petavox.workflows.verify import chunks_with_bad_objects, remembered_stages

WORK = "intermediate"


@dataclass(frozen=True, kw_only=True)
class StageUse:
    """A remembered stage as clean sees it: the work folders it uses and, if it still needs
    them, why (`needs`)."""

    name: str
    work: tuple[str, ...] = ()
    needs: str = ""  # the step that is not done ("" when the stage is finished)
    planned: bool = True  # False: it cannot be planned now (`needs` says why)
    replaced: bool = False  # another run took its products over: nothing of it stands


@dataclass(frozen=True, kw_only=True)
class WorkFolder:
    """A folder ``intermediate/<stage>/<id>`` with what it holds."""

    url: str
    objects: int
    size: int  # stored bytes
    users: tuple[str, ...] = ()  # the finished stages that used it; none: stale


@dataclass(frozen=True, kw_only=True)
class CleanResult:
    output: str
    folders: tuple[WorkFolder, ...]  # removed (with `dry_run`: would be)
    dry_run: bool

    @property
    def freed(self) -> int:
        return sum(f.size for f in self.folders)


def overlaps(folder: str, work: str) -> bool:
    """One folder URL is the other or lies inside it."""
    a, b = folder.rstrip("/"), work.rstrip("/")
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def unfinished_step(steps: StageSteps, epoch: str | None, ledger: Ledger) -> str:
    """The first step of the stage that is not done, with how far it got ("" if none is): one
    with a ledger that lacks chunks or its global step, or whose finished chunks lost objects
    (a resume recomputes those, and may read the work files to do so)."""
    from petavox.workflows.runner import ledger_key  # the runner loads the executor

    for plan in steps.plans:
        if not plan.use_ledger:
            continue
        key, total = ledger_key(plan, epoch), len(plan.grid)
        finished = ledger.finished(plan.stage, key, tuple(plan.grid.grid_shape))
        if finished.count < total:
            return f"{plan.label}: {finished.count}/{total} chunks done"
        if plan.global_step is not None and not finished.global_done:
            return f"{plan.label}: its global step has not run"
        lost = chunks_with_bad_objects(plan, key, finished, ledger)
        if lost.count or lost.global_bad:
            return f"{plan.label}: finished work lost objects (e.g. {lost.example})"
    return ""


def stage_name(steps: StageSteps, output: str) -> str:
    """The stage and its layers (else the parts of layers it writes), for people: ``segment
    (supervoxels, segmentation)``, ``mesh (segmentation/mesh)``."""
    names = []
    layers = [o for o in steps.outputs if not o.part]
    for product in layers or steps.outputs:
        url = product.url.removeprefix(output.rstrip("/") + "/")
        names.append(f"{url}/{product.part}" if product.part else url)
    return f"{steps.name} ({', '.join(dict.fromkeys(names))})"


def stage_uses(entries: Sequence[dict], output: str, storage: StorageConfig) -> list[StageUse]:
    """The stages the output's ledger remembers (their config `entries`), each planned alone as
    `petavox verify` plans it; those without work folders are left out."""
    from petavox.workflows.pipeline import plan_stages

    ledger = Ledger(join_url(output, "ledger"), storage.context())
    uses = []
    for entry in entries:
        data = {"output": output, "stages": [entry], "storage": storage.model_dump()}
        try:
            (steps,) = plan_stages(RunConfig.model_validate(data))
        except (InputError, ValidationError) as exc:
            why = str(exc).splitlines()[0]
            uses.append(StageUse(name=str(entry.get("stage")), needs=why, planned=False))
            continue
        if not steps.work:
            continue
        name, epoch = stage_name(steps, output), epoch_of(steps, ledger.context)
        if epoch is False:  # its products hold a later run's data: its work is stale
            uses.append(StageUse(name=name, work=steps.work, replaced=True))
            continue
        needs = unfinished_step(steps, epoch, ledger)
        uses.append(StageUse(name=name, work=steps.work, needs=needs))
    return uses


def work_folders(output: str, storage: StorageConfig) -> dict[str, WorkFolder]:
    """The folders ``intermediate/<stage>/<id>`` under `output` by URL, from one listing (a
    stray object outside such a folder is left alone)."""
    found: dict[str, list[int]] = {}
    for key, size in objects.list_tree(output, WORK + "/", storage.context()).items():
        parts = key.split("/")
        if len(parts) < 4:
            continue
        counts = found.setdefault(join_url(output, *parts[:3]), [0, 0])
        counts[0] += 1
        counts[1] += size
    return {url: WorkFolder(url=url, objects=n, size=b) for url, (n, b) in sorted(found.items())}


def judge(output: str, folders: Sequence[WorkFolder], uses: Sequence[StageUse]) -> list[WorkFolder]:
    """The folders to remove, each with the finished stages that used it; an `InputError`
    naming every stage that still needs one (then nothing may be removed)."""
    unplanned = [u for u in uses if not u.planned]
    needed: dict[StageUse, list[str]] = {}  # stage -> the folders it needs
    remove = []
    for folder in folders:
        users = [u for u in uses if not u.replaced and any(overlaps(folder.url, w) for w in u.work)]
        waiting = [u for u in users if u.needs]
        for use in waiting or (unplanned if not users else []):
            needed.setdefault(use, []).append(folder.url.removeprefix(output + "/"))
        if not waiting:
            remove.append(replace(folder, users=tuple(dict.fromkeys(u.name for u in users))))
    if needed:
        raise InputError(refusal(output, needed))
    return remove


def refusal(output: str, needed: dict[StageUse, list[str]]) -> str:
    """Which stages need which folders, and what to do."""
    lines = [f"{output}: not cleaned, nothing removed: unfinished stages need their work files"]
    for use, folders in needed.items():
        why = use.needs if use.planned else f"it cannot be planned: {use.needs}"
        lines += [f"  {use.name}: {why}", *(f"    {folder}" for folder in folders)]
    lines.append("finish the run with `petavox run CONFIG` (or the stage's command), then clean")
    if not all(use.planned for use in needed):
        lines.append(
            "(a stage that cannot be planned might need any work folder no finished stage uses; "
            "if it will not run again, delete such folders yourself)"
        )
    return "\n".join(lines)


def check_idle(lease: DriverLease, output: str) -> None:
    """Refuse when a live driver holds the output's lease (without taking it)."""
    holder = lease.read()
    if holder is not None and not holder.expired(time.time()):
        raise OutputBusyError(
            f"a driver ({holder.holder()}) is running on {output}; clean once it has stopped"
        )


def clean_output(
    output: str,
    storage: StorageConfig,
    *,
    dry_run: bool,
    report: Callable[[WorkFolder], None] = lambda folder: None,
) -> CleanResult:
    """Remove the work folders under `output` that no unfinished stage needs (`dry_run`: only
    say which), calling `report` after each; an `InputError` and nothing removed when one is
    needed, an `OutputBusyError` while a driver runs on the output."""
    output = normalize_url(output)
    context = storage.context()
    ledger = Ledger(join_url(output, "ledger"), context)
    if not remembered_stages(ledger):  # before the lease: write nothing into a wrong folder
        raise InputError(
            f"{output}: its ledger remembers no stage (ledger/stages/): not a petavox run's "
            "output (a typo?), or no stage has written to it; nothing removed"
        )
    lease = DriverLease(output, context)
    if dry_run:
        check_idle(lease, output)
    else:
        lease.acquire()
    try:
        folders = list(work_folders(output, storage).values())
        uses = stage_uses(remembered_stages(ledger), output, storage) if folders else []
        remove = judge(output, folders, uses)
        for folder in remove:
            if not dry_run:
                lease.check()
                objects.delete_tree(output, folder.url[len(output) + 1 :] + "/", context)
            report(folder)
    finally:
        if not dry_run:
            lease.release()
    return CleanResult(output=output, folders=tuple(remove), dry_run=dry_run)


# ---- command line --------------------------------------------------------------------------
def cmd_clean(args: argparse.Namespace) -> int:
    from petavox.workflows.costs.report import size

    output = normalize_url(args.output)
    storage = StorageConfig(s3_endpoint=args.s3_endpoint)
    verb = "would remove" if args.dry_run else "removed"

    def line(folder: WorkFolder) -> None:
        used = (
            f"work of {', '.join(folder.users)}"
            if folder.users
            else "stale: no current stage uses it"
        )
        where = folder.url[len(output) + 1 :]
        amount = f"{folder.objects} objects, {size(folder.size)} ({folder.size:,} bytes)"
        print(f"  {verb} {where}: {amount}; {used}", flush=True)

    print(f"output {output}")
    result = clean_output(output, storage, dry_run=args.dry_run, report=line)
    if not result.folders:
        print("  no work files to remove")
        return 0
    total = f"{size(result.freed)} ({result.freed:,} bytes) in {len(result.folders)} folder(s)"
    print(f"{'would free' if args.dry_run else 'freed'} {total}")
    return 0


def add_clean_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clean",
        help="remove the work files (intermediate/) of finished stages; refuses while a stage "
        "that needs them is unfinished",
    )
    p.add_argument("output", metavar="OUTPUT_URL", help="run output root")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be removed; remove nothing"
    )
    p.add_argument("--s3-endpoint", help="S3-compatible endpoint (MinIO etc.) for s3:// URLs")
    p.set_defaults(func=cmd_clean)
