from petavox.workflows.ledger import Ledger
from petavox.workflows.plan import identity


def test_identity_changes_with_params_and_version_only():
    spec = {"mips": 2, "factor": [2, 2, 1]}
    assert identity("downsample", 1, spec) == identity(
        "downsample", 1, dict(reversed(spec.items()))
    )
    assert identity("downsample", 1, spec) != identity("downsample", 1, {**spec, "mips": 3})
    assert identity("downsample", 1, spec) != identity("downsample", 2, spec)
    assert identity("downsample", 1, spec) != identity("ingest", 1, spec)


def test_markers_are_listed_per_stage_identity(tmp_path):
    ledger = Ledger(f"file://{tmp_path}/ledger")
    assert ledger.done("ingest", "abc") == set()
    ledger.record_params("ingest", "abc", {"x": 1})
    ledger.mark_done("ingest", "abc", "0_0_0", {"seconds": 1.0})
    ledger.mark_done("ingest", "abc", "1_0_0", {"seconds": 1.0})
    ledger.mark_done("ingest", "def", "2_0_0", {"seconds": 1.0})
    assert ledger.done("ingest", "abc") == {"0_0_0", "1_0_0"}
    assert ledger.done("ingest", "def") == {"2_0_0"}
    assert ledger.done("downsample", "abc") == set()
