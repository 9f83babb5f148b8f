"""What the ledger of a finished run says about its steps' writes."""

from __future__ import annotations

from pathlib import Path

from petavox.workflows.config import RunConfig
from petavox.workflows.ledger import Ledger, Segment
from petavox.workflows.pipeline import ledger_for, plan_stages
from petavox.workflows.provenance import epoch_of
from petavox.workflows.runner import ledger_key
from petavox.workflows.verify import output_roots, recorded_objects


def undeclared_writes(config: RunConfig) -> list[str]:
    """Objects a step wrote under one of its stage's products without declaring that product
    among its own `outputs` (resume and `verify` would never check them), and objects two
    chunks of one step wrote (whichever ran last would win)."""
    ledger: Ledger = ledger_for(config)
    found = []
    for steps in plan_stages(config):
        roots = output_roots(steps.outputs)
        epoch = epoch_of(steps, ledger.context)
        for plan in steps.plans:
            if not plan.use_ledger:
                continue
            own = output_roots(plan.outputs)
            key = ledger_key(plan, epoch)
            records = step_records(ledger, plan.stage, key, tuple(plan.grid.grid_shape))
            assert records, f"{plan.label}: no finished chunks recorded"
            writer: dict[str, int] = {}
            for position, record in records.items():
                for _, _, path, _ in recorded_objects(record):
                    if path.startswith(roots) and not path.startswith(own):
                        found.append(f"{plan.label}: {path} (not declared)")
                    if writer.setdefault(path, position) != position:
                        found.append(f"{plan.label}: {path} (two chunks wrote it)")
    return found


def recorded_chunks(folder: Path) -> int:
    """How many distinct chunks the segments under a ledger folder (a stage's, or one identity's)
    record as finished (read from the files as they are, mid-run too)."""
    found = set()
    for path in folder.rglob("done/*.npz"):
        try:
            segment = Segment.from_bytes(path.read_bytes())
        except (OSError, ValueError):
            continue  # replaced while read
        found.update((path.parent.parent.name, p) for p in segment.chunks.tolist())
    return len(found)


def step_records(ledger: Ledger, stage: str, key: str, grid: tuple[int, ...]) -> dict[int, dict]:
    """Each finished position's last record, ``{"objects": {url: {key: size}}}``, and its
    result under ``"result"`` if the task returned a dict."""
    records: dict[int, dict] = {}
    for segment in ledger.segments(stage, key, grid):
        for i, position in enumerate(segment.chunks.tolist()):
            written: dict[str, dict[str, int]] = {}
            for url, name, size in segment.objects_of(i):
                written.setdefault(url, {})[name] = size
            records[position] = {"objects": written}
            if position in segment.results:
                records[position]["result"] = segment.results[position]
    return records


def recorded_results(folder: Path) -> list[dict]:
    """The dict results tasks returned, from the segments under a ledger folder."""
    found = []
    for path in folder.rglob("done/*.npz"):
        found.extend(Segment.from_bytes(path.read_bytes()).results.values())
    return found
