"""`petavox demo --tiles`: the raw stack becomes tiles and a manifest, and the run montages them
into the raw layer on the stack's own grid (so the labels, ingested on it, stay registered)."""

from __future__ import annotations

import numpy as np

from petavox.tasks.montage.manifest import read_manifest
from petavox.workflows.demo import demo_config
from petavox.workflows.stages.montage import MontageParams


def test_the_demo_starts_from_tiles_of_every_raw_section(tmp_path):
    from petavox.tasks.synthetic.generator import SyntheticParams, generate
    from petavox.workflows.demo_tiles import write_demo_tiles

    raw = generate(SyntheticParams(shape=(120, 100, 3), seed=2)).raw
    stacks = {}
    for name in ("raw", "raw_labels", "raw_clefts"):
        stacks[name] = str(tmp_path / f"{name}.npy")
        np.save(stacks[name], np.ascontiguousarray(raw.transpose(2, 1, 0)))
    manifest, cuts = write_demo_tiles(stacks["raw"], tmp_path / "tiles", seed=0)
    entries = read_manifest(manifest)
    assert [e.section for e in entries] == [z for z in range(3) for _ in range(9)]
    for cut in cuts.values():  # the stage errors leave each section's frame where it was
        placed = np.array([t.forward(np.zeros((1, 2)))[0] for t in cut.truth])
        np.testing.assert_allclose(cut.stage.mean(axis=0), placed.mean(axis=0), atol=1e-9)
    config = demo_config(f"file://{tmp_path}/out", stacks, {}, tiles=manifest)
    first = config.stages[0]
    assert isinstance(first, MontageParams) and first.output == "raw"
    assert first.frame == ((0, 0), (120, 100))
    assert [s.stage for s in config.stages[:4]] == ["montage", "ingest", "ingest", "align"]
    plain = demo_config(f"file://{tmp_path}/out", stacks, {})
    assert plain.stages[0].stage == "ingest"
