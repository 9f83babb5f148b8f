"""What the done-markers of a finished run say about its steps' writes."""

from __future__ import annotations

from petavox.workflows.config import RunConfig
from petavox.workflows.ledger import Ledger
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
            records = ledger.records(plan.stage, key, ledger.done(plan.stage, key))
            assert records, f"{plan.label}: no done-markers"
            writer: dict[str, str] = {}
            for chunk_id, record in records.items():
                assert record is not None and "objects" in record
                for _, _, path, _ in recorded_objects(record):
                    if path.startswith(roots) and not path.startswith(own):
                        found.append(f"{plan.label}: {path} (not declared)")
                    if writer.setdefault(path, chunk_id) != chunk_id:
                        found.append(f"{plan.label}: {path} (two chunks wrote it)")
    return found
