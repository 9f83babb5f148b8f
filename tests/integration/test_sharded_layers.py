"""Sharded precomputed volumes through the pipeline: inputs written by cloud-volume, outputs
written by petavox, compared voxel for voxel with the same data unsharded (issue 17)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from test_pipeline_file import make_stack
from tree_compare import layer_files

from petavox.tasks.core.errors import InputError
from petavox.tasks.core.layers import Layer
from petavox.workflows.config import parse_config
from petavox.workflows.pipeline import run

pytestmark = pytest.mark.integration


def cloudvolume_layer(
    url: str,
    data: np.ndarray,
    chunk,
    sharding: dict | None,
    shard,
    layer_type: str = "image",
    encoding: str = "raw",
) -> None:
    """A layer written by cloud-volume (a sharded one a shard of `shard` voxels per upload)."""
    from cloudvolume import CloudVolume

    info = CloudVolume.create_new_info(
        num_channels=1,
        layer_type=layer_type,
        data_type=str(data.dtype),
        encoding=encoding,
        resolution=[8, 8, 40],
        voxel_offset=[0, 0, 0],
        chunk_size=list(chunk),
        volume_size=list(data.shape),
    )
    if sharding is not None:
        info["scales"][0]["sharding"] = sharding
    cv = CloudVolume(url, info=info, progress=False)
    cv.commit_info()
    for start in itertools.product(*(range(0, n, s) for n, s in zip(data.shape, shard))):
        box = tuple(slice(a, min(a + s, n)) for a, s, n in zip(start, shard, data.shape))
        cv[box] = data[box][..., np.newaxis]


SIX_SHARDS = {  # shards of 64 × 64 × 24 (2 × 2 chunks) over 160 × 128 × 24: 3 × 2 of them
    "@type": "neuroglancer_uint64_sharded_v1",
    "hash": "identity",
    "preshift_bits": 2,
    "minishard_bits": 0,
    "shard_bits": 3,
    "minishard_index_encoding": "gzip",
    "data_encoding": "gzip",
}


def test_downsample_of_a_sharded_layer_keeps_every_voxel(tmp_path, ray_session):
    """The loss found in issue 17: a cloud-volume sharded layer, `downsample --mips 1
    --chunk-shape 64,64,24`, wrote 2 shard files of mip 1 and 70 % of it read as zeros."""
    data = np.random.default_rng(7).integers(0, 255, (160, 128, 24), dtype=np.uint8)
    for name, sharding in (("sharded", SIX_SHARDS), ("plain", None)):
        cloudvolume_layer(
            f"file://{tmp_path}/{name}", data, (32, 32, 24), sharding, shard=(64, 64, 24)
        )
    stages = [
        {"stage": "downsample", "input": name, "mips": 1, "chunk_shape": [64, 64, 24]}
        for name in ("sharded", "plain")
    ]
    # and into a new layer: a copy of a sharded layer is sharded, mip 0 as its pyramid
    stages.append({"stage": "downsample", "input": "sharded", "output": "copy", "mips": 1})
    run(parse_config({"output": f"file://{tmp_path}", "stages": stages}), session=ray_session)
    from cloudvolume import CloudVolume

    sharded = CloudVolume(f"file://{tmp_path}/sharded", mip=1, fill_missing=False)
    plain = Layer.open(f"file://{tmp_path}/plain")
    reference = plain.read(plain.bounds(1), mip=1)
    assert reference.any()
    np.testing.assert_array_equal(np.asarray(sharded[:, :, :])[..., 0], reference)
    for name in ("sharded", "copy"):
        ours = Layer.open(f"file://{tmp_path}/{name}")
        assert ours.sharding(0) is not None and ours.sharding(1) is not None
        np.testing.assert_array_equal(ours.read(ours.bounds(0)), data)
        np.testing.assert_array_equal(ours.read(ours.bounds(1), mip=1), reference)


def pyramid_config(tmp_path, stack, name: str, **ingest):
    return {
        "output": f"file://{tmp_path}/{name}",
        "stages": [
            {
                "stage": "ingest",
                "input": str(stack),
                "resolution": [4, 4, 40],
                "storage_chunk": [32, 32, 8],
                **ingest,
            },
            {"stage": "downsample", "input": "raw", "mips": 2, "factor": [2, 2, 1]},
        ],
    }


def test_a_sharded_pyramid_equals_the_unsharded_one_and_resumes(tmp_path, ray_session):
    stack = tmp_path / "stack.npy"
    data = make_stack(stack)  # 130 × 150 × 24
    plain = parse_config(pyramid_config(tmp_path, stack, "plain"))
    sharded = parse_config(
        pyramid_config(tmp_path, stack, "sharded", sharding=4, chunk_shape=[64, 64, 8])
    )
    run(plain, session=ray_session, progress=False)
    reports = run(sharded, session=ray_session, progress=False)
    ingest = Layer.open(f"file://{tmp_path}/sharded/raw")
    assert tuple(ingest.write_unit(0)) == (64, 64, 8)  # 4 chunks: x and y get a bit each
    assert reports[0].total == len(ingest.sharding(0).shard_boxes(ingest.bounds(0)))
    reference = Layer.open(f"file://{tmp_path}/plain/raw")
    np.testing.assert_array_equal(ingest.read(ingest.bounds(0)), data)
    for mip in (1, 2):
        assert ingest.sharding(mip) is not None
        np.testing.assert_array_equal(
            ingest.read(ingest.bounds(mip), mip=mip), reference.read(reference.bounds(mip), mip=mip)
        )
    plain_files = sum(1 for p in (tmp_path / "plain" / "raw").rglob("*-*_*") if p.is_file())
    shard_files = sorted((tmp_path / "sharded" / "raw").rglob("*.shard"))
    assert len(shard_files) < plain_files / 2
    clean = layer_files(tmp_path / "sharded" / "raw")
    shard_files[0].unlink()  # a lost shard: its task runs again, and only it
    again = run(sharded, session=ray_session, progress=False)
    assert sum(r.ran for r in again) == 1
    assert layer_files(tmp_path / "sharded" / "raw") == clean


def test_tasks_that_would_write_part_of_a_shard_are_refused_before_any_write(tmp_path):
    stack = tmp_path / "stack.npy"
    make_stack(stack)
    config = parse_config(
        pyramid_config(tmp_path, stack, "out", sharding=4, chunk_shape=[32, 32, 8])
    )
    shard = r"the shard shape of file://\S+/out/raw scale 4_4_40 \(64, 64, 8\)"
    with pytest.raises(InputError, match=rf"multiple of {shard} so that each task writes whole"):
        run(config, progress=False)
    assert not (tmp_path / "out").exists()


VOLUMES = ("raw", "raw_labels", "raw_clefts", "aligned", "ground_truth", "boundary", "clefts")


def test_the_demo_with_every_volume_sharded_gives_the_same_voxels(tmp_path, ray_session):
    """Every stage writing sharded layers (tasks of whole shards, shards read back by the
    stages after) changes no voxel of any layer or mip, segment ids included."""
    from petavox.tasks.synthetic.misalignment import random_misalignment
    from petavox.workflows.demo import MAX_SHIFT, WARP, demo_config, demo_volume, write_stacks

    volume = demo_volume(96, seed=0)
    known = random_misalignment(volume.raw.shape[2], MAX_SHIFT, WARP, seed=0)
    stacks = write_stacks(volume, known, tmp_path)
    runtime = {"ray": {"workers": 2}}
    for name, sharding in (("plain", "none"), ("sharded", 4)):
        config = demo_config(f"file://{tmp_path}/{name}", stacks, runtime, sharding)
        run(config, session=ray_session, progress=False)
    for layer_name in (*VOLUMES, "segmentation"):
        plain = Layer.open(f"file://{tmp_path}/plain/{layer_name}")
        sharded = Layer.open(f"file://{tmp_path}/sharded/{layer_name}")
        assert plain.num_mips == sharded.num_mips
        for mip in range(sharded.num_mips):
            assert sharded.sharding(mip) is not None, f"{layer_name} mip {mip} is not sharded"
            np.testing.assert_array_equal(
                sharded.read(sharded.bounds(mip), mip=mip),
                plain.read(plain.bounds(mip), mip=mip),
                err_msg=f"{layer_name} mip {mip}",
            )
            folder = tmp_path / "sharded" / layer_name / sharded.scale(mip)["key"]
            assert all(p.suffix == ".shard" for p in folder.iterdir())
    # what reads the segmentation (meshes, skeletons, synapses) is the same too
    for folder in ("segmentation/mesh", "segmentation/skeletons", "synapses/table"):
        sharded_files = layer_files(tmp_path / "sharded" / folder)
        assert sharded_files and sharded_files == layer_files(tmp_path / "plain" / folder)


SPECS = {  # two more shard layouts over a 4 × 4 × 2 chunk grid (5 bits of Morton code)
    "four-chunks": {**SIX_SHARDS, "preshift_bits": 2, "minishard_bits": 0, "shard_bits": 3},
    "eight-chunks-four-minishards-raw": {
        **SIX_SHARDS,
        "preshift_bits": 1,
        "minishard_bits": 2,
        "shard_bits": 2,
        "data_encoding": "raw",
    },
}


def without_graph_identity(*files: dict[str, bytes]) -> list[dict]:
    """Each layer's info with its agglomeration record's graph identity left out."""
    infos = [json.loads(f["info"]) for f in files]
    for info in infos:
        assert info["petavox_agglomeration"].pop("graph")
    return infos


def test_sharded_inputs_through_infer_segment_and_mesh_equal_unsharded(tmp_path, ray_session):
    """Inputs written by cloud-volume in several shard layouts: the stages that read them write
    what they write from the same data unsharded."""
    from cloudvolume.datasource.precomputed.sharding import image_shard_shape_from_spec

    from petavox.tasks.synthetic.generator import SyntheticParams, generate

    volume = generate(SyntheticParams(shape=(128, 128, 32), seed=3))
    chunk = (32, 32, 16)
    labels = volume.labels.astype(np.uint64)
    for name, spec in [("plain", None), *SPECS.items()]:
        shard = image_shard_shape_from_spec(spec, (128, 128, 32), chunk) if spec else chunk
        root = tmp_path / name
        cloudvolume_layer(f"file://{root}/raw", volume.raw, chunk, spec, shard)
        cloudvolume_layer(
            f"file://{root}/labels",
            labels,
            chunk,
            spec,
            shard,
            "segmentation",
            "compressed_segmentation",
        )
        stages = [
            {"stage": "infer", "input": "raw", "output": "boundary", "model": "classical"},
            {"stage": "segment", "input": "boundary", "output": "seg", "chunk_shape": [64, 64, 32]},
            {"stage": "mesh", "input": "labels", "chunk_shape": [64, 64, 32]},
        ]
        config = parse_config({"output": f"file://{root}", "stages": stages})
        run(config, session=ray_session, progress=False)
    plain = tmp_path / "plain"
    for name in SPECS:
        root = tmp_path / name
        assert all(p.suffix == ".shard" for p in (root / "raw" / "8_8_40").iterdir())
        for layer in ("boundary", "seg"):
            ours, theirs = layer_files(root / layer), layer_files(plain / layer)
            if layer == "seg":  # the graph's identity hashes the run's URLs; the rest is equal
                ours["info"], theirs["info"] = without_graph_identity(ours, theirs)
            assert ours == theirs, f"{name}: {layer}"
        assert layer_files(root / "labels" / "mesh") == layer_files(plain / "labels" / "mesh")


def test_a_layer_sharded_by_hash_is_read_but_never_written(tmp_path, ray_session):
    """Shards of hashed chunk keys are not boxes: petavox reads them, and refuses before any
    write to write into one (even with overwrite)."""
    data = np.random.default_rng(4).integers(0, 255, (128, 128, 32), dtype=np.uint8)
    hashed = {**SIX_SHARDS, "hash": "murmurhash3_x86_128", "preshift_bits": 0, "shard_bits": 0}
    hashed["minishard_bits"] = 2  # one shard file (cloud-volume writes hashed shards whole)
    from petavox.tasks.core.volume_shards import VolumeSharding

    layer_url = f"file://{tmp_path}/raw"
    cloudvolume_layer(layer_url, data, (32, 32, 16), hashed, shard=(128, 128, 32))
    layer = Layer.open(layer_url)
    assert "hashed" in VolumeSharding.of_scale(layer.scale(0)).problem()
    np.testing.assert_array_equal(layer.read(layer.bounds()), data)
    stack = tmp_path / "stack.npy"
    np.save(stack, data.transpose(2, 1, 0))
    ingest = {
        "stage": "ingest",
        "input": str(stack),
        "resolution": [8, 8, 40],
        "storage_chunk": [32, 32, 16],
    }
    config = parse_config({"output": f"file://{tmp_path}", "overwrite": True, "stages": [ingest]})
    before = layer_files(tmp_path / "raw")
    with pytest.raises(InputError, match=r"raw scale 8_8_40 is sharded in a way petavox cannot"):
        run(config, session=ray_session, progress=False)
    assert layer_files(tmp_path / "raw") == before


def test_default_tasks_over_a_sharded_input_are_whole_shards(tmp_path):
    """Readers (mesh, skeletonize, synapses) sized by default read each shard file whole; a
    task shape given is only held to whole storage chunks."""
    from petavox.workflows.sizing import layer_grid

    data = np.zeros((160, 128, 24), np.uint8)
    cloudvolume_layer(f"file://{tmp_path}/img", data, (32, 32, 24), SIX_SHARDS, (64, 64, 24))
    layer = Layer.open(f"file://{tmp_path}/img")
    smallest = 2**40  # bytes per voxel: the smallest task there can be
    assert tuple(layer_grid(layer, None, smallest, name="t").chunk_shape) == (64, 64, 24)
    given = layer_grid(layer, (32, 32, 24), smallest, name="t")
    assert tuple(given.chunk_shape) == (32, 32, 24)
