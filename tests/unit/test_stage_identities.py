"""Stage identities do not change unless a change means them to, so a run resumes across code
changes that move code around.

`data/stage_identities.json` holds, for two fixed configs (every stage, and variants of each),
the label, ledger stage name, identity, chunk count and a hash of the chunk ids of every plan.
It was written before the re-layout of the packages (issue 15) and written again when
identities came to include the lineage of their inputs (issue 16: the writers of the layers a
stage reads; the fingerprint of ingest's source files, whose times are fixed here). Planning
writes nothing and reads no layer: the output root does not exist, and ingest's sources are
written here. `python tests/unit/test_stage_identities.py` rewrites the file after a change
that is meant to change identities (say so in the commit).
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run

FIXTURE = json.loads((Path(__file__).parent / "data" / "stage_identities.json").read_text())


def chunk_ids_digest(grid) -> str:
    return hashlib.sha256(" ".join(c.id for c in grid).encode()).hexdigest()[:16]


def write_sources() -> None:
    """The fixture's image stacks, at the relative paths its configs name."""
    for name, (shape, dtype) in FIXTURE["sources"].items():
        np.save(name, np.zeros(shape, dtype))
        os.utime(name, ns=(1_700_000_000 * 10**9,) * 2)  # the fingerprint includes the mtime


@pytest.fixture
def sources(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_sources()


def planned(config: dict) -> list[dict]:
    plans = plan_run(parse_config(config))
    return [
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


@pytest.mark.parametrize("case", range(len(FIXTURE["configs"])))
def test_plans_keep_the_recorded_identities(sources, case):
    recorded = FIXTURE["configs"][case]
    assert planned(recorded["config"]) == recorded["plans"]


if __name__ == "__main__":  # rewrite the fixture (see the module doc)
    import tempfile

    fixture_file = Path(__file__).parent / "data" / "stage_identities.json"
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        write_sources()
        for recorded in FIXTURE["configs"]:
            recorded["plans"] = planned(recorded["config"])
    fixture_file.write_text(json.dumps(FIXTURE, indent=1) + "\n")
