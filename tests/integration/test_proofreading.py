"""`petavox proofreading` end to end on a real local Ray: a synthetic volume through `segment`,
then the command's webKnossos agglomerate file and Neuroglancer state, checked against the
volumes, the mapping table and the region graph."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from segment_runs import graph_edges, read_volume, segmented_run

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.storage import StorageContext
from petavox.tasks.segment.agglomerate_jobs import read_mapping
from petavox.workflows.cli import build_parser, main

pytestmark = pytest.mark.integration

CTX = StorageContext()
LEVELS = 8  # more octree levels than the volume has: read every part
# many small supervoxels (no smoothing) merged into fewer segments, some of one supervoxel
SEGMENT = {"stage": "segment", "halo": [16, 16, 16], "chunk_shape": [32, 32, 16]}
SEGMENT |= {"smoothing": 0.0, "merge_threshold": 0.7}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, ray_session):
    """A 64 × 64 × 16 synthetic boundary map, segmented in four chunks."""
    folder = tmp_path_factory.mktemp("proofreading")
    return segmented_run(folder, ray_session, (64, 64, 16), SEGMENT)


def proofreading(*argv: str) -> int:
    """The command's own function, through the registered parser."""
    args = build_parser().parse_args(["proofreading", *map(str, argv)])
    return args.func(args)


def graph_pairs(folder) -> dict[tuple[int, int], float]:
    """Every region-graph pair with its mean affinity, read from the Parquet parts."""
    return {(a, b): mean for a, b, mean in graph_edges(folder, "supervoxels")}


def test_the_command_writes_both_files_as_the_run_says(run_dir, capsys):
    out = run_dir / "proofread"
    status = proofreading(
        run_dir / "segmentation",
        "--webknossos",
        out / "supervoxels.hdf5",
        "--neuroglancer-state",
        out / "state.json",
        "--image",
        run_dir / "boundary",
    )
    assert status == 0
    printed = capsys.readouterr().out
    assert "petavox view" in printed and "--port 8000" in printed
    svs, segments = read_mapping(f"file://{run_dir}/segmentation", LEVELS, CTX)
    segment_of = dict(zip(svs.tolist(), segments.tolist()))
    groups = {}
    for sv, seg in segment_of.items():
        groups.setdefault(seg, set()).add(sv)
    assert len(svs) > 30 and 1 < len(groups) < len(svs)  # merged, not everything
    assert any(len(g) == 1 for g in groups.values())  # and some supervoxels alone
    check_webknossos_file(run_dir, out / "supervoxels.hdf5", segment_of, groups)
    state = json.loads((out / "state.json").read_text())
    image, supervoxels = state["layers"]
    assert image == {
        "type": "image",
        "source": "precomputed://http://127.0.0.1:8000/boundary",
        "name": "boundary",
    }
    assert supervoxels["type"] == "segmentation" and supervoxels["name"] == "supervoxels"
    assert supervoxels["source"] == "precomputed://http://127.0.0.1:8000/supervoxels"
    shown = [{int(s) for s in group} for group in supervoxels["equivalences"]]
    assert all(isinstance(s, str) for group in supervoxels["equivalences"] for s in group)
    assert sorted(map(sorted, shown)) == sorted(sorted(g) for g in groups.values() if len(g) > 1)


def check_webknossos_file(run_dir, path, segment_of: dict, groups: dict) -> None:
    """The file's agglomerates are the segments; its edges the graph's pairs inside one; its
    positions voxels of their supervoxels; through it the supervoxels are the segmentation."""
    labels, segmentation = read_volume(run_dir, "supervoxels"), read_volume(run_dir, "segmentation")
    with h5py.File(path, "r") as f:
        s2a = f["segment_to_agglomerate"][()]
        offsets = f["agglomerate_to_segments_offsets"][()].astype(np.int64)
        members = f["agglomerate_to_segments"][()]
        positions = f["agglomerate_to_positions"][()]
        edge_offsets = f["agglomerate_to_edges_offsets"][()].astype(np.int64)
        edges, affinities = f["agglomerate_to_edges"][()], f["agglomerate_to_affinities"][()]
    assert len(s2a) == max(segment_of) + 1 and len(offsets) == len(groups) + 2
    agglomerates = {
        frozenset(members[offsets[a] : offsets[a + 1]].tolist()) for a in range(1, len(groups) + 1)
    }
    assert agglomerates == {frozenset(g) for g in groups.values()}
    for i, sv in enumerate(members.tolist()):
        x, y, z = positions[i]
        assert labels[x, y, z] == sv  # a voxel of it
        a = s2a[sv]
        assert offsets[a] <= i < offsets[a + 1]
    inside = {}
    for a in range(1, len(groups) + 1):
        mine = members[offsets[a] : offsets[a + 1]]
        for (i, j), w in zip(
            edges[edge_offsets[a] : edge_offsets[a + 1]],
            affinities[edge_offsets[a] : edge_offsets[a + 1]],
        ):
            inside[(int(mine[i]), int(mine[j]))] = float(w)
    expected = {
        pair: np.float32(mean)
        for pair, mean in graph_pairs(run_dir).items()
        if segment_of[pair[0]] == segment_of[pair[1]]
    }
    assert len(expected) > 10 and inside == expected
    # the supervoxels through the file: one agglomerate per segment of the segmentation
    through = s2a[labels]
    pairs = np.unique(np.stack([through.ravel(), segmentation.ravel()], axis=1), axis=0)
    assert len(pairs) == len(np.unique(through)) == len(np.unique(segmentation))


