"""A synthetic boundary map ingested and segmented on the test session's Ray: a run folder with
supervoxels, their region graph and a segmentation, for the agglomeration's consumers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from petavox.tasks.core.layers import Layer
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.segment.agglomerate_jobs import read_mapping
from petavox.tasks.segment.region_graph import read_columns
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


LEVELS = 8  # more octree levels than test volumes have: read every part


def read_volume(folder: Path, name: str) -> np.ndarray:
    layer = Layer.open(f"file://{folder}/{name}")
    return layer.read(layer.bounds(0))


def graph_edges(folder: Path, supervoxels: str) -> list[tuple[int, int, float]]:
    """(sv_a, sv_b, mean affinity) of every pair in the supervoxels' region graph."""
    url = f"file://{folder}/{supervoxels}/region_graph"
    t = read_columns(url, "edges", LEVELS, ("sv_a", "sv_b", "affinity_mean"), StorageContext())
    return list(zip(t["sv_a"].tolist(), t["sv_b"].tolist(), t["affinity_mean"].tolist()))


def clean_split(folder: Path, segmentation: str, supervoxels: str, threshold: float):
    """Two supervoxels that are a whole segment, joined to each other strongly and to nothing
    else: cut apart, neither can merge with anything (every other edge of theirs scores at
    least the threshold), so the split changes that segment only. None if there is none."""
    svs, segments = read_mapping(f"file://{folder}/{segmentation}", LEVELS, StorageContext())
    edges = graph_edges(folder, supervoxels)
    members: dict[int, list[int]] = {}
    for sv, seg in zip(svs.tolist(), segments.tolist()):
        members.setdefault(seg, []).append(sv)
    for _, group in sorted(members.items()):
        if len(group) != 2:
            continue
        outside = [1 - m for a, b, m in edges if (a in group) != (b in group)]
        if all(score >= threshold for score in outside):
            return group[0], group[1]
    return None


@dataclass(frozen=True)
class EditCase:
    """A split of one merged object (two supervoxels) and a join of two others, with the
    segmentation and supervoxels before the edits."""

    before: np.ndarray
    supervoxels: np.ndarray
    split: tuple[int, int]  # supervoxel ids
    join: tuple[int, int]  # supervoxel ids
    segments: tuple[int, int, int]  # before: the split one, the two joined

    @classmethod
    def of(cls, folder: Path, segmentation: str, supervoxels: str, threshold: float):
        before = read_volume(folder, segmentation)
        svs = read_volume(folder, supervoxels)
        split = clean_split(folder, segmentation, supervoxels, threshold)
        assert split is not None, "no two-supervoxel segment to split"
        cut = int(before[svs == split[0]][0])
        others = [int(s) for s in np.unique(before) if s not in (0, cut)]
        j1, j2 = others[0], others[-1]
        join = (int(svs[before == j1][0]), int(svs[before == j2][0]))
        return cls(before, svs, split, join, (cut, j1, j2))

    def write(self, path: Path) -> Path:
        a, b = self.split
        path.write_text(json.dumps({"join": [list(self.join)], "split": [{"a": [a], "b": [b]}]}))
        return path

    def check(self, after: np.ndarray) -> None:
        """Exactly the three objects changed: one cut in two, two made one."""
        before, svs = self.before, self.supervoxels
        cut, j1, j2 = self.segments
        touched = np.isin(before, self.segments)
        np.testing.assert_array_equal(after[~touched], before[~touched])
        assert len(np.unique(after[before == cut])) == 2
        assert after[svs == self.split[0]][0] != after[svs == self.split[1]][0]
        assert len(np.unique(after[np.isin(before, [j1, j2])])) == 1
