"""`mesh` on a real local Ray and file:// layers, read back by cloud-volume: every segment gets
a watertight mesh across chunk faces (closed on the volume's faces too), in the legacy and the
sharded multi-resolution format; bad input is refused."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import zmesh

from petavox.tasks.core.errors import InputError, LayerMismatchError
from petavox.tasks.mesh.surfaces import open_edges
from petavox.tasks.synthetic.generator import SyntheticParams, generate
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import plan_run, run

pytestmark = pytest.mark.integration

SHAPE = (100, 90, 50)  # not a multiple of the 32-voxel tasks: partial chunks on every axis
RESOLUTION = (8, 8, 16)
BIG = 2**40  # ids past 32 bits, so the manifest prefixes and uint64 paths are exercised


def labelled_volume(seed: int) -> np.ndarray:
    """Synthetic neurites (most touch the boundary) plus ellipsoids well inside, spanning task
    faces, with ids past 32 bits."""
    labels = generate(SyntheticParams(shape=SHAPE, seed=seed, neurite_spacing=18)).labels
    labels = labels.astype(np.uint64)
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij"), axis=-1)
    for k in range(6):
        centre = rng.uniform((20, 20, 12), (80, 70, 38))
        semi = rng.uniform((6, 6, 4), (12, 12, 8))
        inside = (((grid - centre) / semi) ** 2).sum(-1) <= 1
        labels[inside] = BIG + k
    return labels


def mesh_config(out, labels: np.ndarray, **mesh):
    source, stored = out / "labels.npy", labels.transpose(2, 1, 0)
    if not source.exists() or not np.array_equal(np.load(source), stored):
        np.save(source, stored)  # a rewritten source is a new input (its mtime changes)
    stages = [
        {
            "stage": "ingest",
            "input": str(out / "labels.npy"),
            "output": "seg",
            "layer_type": "segmentation",
            "resolution": list(RESOLUTION),
            "storage_chunk": [32, 32, 16],
        },
        {"stage": "mesh", "input": "seg", **mesh},
    ]
    return parse_config({"output": f"file://{out}", "stages": stages})


def enclosed_volume(mesh: zmesh.Mesh) -> float:
    """Signed volume of a closed triangle mesh (divergence theorem)."""
    v = np.asarray(mesh.vertices, np.float64)[np.asarray(mesh.faces)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6)


def touches_boundary(labels: np.ndarray, label: int) -> bool:
    faces = [labels[0], labels[-1], labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]]
    return any((face == label).any() for face in faces)


def test_every_segment_gets_a_watertight_mesh(tmp_path, ray_session):
    from cloudvolume import CloudVolume

    labels = labelled_volume(seed=12)
    run(
        mesh_config(tmp_path, labels, chunk_shape=[32, 32, 16]), session=ray_session, progress=False
    )
    cv = CloudVolume(f"file://{tmp_path}/seg")
    assert cv.info["mesh"] == "mesh"
    ids = [int(i) for i in np.unique(labels) if i != 0]
    inner = [i for i in ids if not touches_boundary(labels, i)]
    assert len(inner) >= 6 and len(ids) > len(inner)  # both kinds
    voxel = float(np.prod(RESOLUTION))
    for label in ids:
        found = cv.mesh.get(label)
        assert len(found.faces) > 0, f"segment {label} has no mesh"
        where = np.argwhere(labels == label)
        lo, hi = where.min(axis=0) * RESOLUTION, (where.max(axis=0) + 1) * RESOLUTION
        slack = 40.0 + 1e-3  # simplification moves vertices up to max_error (40 nm)
        assert (found.vertices.min(axis=0) >= lo - slack).all()
        assert (found.vertices.max(axis=0) <= hi + slack).all()
        whole = zmesh.Mesh(found.vertices, found.faces, None).merge_close_vertices(1e-3)
        whole = whole.consolidate()
        assert len(open_edges(whole)) == 0, f"segment {label}'s mesh has holes"
        # a closed surface on the voxels' faces (corners cut) encloses about the voxels
        assert abs(enclosed_volume(whole)) == pytest.approx(len(where) * voxel, rel=0.1)
    # segments cut by task faces: one fragment per task touched
    fragments = {
        i: json.loads((tmp_path / "seg" / "mesh" / f"{i}:0").read_text())["fragments"]
        for i in inner
    }
    assert max(len(f) for f in fragments.values()) >= 4


def test_sharded_meshes_have_levels_of_detail_in_several_shards(tmp_path, ray_session):
    from cloudvolume import CloudVolume

    labels = labelled_volume(seed=12)
    config = mesh_config(
        tmp_path, labels, chunk_shape=[32, 32, 16], format="sharded", shard_bits=2, lods=3
    )
    run(config, session=ray_session, progress=False)
    cv = CloudVolume(f"file://{tmp_path}/seg")
    assert cv.mesh.meta.info["@type"] == "neuroglancer_multilod_draco"
    assert cv.mesh.meta.info["transform"] == [8, 0, 0, 0, 0, 8, 0, 0, 0, 0, 16, 0]
    shards = sorted(p.name for p in (tmp_path / "seg" / "mesh").glob("*.shard"))
    assert len(shards) >= 3, shards  # 4 shards; ids hash into at least 3 of them
    assert not list((tmp_path / "seg" / "mesh").glob("*:0"))  # no legacy files
    assert list((tmp_path / "intermediate" / "mesh").glob("*/*/*_*_*"))  # (shard, chunk) files
    ids = [int(i) for i in np.unique(labels) if i != 0]
    voxel = float(np.prod(RESOLUTION))
    lod_counts = []
    for label in ids:
        manifest = cv.mesh.get_manifest(label)
        assert manifest is not None, f"segment {label} has no mesh"
        finest = cv.mesh.get(label, lod=0)[label]  # cloud-volume returns one LOD: {id: Mesh}
        where = np.argwhere(labels == label)
        lo, hi = where.min(axis=0) * RESOLUTION, (where.max(axis=0) + 1) * RESOLUTION
        slack = 40.0 + 1e-3  # simplification moves vertices up to max_error (40 nm)
        assert (finest.vertices.min(axis=0) >= lo - slack).all()
        assert (finest.vertices.max(axis=0) <= hi + slack).all()
        whole = zmesh.Mesh(finest.vertices, finest.faces, None).merge_close_vertices(1e-3)
        whole = whole.consolidate()
        assert len(open_edges(whole)) == 0, f"segment {label}'s finest LOD has holes"
        assert abs(enclosed_volume(whole)) == pytest.approx(len(where) * voxel, rel=0.1)
        counts = [len(cv.mesh.get(label, lod=k)[label].faces) for k in range(manifest.num_lods)]
        assert all(a > b for a, b in itertools.pairwise(counts)), (label, counts)
        lod_counts.append(counts)
        # LOD 0 octree nodes are the 32×32×16 tasks (plus the volume's low faces)
        assert list(manifest.chunk_shape) == [32, 32, 16]
    assert sum(len(c) == 3 for c in lod_counts) >= len(ids) - 2  # all but the tiniest: 3 LODs
    assert max(len(cv.mesh.get_manifest(i).fragment_positions[0]) for i in ids) >= 8


def test_mesh_format_options_and_identities(tmp_path):
    labels = np.zeros((40, 40, 20), np.uint64)
    legacy = mesh_config(tmp_path, labels, lods=2)
    with pytest.raises(InputError, match="lods is not an option of format: legacy"):
        plan_run(legacy)
    sharded = mesh_config(tmp_path, labels, format="sharded", manifest_digits=3)
    with pytest.raises(InputError, match="manifest_digits is not an option of format: sharded"):
        plan_run(sharded)
    # the sharded options stay out of a legacy run's identity
    forge, _ = plan_run(mesh_config(tmp_path, labels))[1:]
    assert not {"format", "lods", "shard_bits"} & set(forge.spec)
    # levels of detail are the merge's business: the forge's pieces are reused
    three, two = (
        plan_run(mesh_config(tmp_path, labels, format="sharded", lods=n))[1:] for n in (3, 2)
    )
    assert three[0].identity == two[0].identity and three[1].identity != two[1].identity
    assert three[0].identity != forge.identity


def test_mesh_refuses_an_image_layer_before_any_work(tmp_path):
    np.save(tmp_path / "raw.npy", np.zeros((16, 32, 32), np.uint8))
    stages = [
        {
            "stage": "ingest",
            "input": str(tmp_path / "raw.npy"),
            "output": "raw",
            "resolution": [8, 8, 8],
        },
        {"stage": "mesh", "input": "raw"},
    ]
    with pytest.raises(LayerMismatchError, match="not a one-channel segmentation layer"):
        plan_run(parse_config({"output": f"file://{tmp_path}", "stages": stages}))
    assert not (tmp_path / "raw").exists()
