"""`petavox demo --tiles`: the demo's raw sections imaged as damaged tiles, montaged first.

Each misaligned raw section is cut into 3×3 overlapping tiles (`tasks/synthetic/tiles.py`:
stage errors, rotation, scale, lens, shading, noise) and the run starts with `montage` in place
of ingesting the raw stack. The stage errors are centred over each section, so the montage's
frame is the raw stack's and the ground-truth labels (ingested in that frame) stay registered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from petavox.tasks.montage.montage_jobs import SolveSectionJob, read_section
from petavox.tasks.synthetic.tiles import (
    TileCut,
    TileDamage,
    cut_tiles,
    placement_residuals,
    write_tiles,
)
from petavox.workflows.config import RunConfig
from petavox.workflows.pipeline import plan_run

MARGIN = 0  # tiles reach the volume's edges (a pixel or two beyond: edge pixels repeated)


def write_demo_tiles(raw_stack: str, folder: Path, seed: int) -> tuple[str, dict[int, TileCut]]:
    """Tiles of every section of the raw stack (.npy, z, y, x) and their manifest."""
    raw = np.load(raw_stack).transpose(2, 1, 0)
    cuts = {
        z: cut_tiles(
            raw[:, :, z], TileDamage(margin=MARGIN, centred_stage=True, seed=seed * 1000 + z)
        )
        for z in range(raw.shape[2])
    }
    return write_tiles(str(folder), cuts), cuts


def montage_stage(manifest: str, shape: tuple[int, int, int], resolution, ingest: dict) -> dict:
    """The config entry that montages the tiles into the `raw` layer, on the raw stack's grid."""
    return {
        "stage": "montage",
        "input": manifest,
        "output": "raw",
        "resolution": list(resolution),
        "frame": [[0, 0], [shape[0], shape[1]]],
        "storage_chunk": ingest["storage_chunk"],
        "chunk_shape": ingest["chunk_shape"],
        "mips": 0,
        **({"sharding": ingest["sharding"]} if "sharding" in ingest else {}),
    }


def print_montage_residual(config: RunConfig, cuts: dict[int, TileCut]) -> None:
    """How far the montage put the tiles from where they truly are (pixels)."""
    solve = plan_run(config, ["montage"])[0]
    if not isinstance(solve.job, SolveSectionJob):
        raise TypeError(f"the montage stage's first step is {solve.label}, not the solve")
    context = config.storage.context()
    found = []
    for z, cut in cuts.items():
        solved = read_section(solve.job.work_url, z, context)
        # the manifest lists tiles by position: pair them with the cut's by file name
        order = [int(u.rsplit("_t", 1)[1].split(".")[0]) for u in solved.urls]
        found.append(placement_residuals(solved.transforms, [cut.truth[k] for k in order]))
    every = np.concatenate(found)
    tiles = sum(len(c.tiles) for c in cuts.values())
    print(
        f"montage vs the known tile placement ({tiles} tiles, ±20 px stage errors, ±1° "
        f"rotations, 1.5 px lens): residual {np.sqrt((every**2).mean()):.2f} px RMS"
    )