def test_a_state_over_too_many_supervoxels_is_refused(run_dir, capsys):
    svs, _ = read_mapping(f"file://{run_dir}/segmentation", LEVELS, CTX)
    state = run_dir / "refused" / "state.json"
    hdf5 = run_dir / "refused" / "a.hdf5"
    limit = str(len(svs) - 1)
    with pytest.raises(InputError, match=rf"{len(svs)} supervoxels, more than --max-supervoxels"):
        proofreading(
            run_dir / "segmentation",
            "--neuroglancer-state",
            state,
            "--webknossos",
            hdf5,
            "--max-supervoxels",
            limit,
        )
    assert not state.exists() and not hdf5.exists()  # refused before writing anything
    # through main: exit status 2, the reason on stderr
    argv = ["proofreading", str(run_dir / "segmentation"), "--neuroglancer-state", str(state)]
    assert main([*argv, "--max-supervoxels", limit]) == 2
    assert "--max-supervoxels" in capsys.readouterr().err
    # the webKnossos file alone has no such limit; at the limit the state is written
    assert (
        proofreading(run_dir / "segmentation", "--webknossos", hdf5, "--max-supervoxels", limit)
        == 0
    )
    assert (
        proofreading(
            run_dir / "segmentation",
            "--neuroglancer-state",
            state,
            "--max-supervoxels",
            str(len(svs)),
        )
        == 0
    )
    assert hdf5.exists() and state.exists()


def test_inputs_without_an_agglomeration_are_refused(run_dir):
    with pytest.raises(InputError, match="nothing to write"):
        proofreading(run_dir / "segmentation")
    with pytest.raises(InputError, match="has no agglomeration"):
        proofreading(run_dir / "boundary", "--webknossos", run_dir / "x.hdf5")
    with pytest.raises(InputError, match="no precomputed layer"):
        proofreading(run_dir / "nothing", "--webknossos", run_dir / "x.hdf5")


def copy_of_segmentation(run_dir, name: str):
    """The segmentation's info and mapping table, copied: its record still names the run's
    supervoxels and graph."""
    copy = run_dir / name
    shutil.copytree(run_dir / "segmentation" / "mapping", copy / "mapping")
    shutil.copy(run_dir / "segmentation" / "info", copy / "info")
    return copy


def test_an_incomplete_or_stale_agglomeration_is_refused(run_dir):
    partial = copy_of_segmentation(run_dir, "partial")
    next(partial.glob("mapping/0/*.parquet")).unlink()  # a mapping part not (yet) written
    for option in ("--webknossos", "--neuroglancer-state"):
        with pytest.raises(InputError, match="incomplete or stale"):
            proofreading(partial, option, run_dir / "partial.out")
    stale = copy_of_segmentation(run_dir, "stale")
    info = json.loads((stale / "info").read_text())
    info["petavox_agglomeration"]["graph"] = "0123456789abcdef"  # made from an older graph
    (stale / "info").write_text(json.dumps(info))
    with pytest.raises(InputError, match=r"is not the one .* was merged from"):
        proofreading(stale, "--webknossos", run_dir / "stale.hdf5")
    # a bad --image is found before anything is written
    hdf5, state = run_dir / "bad_image.hdf5", run_dir / "bad_image.json"
    with pytest.raises(InputError, match="no precomputed layer"):
        proofreading(
            run_dir / "segmentation",
            "--webknossos",
            hdf5,
            "--neuroglancer-state",
            state,
            "--image",
            run_dir / "no_image",
        )
    assert not hdf5.exists() and not state.exists()
