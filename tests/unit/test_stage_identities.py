"""Stage identities do not change with the code's layout, so a run started before resumes after.

`data/stage_identities.json` was written by the code as it stood before the re-layout of the
packages (issue 15): for two fixed configs (every stage, and variants of each), the label,
ledger stage name, identity, chunk count and a hash of the chunk ids of every plan. A chunk is
skipped on a rerun when its marker sits under ``ledger/<stage>/<identity>/<chunk id>``, so equal
values here mean the markers of an earlier run are found. Planning writes nothing and reads no
layer: the output root does not exist, and ingest's sources are written here.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run

FIXTURE = json.loads((Path(__file__).parent / "data" / "stage_identities.json").read_text())


def chunk_ids_digest(grid) -> str:
    return hashlib.sha256(" ".join(c.id for c in grid).encode()).hexdigest()[:16]


@pytest.fixture
def sources(tmp_path, monkeypatch):
    """The fixture's image stacks, at the relative paths its configs name."""
    monkeypatch.chdir(tmp_path)
    for name, (shape, dtype) in FIXTURE["sources"].items():
        np.save(name, np.zeros(shape, dtype))


@pytest.mark.parametrize("case", range(len(FIXTURE["configs"])))
def test_plans_keep_the_identities_recorded_before_the_re_layout(sources, case):
    recorded = FIXTURE["configs"][case]
    plans = plan_run(parse_config(recorded["config"]))
    planned = [
        {
            "label": p.label,
            "stage": p.stage,
            "identity": p.identity if p.use_ledger else "",  # no markers: no resume
            "ledger": p.use_ledger,
            "chunks": len(p.grid),
            "chunk_ids": chunk_ids_digest(p.grid),
        }
        for p in plans
    ]
    assert planned == recorded["plans"]
