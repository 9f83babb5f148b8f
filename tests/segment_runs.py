"""A synthetic boundary map ingested and segmented on the test session's Ray: a run folder with
supervoxels, their region graph and a segmentation, for the agglomeration's consumers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petavox.tasks.synthetic.generator import SyntheticParams, boundary_from_labels, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run


def segmented_run(folder: Path, session, shape: tuple[int, int, int], segment: dict) -> Path:
    """`folder` after ingest (`boundary`) and the `segment` stage entry given."""
    volume = generate(SyntheticParams(shape=shape, seed=5))
    np.save(folder / "boundary.npy", boundary_from_labels(volume.labels, seed=5).transpose(2, 1, 0))
    ingest = {"stage": "ingest", "resolution": [8, 8, 8], "storage_chunk": [8, 8, 8]}
    stages = [{**ingest, "input": str(folder / "boundary.npy"), "output": "boundary"}, segment]
    run(
        parse_config({"output": f"file://{folder}", "stages": stages}),
        session=session,
        progress=False,
    )
    return folder
